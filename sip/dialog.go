package sip

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// DialogHandler receives the requests the peer sends inside a dialog, other
// than ACK and CANCEL. It must answer each on tx.
type DialogHandler interface {
	OnDialogRequest(d *Dialog, req *sip.Request, tx sip.ServerTransaction)
}

// Dialog is an established dialog, either with the PBX (callwake is UAS) or
// with a phone (callwake is UAC). Requests it sends follow RFC 3261 12.2.1.
type Dialog struct {
	svc          *Service
	callID       string
	local        sip.FromHeader // our side, with our tag
	remote       sip.ToHeader   // their side, with their tag
	remoteTarget sip.Uri
	routeSet     []sip.Uri
	destination  string // where to send when there is no route set (NAT: where they sent from)
	transport    string
	localCSeq    atomic.Uint32

	handlerMu sync.Mutex
	handler   DialogHandler
	ready     chan struct{} // closed once a handler is set

	ackMu   sync.Mutex
	ackWait map[uint32]chan struct{} // CSeq of the peer's INVITE -> closed on its ACK; made on first use
	ended   chan struct{}
	endOnce sync.Once
	lastAck atomic.Pointer[sip.Request] // our last ACK (UAC side), resent on a 2xx retransmission
	// ackPending is the CSeq of our initial INVITE whose 2xx is not yet
	// acknowledged: a late offer, answered by the ACK the PBX sends.
	ackPending uint32
	pending    atomic.Pointer[pendingAck] // a relayed re-INVITE waiting for the peer's ACK body
}

// pendingAck is a delayed-offer re-INVITE: the peer's ACK for CSeq seq
// carries the answer that peerSeq's ACK on the other dialog must carry.
type pendingAck struct {
	seq     uint32
	peer    *Dialog
	peerSeq uint32
}

func (d *Dialog) key() string { return dialogKey(d.callID, tagOf(d.local.Params)) }

func dialogKey(callID, localTag string) string { return callID + "|" + localTag }

func tagOf(p sip.HeaderParams) string {
	tag, _ := p.Get("tag")
	return tag
}

func newDialog(svc *Service) *Dialog {
	return &Dialog{svc: svc, ready: make(chan struct{}), ended: make(chan struct{})}
}

// newUASDialog is the dialog the PBX's INVITE and our 200 OK create.
func newUASDialog(svc *Service, invite *sip.Request, ok *sip.Response) *Dialog {
	d := newDialog(svc)
	d.callID = callID(invite)
	to := ok.To()
	d.local = sip.FromHeader{DisplayName: to.DisplayName, Address: *to.Address.Clone(), Params: to.Params.Clone()}
	from := invite.From()
	d.remote = sip.ToHeader{DisplayName: from.DisplayName, Address: *from.Address.Clone(), Params: from.Params.Clone()}
	d.remoteTarget = *invite.Contact().Address.Clone()
	for _, rr := range invite.GetHeaders("Record-Route") {
		d.routeSet = append(d.routeSet, routeURIs(rr)...)
	}
	d.destination = invite.Source()
	d.transport = invite.Transport()
	d.localCSeq.Store(uint32(rand.IntN(10000)) + 1)
	return d
}

// newUACDialog is the dialog our INVITE and the phone's 2xx create.
func newUACDialog(svc *Service, invite *sip.Request, ok *sip.Response, destination string) *Dialog {
	d := newDialog(svc)
	d.callID = callID(invite)
	from := invite.From()
	d.local = sip.FromHeader{DisplayName: from.DisplayName, Address: *from.Address.Clone(), Params: from.Params.Clone()}
	to := ok.To()
	d.remote = sip.ToHeader{DisplayName: to.DisplayName, Address: *to.Address.Clone(), Params: to.Params.Clone()}
	if c := ok.Contact(); c != nil {
		d.remoteTarget = *c.Address.Clone()
	} else {
		d.remoteTarget = *invite.Recipient.Clone()
	}
	rrs := ok.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		uris := routeURIs(rrs[i])
		for j := len(uris) - 1; j >= 0; j-- {
			d.routeSet = append(d.routeSet, uris[j])
		}
	}
	d.destination = destination
	d.transport = invite.Transport()
	d.localCSeq.Store(invite.CSeq().SeqNo)
	return d
}

