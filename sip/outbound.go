package sip

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/callwake/callwake/internal/workers"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
)

// InviteParams describe an INVITE from callwake to a phone's binding.
type InviteParams struct {
	Target      sip.Uri // the binding's Contact
	Destination string  // host:port the phone registered from (NAT); "" = the Target's
	Transport   string  // transport the phone registered over
	From        sip.Uri // the caller, as the phone should show it
	FromName    string
	To          sip.Uri // sip:<ext>@<domain>
	Body        []byte  // the PBX's SDP offer
	ContentType string
	Headers     []sip.Header // extra headers (P-Asserted-Identity, forwarded X- headers)
}

// OutboundLeg is one INVITE from callwake to a phone before it is answered.
// Its responses arrive on Responses; the last one is final.
type OutboundLeg struct {
	svc         *Service
	req         *sip.Request
	tx          sip.ClientTransaction
	destination string
	responses   chan *sip.Response

	mu            sync.Mutex
	provisional   bool         // a 1xx arrived: CANCEL may be sent
	final         bool         // a final response arrived
	pendingCancel []sip.Header // CANCEL asked before any 1xx (RFC 3261 9.1)
	cancelled     bool
}

// Invite sends an INVITE to a phone. ctx bounds only the sending.
func (s *Service) Invite(ctx context.Context, p InviteParams) (*OutboundLeg, error) {
	req := s.inviteRequest(&p)
	tx, err := s.client.TransactionRequest(ctx, req, sipgo.ClientRequestAddVia)
	if err != nil {
		return nil, fmt.Errorf("sending INVITE to %s: %w", p.Target.String(), err)
	}
	leg := &OutboundLeg{svc: s, req: req, tx: tx, destination: p.Destination, responses: make(chan *sip.Response, 8)}
	workers.Go(leg.read)
	return leg, nil
}

