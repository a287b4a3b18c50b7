package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/callwake/callwake/internal/workers"
	"github.com/emiago/sipgo/sip"
)

// InboundCall is the PBX's INVITE before it is answered: callwake is the UAS.
// One goroutine (the call's owner) drives it; Done is safe from any.
type InboundCall struct {
	svc   *Service
	req   *sip.Request
	tx    *sip.ServerTx
	toTag string
	ext   string

	done      chan struct{} // closed on CANCEL or when the transaction ends unanswered
	doneOnce  sync.Once
	cancelled bool // CANCEL received (set before done is closed)
	mu        sync.Mutex
	answered  bool
	onDone    func()
}

// onInvite reports whether the INVITE became a call, whose owner then
// releases the transaction.
func (s *Service) onInvite(req *sip.Request, tx *sip.ServerTx) bool {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		s.inDialog(req, tx) // re-INVITE
		return false
	}
	// Every response to this INVITE carries one To tag (RFC 3261 8.2.6.2),
	// including the 487 the transaction layer builds on CANCEL from the
	// request itself: so the tag goes on the request, before any response
	// (whose sending orders this write before the transaction's reads).
	toTag := sip.GenerateTagN(16)
	if to := req.To(); to != nil {
		to.Params.Add("tag", toTag)
	}
	// 100 Trying at once: the PBX must stop retransmitting now, not after
	// the transaction layer's 200 ms timer.
	s.respond(tx, req, sip.StatusTrying, "Trying")

	if s.cfg.Draining != nil && s.cfg.Draining() {
		s.respond(tx, req, sip.StatusServiceUnavailable, "Service Unavailable (shutting down)", retryAfter(30))
		return false
	}
	if !s.trustedSource(req, tx) {
		return false
	}
	if req.Contact() == nil || req.CSeq() == nil || req.From() == nil || req.To() == nil {
		s.respond(tx, req, sip.StatusBadRequest, "Bad Request (missing Contact, CSeq, From or To)")
		return false
	}
	call := &InboundCall{svc: s, req: req, tx: tx, toTag: toTag, ext: extensionOf(req),
		done: make(chan struct{})}
	tx.OnCancel(func(*sip.Request) {
		call.cancelled = true
		call.finish()
	})
	tx.OnTerminate(func(string, error) { call.finish() })
	if s.cfg.Calls == nil {
		call.Reject(sip.StatusServiceUnavailable, "Service Unavailable")
		return false
	}
	s.cfg.Calls.OnInvite(call)
	return true
}

// trustedSource applies trunk mode's access rule and answers when it fails.
func (s *Service) trustedSource(req *sip.Request, tx sip.ServerTransaction) bool {
	if addrPort, err := netip.ParseAddrPort(req.Source()); err == nil {
		ip := addrPort.Addr().Unmap()
		for _, p := range s.cfg.Trusted {
			if p.Contains(ip) {
				return true
			}
		}
		if hosts := s.trustedHosts.Load(); hosts != nil {
			if _, ok := (*hosts)[ip]; ok {
				return true
			}
		}
	}
	if s.trunk == nil {
		s.log.Info("INVITE from an untrusted source refused", "source", req.Source(), "call_id", callID(req))
		s.respond(tx, req, sip.StatusForbidden, "Forbidden (source not in pbx.trusted)")
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	result, err := s.trunk.Verify(ctx, req, s.cfg.TrunkUsername)
	if err != nil || result != AuthOK {
		if err := tx.Respond(s.trunk.Response(req, result)); err != nil {
			s.log.Debug("challenge failed", "err", err)
		}
		return false
	}
	return true
}

// extensionOf is the user part of the Request-URI, else the To user.
func extensionOf(req *sip.Request) string {
	if req.Recipient.User != "" {
		return req.Recipient.User
	}
	if to := req.To(); to != nil {
		return to.Address.User
	}
	return ""
}

func callID(req *sip.Request) string {
	if id := req.CallID(); id != nil {
		return id.Value()
	}
	return ""
}

func (c *InboundCall) finish() {
	c.doneOnce.Do(func() {
		close(c.done)
		c.mu.Lock()
		f := c.onDone
		c.mu.Unlock()
		if f != nil {
			f()
		}
	})
}

// OnDone calls f once Done is closed (at once if it is): on the goroutine
// of the CANCEL or of the transaction's end, so f must not block.
func (c *InboundCall) OnDone(f func()) {
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		f()
		return
	default:
	}
	c.onDone = f
	c.mu.Unlock()
}

// Release hands the transaction back once the call's owner is done with
// it: one still without a final answer is terminated, one answered stays
// for its retransmission timers.
//
// An answered transaction stays for RFC 6026's 32 s, and its callbacks
// hold this InboundCall: Release lets go of OnDone's function, so that
// the caller's call state does not stay with it.
func (c *InboundCall) Release() {
	c.mu.Lock()
	c.onDone = nil
	c.mu.Unlock()
	c.tx.TerminateGracefully()
}

// Extension is the called extension.
func (c *InboundCall) Extension() string { return c.ext }

// Request is the PBX's INVITE. Do not modify it.
func (c *InboundCall) Request() *sip.Request { return c.req }

// CallID is the PBX's Call-ID.
func (c *InboundCall) CallID() string { return callID(c.req) }