// routeURIs parses a Record-Route header (the parser gives one per URI).
func routeURIs(h sip.Header) []sip.Uri {
	var out []sip.Uri
	if rr, ok := h.(*sip.RecordRouteHeader); ok {
		return append(out, *rr.Address.Clone())
	}
	var u sip.Uri
	if _, err := sip.ParseAddressValue(h.Value(), &u, nil); err == nil {
		out = append(out, u)
	}
	return out
}

// CallID is the dialog's Call-ID.
func (d *Dialog) CallID() string { return d.callID }

// SetHandler sets who gets the peer's requests; requests that arrive before
// wait for it briefly.
func (d *Dialog) SetHandler(h DialogHandler) {
	d.handlerMu.Lock()
	defer d.handlerMu.Unlock()
	if d.handler == nil {
		d.handler = h
		close(d.ready)
	}
}

// Close ends the dialog locally, without a BYE.
func (d *Dialog) Close() {
	d.endOnce.Do(func() {
		close(d.ended)
		d.svc.removeDialog(d)
	})
}

// NewRequest builds a request inside the dialog with the next CSeq.
func (d *Dialog) NewRequest(method sip.RequestMethod, body []byte, headers ...sip.Header) *sip.Request {
	seq := d.localCSeq.Add(1)
	return d.request(method, seq, body, headers...)
}