// inviteRequest builds the INVITE that Invite sends.
func (s *Service) inviteRequest(p *InviteParams) *sip.Request {
	req := sip.NewRequest(sip.INVITE, *p.Target.Clone())
	from := sip.FromHeader{DisplayName: p.FromName, Address: *p.From.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := sip.ToHeader{Address: *p.To.Clone(), Params: sip.NewParams()}
	cid := sip.CallIDHeader(uuid.NewString())
	maxFwd := sip.MaxForwardsHeader(70)
	transport := strings.ToUpper(p.Transport)
	if transport == "" {
		transport = "UDP"
	}
	req.AppendHeader(&from)
	req.AppendHeader(&to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.ContactHeader{Address: s.Contact(transport)})
	req.AppendHeader(sip.NewHeader("Allow", allowedMethods))
	for _, h := range p.Headers {
		req.AppendHeader(h)
	}
	if len(p.Body) > 0 {
		ct := p.ContentType
		if ct == "" {
			ct = "application/sdp"
		}
		req.AppendHeader(sip.NewHeader("Content-Type", ct))
	}
	req.SetBody(p.Body)
	req.SetTransport(transport)
	if p.Destination != "" {
		req.SetDestination(p.Destination)
	}
	return req
}

// Responses delivers the phone's responses (not 100); the channel is closed
// after the final one. A transaction that dies without one yields a 408.
func (l *OutboundLeg) Responses() <-chan *sip.Response { return l.responses }

// CallID is the Call-ID of the INVITE to the phone.
func (l *OutboundLeg) CallID() string { return callID(l.req) }

func (l *OutboundLeg) read() {
	defer close(l.responses)
	for {
		select {
		case res := <-l.tx.Responses():
			if l.handle(res) {
				return
			}
		case <-l.tx.Done():
			// Responses may still be queued behind Done.
			select {
			case res := <-l.tx.Responses():
				if l.handle(res) {
					return
				}
			default:
			}
			l.mu.Lock()
			l.final = true
			l.mu.Unlock()
			reason := "Request Timeout"
			if err := l.tx.Err(); err != nil {
				reason = "Request Timeout (" + firstLine(err.Error()) + ")"
			}
			l.responses <- sip.NewResponseFromRequest(l.req, sip.StatusRequestTimeout, reason, nil)
			return
		}
	}
}

// handle passes one response on; it reports whether it was final.
func (l *OutboundLeg) handle(res *sip.Response) bool {
	l.mu.Lock()
	if res.IsProvisional() {
		first := !l.provisional
		l.provisional = true
		pending := l.pendingCancel
		l.pendingCancel = nil
		l.mu.Unlock()
		if first && pending != nil {
			go l.sendCancel(pending)
		}
		if res.StatusCode != sip.StatusTrying {
			l.responses <- res
		}
		return false
	}
	l.final = true
	l.pendingCancel = nil
	l.mu.Unlock()
	l.responses <- res
	return true
}

// Cancel cancels the INVITE with the given headers (Reason). Before any
// provisional response the CANCEL waits for one, as RFC 3261 9.1 asks.
// A final response still arrives on Responses (487, or a 2xx that raced).
func (l *OutboundLeg) Cancel(headers ...sip.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.final || l.cancelled {
		return
	}
	l.cancelled = true
	if !l.provisional {
		l.pendingCancel = append([]sip.Header{}, headers...)
		if l.pendingCancel == nil {
			l.pendingCancel = []sip.Header{}
		}
		return
	}
	go l.sendCancel(headers)
}

func (l *OutboundLeg) sendCancel(headers []sip.Header) {
	req := l.req
	cancel := sip.NewRequest(sip.CANCEL, *req.Recipient.Clone())
	cancel.AppendHeader(req.Via().Clone())
	for _, name := range []string{"Route"} {
		for _, h := range req.GetHeaders(name) {
			cancel.AppendHeader(sip.HeaderClone(h))
		}
	}
	cancel.AppendHeader(sip.HeaderClone(req.From()))
	cancel.AppendHeader(sip.HeaderClone(req.To()))
	cancel.AppendHeader(sip.HeaderClone(req.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.CANCEL})
	maxFwd := sip.MaxForwardsHeader(70)
	cancel.AppendHeader(&maxFwd)
	for _, h := range headers {
		cancel.AppendHeader(h)
	}
	cancel.SetBody(nil)
	cancel.SetTransport(req.Transport())
	if l.destination != "" {
		cancel.SetDestination(l.destination)
	}
	ctx, done := context.WithTimeout(context.Background(), 32*time.Second)
	defer done()
	tx, err := l.svc.client.TransactionRequest(ctx, cancel, func(*sipgo.Client, *sip.Request) error { return nil })
	if err != nil {
		l.svc.log.Info("sending CANCEL failed", "call_id", l.CallID(), "err", err)
		return
	}
	defer tx.Terminate()
	select {
	case <-tx.Responses():
	case <-tx.Done():
	case <-ctx.Done():
	}
}

// Confirm takes the phone's 2xx and returns the dialog with it. The 2xx is
// acknowledged at once, unless our INVITE had no offer (the PBX's did not
// either): then the 2xx holds the offer, the ACK must carry the answer, and
// it is sent when the PBX's ACK brings it (see InboundCall.Answer).
func (l *OutboundLeg) Confirm(ok *sip.Response) (*Dialog, error) {
	d := newUACDialog(l.svc, l.req, ok, l.destination)
	l.svc.addDialog(d)
	if len(l.req.Body()) == 0 {
		d.ackPending = l.req.CSeq().SeqNo
		return d, nil
	}
	if err := d.Ack(l.req.CSeq().SeqNo, nil); err != nil {
		l.svc.removeDialog(d)
		return nil, err
	}
	return d, nil
}

// Discard acknowledges a 2xx that lost the race to another phone and hangs
// it up at once, with the given headers (Reason).
func (l *OutboundLeg) Discard(ok *sip.Response, headers ...sip.Header) {
	d, err := l.Confirm(ok)
	if err != nil {
		return
	}
	if d.ackPending != 0 {
		// A late-offer 2xx still needs its ACK before the BYE; any answer
		// will do for a dialog that ends at once.
		_ = d.Ack(d.ackPending, nil)
	}
	d.SetHandler(byeOnly{})
	ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
	defer cancel()
	_ = d.Bye(ctx, headers...)
}

// byeOnly answers a dialog that is being torn down.
type byeOnly struct{}

func (byeOnly) OnDialogRequest(d *Dialog, req *sip.Request, tx sip.ServerTransaction) {
	d.svc.respond(tx, req, sip.StatusOK, "OK")
	if req.Method == sip.BYE {
		d.Close()
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