// Source is the address the INVITE came from.
func (c *InboundCall) Source() string { return c.req.Source() }

// Done is closed when the PBX cancelled the call or its transaction ended
// before an answer.
func (c *InboundCall) Done() <-chan struct{} { return c.done }

// Cancelled reports whether the PBX sent CANCEL (valid once Done is closed).
func (c *InboundCall) Cancelled() bool {
	select {
	case <-c.done:
		return c.cancelled
	default:
		return false
	}
}

// Caller is who calls: P-Asserted-Identity, else From.
func (c *InboundCall) Caller() (name, number string) {
	if h := c.req.GetHeader("P-Asserted-Identity"); h != nil {
		var uri sip.Uri
		if display, err := sip.ParseAddressValue(h.Value(), &uri, nil); err == nil {
			return display, uriNumber(uri)
		}
	}
	if from := c.req.From(); from != nil {
		return from.DisplayName, uriNumber(from.Address)
	}
	return "", ""
}

func uriNumber(u sip.Uri) string {
	if u.User != "" {
		return u.User
	}
	return u.Host
}

func (c *InboundCall) response(code int, reason string, body []byte, headers []sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(c.req, code, reason, body)
	if to := res.To(); to != nil {
		to.Params.Add("tag", c.toTag)
	}
	for _, h := range headers {
		res.AppendHeader(h)
	}
	if body != nil && res.ContentType() == nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	return res
}

// Provisional sends a 1xx (180 Ringing; 183 with early-media SDP).
func (c *InboundCall) Provisional(code int, reason string, body []byte, headers ...sip.Header) error {
	if code < 101 || code > 199 {
		return fmt.Errorf("%d is not a provisional status", code)
	}
	res := c.response(code, reason, body, headers)
	if code != sip.StatusTrying {
		contact := sip.ContactHeader{Address: c.svc.Contact(c.req.Transport())}
		res.AppendHeader(&contact)
	}
	// The transaction keeps its last response for as long as the call
	// rings: it shares the request's From, To (tagged in onInvite), Call-ID
	// and CSeq rather than keep clones of them, 0.6 KiB a call. Neither
	// message is modified once sent.
	for _, h := range []sip.Header{c.req.From(), c.req.To(), c.req.CallID(), c.req.CSeq()} {
		res.ReplaceHeader(h)
	}
	return c.tx.Respond(res)
}

// Reject sends a final non-2xx answer. Extra headers (Retry-After, Reason)
// may be passed.
func (c *InboundCall) Reject(code int, reason string, headers ...sip.Header) error {
	if code < 300 {
		return fmt.Errorf("%d is not a failure status", code)
	}
	c.mu.Lock()
	if c.answered {
		c.mu.Unlock()
		return errors.New("call already answered")
	}
	c.answered = true
	c.mu.Unlock()
	return c.tx.Respond(c.response(code, reason, nil, headers))
}

// Answer answers the PBX with the phone's 2xx (its SDP) and returns the
// established dialog with the PBX. The 200 is retransmitted until the PBX's
// ACK, as RFC 6026 leaves to the transaction user. When the PBX's INVITE
// had no offer, the phone's 2xx carried it and the PBX's ACK carries the
// answer: that ACK is passed on to the phone, whose dialog waits for it.
func (c *InboundCall) Answer(phone *Dialog, ok *sip.Response) (*Dialog, error) {
	c.mu.Lock()
	if c.answered {
		c.mu.Unlock()
		return nil, errors.New("call already answered")
	}
	c.answered = true
	c.mu.Unlock()

	var headers []sip.Header
	if ct := ok.GetHeader("Content-Type"); ct != nil {
		headers = append(headers, sip.NewHeader("Content-Type", ct.Value()))
	}
	res := c.response(sip.StatusOK, "OK", ok.Body(), headers)
	contact := sip.ContactHeader{Address: c.svc.Contact(c.req.Transport())}
	res.AppendHeader(&contact)
	res.AppendHeader(sip.NewHeader("Allow", allowedMethods))

	d := newUASDialog(c.svc, c.req, res)
	seq := c.req.CSeq().SeqNo
	if phone.ackPending != 0 {
		d.pending.Store(&pendingAck{seq: seq, peer: phone, peerSeq: phone.ackPending})
	}
	acked := d.expectAck(seq)
	c.svc.addDialog(d)
	if err := c.tx.Respond(res); err != nil {
		c.svc.removeDialog(d)
		return nil, fmt.Errorf("sending 200 OK: %w", err)
	}
	workers.Go(func() { d.retransmitUntilAck(c.tx, res, acked) })
	return d, nil
}

// retryAfter formats a Retry-After header.
func retryAfter(seconds int) sip.Header { return sip.NewHeader("Retry-After", strconv.Itoa(seconds)) }

var reasonPhrases = map[int]string{
	400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 410: "Gone",
	480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 486: "Busy Here",
	487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
	503: "Service Unavailable", 504: "Server Time-out", 600: "Busy Everywhere", 603: "Decline",
	604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

// ReasonPhrase is RFC 3261's reason phrase for a status code.
func ReasonPhrase(code int) string {
	if p, ok := reasonPhrases[code]; ok {
		return p
	}
	return "Error"
}