func (d *Dialog) request(method sip.RequestMethod, seq uint32, body []byte, headers ...sip.Header) *sip.Request {
	req := sip.NewRequest(method, *d.remoteTarget.Clone())
	for _, r := range d.routeSet {
		req.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	// Headers are allocated and filled in place: a From or To built as a
	// value is copied to the heap through a stack temporary.
	from := &sip.FromHeader{DisplayName: d.local.DisplayName, Params: d.local.Params.Clone()}
	from.Address = *d.local.Address.Clone()
	to := &sip.ToHeader{DisplayName: d.remote.DisplayName, Params: d.remote.Params.Clone()}
	to.Address = *d.remote.Address.Clone()
	cid := sip.CallIDHeader(d.callID)
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.AppendHeader(&maxFwd)
	if method != sip.ACK && method != sip.BYE {
		req.AppendHeader(&sip.ContactHeader{Address: d.svc.Contact(d.transport)})
	}
	for _, h := range headers {
		req.AppendHeader(h)
	}
	req.SetBody(body)
	req.SetTransport(d.transport)
	if len(d.routeSet) == 0 && d.destination != "" {
		req.SetDestination(d.destination)
	}
	return req
}

// Do sends a request inside the dialog and returns the final response. A
// 2xx to an INVITE is acknowledged at once unless holdAck is true, when the
// caller sends the ACK (delayed offer: the ACK carries the answer).
func (d *Dialog) Do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := d.svc.client.TransactionRequest(ctx, req, sipgo.ClientRequestAddVia)
	if err != nil {
		return nil, fmt.Errorf("sending %s: %w", req.Method, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, fmt.Errorf("%s: %w", req.Method, err)
			}
			return nil, fmt.Errorf("%s: transaction ended without a response", req.Method)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ack sends the ACK for our INVITE with CSeq seq (body for a delayed offer).
func (d *Dialog) Ack(seq uint32, body []byte, headers ...sip.Header) error {
	ack := d.request(sip.ACK, seq, body, headers...)
	if err := d.svc.client.WriteRequest(ack, sipgo.ClientRequestAddVia); err != nil {
		return fmt.Errorf("sending ACK: %w", err)
	}
	d.lastAck.Store(ack)
	return nil
}

// Bye ends the dialog with a BYE; extra headers (Reason) may be passed.
func (d *Dialog) Bye(ctx context.Context, headers ...sip.Header) error {
	select {
	case <-d.ended:
		return nil
	default:
	}
	defer d.Close()
	res, err := d.Do(ctx, d.NewRequest(sip.BYE, nil, headers...))
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return fmt.Errorf("BYE answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// expectAck registers the wait for the ACK of the peer's INVITE seq.
func (d *Dialog) expectAck(seq uint32) chan struct{} {
	d.ackMu.Lock()
	defer d.ackMu.Unlock()
	ch := make(chan struct{})
	if d.ackWait == nil {
		d.ackWait = map[uint32]chan struct{}{}
	}
	d.ackWait[seq] = ch
	return ch
}

func (d *Dialog) gotAck(seq uint32) {
	d.ackMu.Lock()
	defer d.ackMu.Unlock()
	if ch, ok := d.ackWait[seq]; ok {
		close(ch)
		delete(d.ackWait, seq)
	}
}

// retransmitUntilAck resends our 2xx to the peer's INVITE with T1 doubling
// to T2, until its ACK or 64*T1 (RFC 3261 13.3.1.4); no ACK ends the call.
func (d *Dialog) retransmitUntilAck(tx sip.ServerTransaction, res *sip.Response, acked <-chan struct{}) {
	interval := sip.T1
	giveUp := time.NewTimer(64 * sip.T1)
	defer giveUp.Stop()
	resend := time.NewTimer(interval)
	defer resend.Stop()
	reliable := sip.IsReliable(d.transport)
	for {
		select {
		case <-acked:
			return
		case <-d.ended:
			return
		case <-tx.Acks(): // an ACK that reused the INVITE's branch
			return
		case <-giveUp.C:
			d.svc.log.Warn("no ACK for 2xx: ending the call", "call_id", d.callID)
			d.lost()
			return
		case <-resend.C:
			if !reliable {
				_ = tx.Respond(res)
			}
			interval = min(2*interval, sip.T2)
			resend.Reset(interval)
		}
	}
}

// DialogLostHandler is told when a dialog is lost without a BYE (the peer
// never acknowledged our 2xx).
type DialogLostHandler interface {
	OnDialogLost(d *Dialog)
}

func (d *Dialog) lost() {
	d.handlerMu.Lock()
	h := d.handler
	d.handlerMu.Unlock()
	if l, ok := h.(DialogLostHandler); ok {
		l.OnDialogLost(d)
	}
	d.Close()
}

func (s *Service) addDialog(d *Dialog) {
	s.mu.Lock()
	s.dialogs[d.key()] = d
	s.mu.Unlock()
}

func (s *Service) removeDialog(d *Dialog) {
	s.mu.Lock()
	if s.dialogs[d.key()] == d {
		delete(s.dialogs, d.key())
	}
	s.mu.Unlock()
}

// findDialog matches a request from the peer: its To tag is our tag.
func (s *Service) findDialog(req *sip.Request) *Dialog {
	to := req.To()
	if to == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dialogs[dialogKey(callID(req), tagOf(to.Params))]
}

func (s *Service) inDialog(req *sip.Request, tx sip.ServerTransaction) {
	d := s.findDialog(req)
	if d == nil {
		s.respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		return
	}
	select {
	case <-d.ready:
	case <-time.After(2 * time.Second):
		s.respond(tx, req, sip.StatusInternalServerError, "Dialog Not Ready", retryAfter(1))
		return
	}
	d.handlerMu.Lock()
	h := d.handler
	d.handlerMu.Unlock()
	h.OnDialogRequest(d, req, tx)
}

func (s *Service) onAck(req *sip.Request, tx sip.ServerTransaction) {
	d := s.findDialog(req)
	if d == nil {
		return // an ACK has no answer; a stray one is dropped
	}
	seq := req.CSeq().SeqNo
	if p := d.pending.Load(); p != nil && p.seq == seq && d.pending.CompareAndSwap(p, nil) {
		// Delayed offer: the ACK carries the answer the other side waits for.
		if err := p.peer.Ack(p.peerSeq, req.Body(), copyHeaders(req, "Content-Type")...); err != nil {
			s.log.Warn("relaying ACK", "call_id", d.callID, "err", err)
		}
	}
	d.gotAck(seq)
}

// onUnhandledResponse re-acknowledges a retransmitted 2xx to one of our
// INVITEs, whose client transaction is already gone.
func (s *Service) onUnhandledResponse(res *sip.Response) {
	if !res.IsSuccess() || res.CSeq() == nil || res.CSeq().MethodName != sip.INVITE || res.From() == nil {
		return
	}
	s.mu.Lock()
	d := s.dialogs[dialogKey(res.CallID().Value(), tagOf(res.From().Params))]
	s.mu.Unlock()
	if d == nil {
		return
	}
	if ack := d.lastAck.Load(); ack != nil && ack.CSeq().SeqNo == res.CSeq().SeqNo {
		_ = s.client.WriteRequest(ack.Clone(), sipgo.ClientRequestAddVia)
	}
}

// copyHeaders returns copies of the named headers of msg.
func copyHeaders(msg sip.Message, names ...string) []sip.Header {
	var out []sip.Header
	for _, name := range names {
		for _, h := range msg.GetHeaders(name) {
			out = append(out, sip.NewHeader(h.Name(), h.Value()))
		}
	}
	return out
}
