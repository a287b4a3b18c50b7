package sip

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// relayedHeaders are copied from a request (or response) on one dialog to
// its twin on the other: what the far end needs to understand the body or
// the reason.
var relayedHeaders = []string{"Content-Type", "Content-Disposition", "Reason", "Info-Package",
	"Event", "Subscription-State", "Refer-To", "Referred-By", "Replaces", "Session-Expires", "Min-SE",
	"Require", "Supported", "Warning", "Retry-After"}

// relayTimeout bounds one relayed transaction.
const relayTimeout = 32 * time.Second

// Relay joins two dialogs as a B2BUA: every request one peer sends (BYE,
// re-INVITE, UPDATE, INFO, ...) is sent on the other dialog with that
// dialog's own Call-ID, tags and CSeq, and its final answer relayed back.
// onEnd is called once, when either side hangs up (by is the side that sent
// BYE, nil when the dialog was lost).
func Relay(a, b *Dialog, log *slog.Logger, onEnd func(by *Dialog)) {
	r := &relay{a: a, b: b, log: log, onEnd: onEnd}
	a.SetHandler(r)
	b.SetHandler(r)
}

type relay struct {
	a, b    *Dialog
	log     *slog.Logger
	onEnd   func(by *Dialog)
	endOnce sync.Once
}

func (r *relay) peer(d *Dialog) *Dialog {
	if d == r.a {
		return r.b
	}
	return r.a
}

func (r *relay) end(by *Dialog) { r.endOnce.Do(func() { r.onEnd(by) }) }

// OnDialogLost ends both sides when one never acknowledged our 2xx.
func (r *relay) OnDialogLost(d *Dialog) {
	ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
	defer cancel()
	_ = d.Bye(ctx)
	_ = r.peer(d).Bye(ctx)
	r.end(nil)
}

func (r *relay) OnDialogRequest(d *Dialog, req *sip.Request, tx sip.ServerTransaction) {
	peer := r.peer(d)
	if req.Method == sip.BYE {
		d.svc.respond(tx, req, sip.StatusOK, "OK")
		d.Close()
		r.end(d)
		ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
		defer cancel()
		if err := peer.Bye(ctx, copyHeaders(req, "Reason")...); err != nil {
			r.log.Info("BYE to the other side failed", "call_id", peer.CallID(), "err", err)
		}
		return
	}
	out := peer.NewRequest(req.Method, req.Body(), copyHeaders(req, relayedHeaders...)...)
	ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
	defer cancel()
	res, err := peer.Do(ctx, out)
	if err != nil {
		r.log.Info("relaying request failed", "method", req.Method, "call_id", peer.CallID(), "err", err)
		d.svc.respond(tx, req, sip.StatusRequestTimeout, "Request Timeout")
		return
	}
	if req.Method == sip.INVITE && res.IsSuccess() {
		peerSeq := out.CSeq().SeqNo
		if len(req.Body()) > 0 {
			// The offer was in the re-INVITE: the answer is in this 2xx,
			// and the ACK carries nothing: acknowledge now.
			_ = peer.Ack(peerSeq, nil)
		} else {
			// Delayed offer: the ACK from d carries the answer.
			d.pending.Store(&pendingAck{seq: req.CSeq().SeqNo, peer: peer, peerSeq: peerSeq})
		}
	}
	answer := sip.NewResponseFromRequest(req, res.StatusCode, res.Reason, res.Body())
	for _, h := range copyHeaders(res, relayedHeaders...) {
		answer.AppendHeader(h)
	}
	if req.Method == sip.INVITE && res.IsSuccess() {
		answer.AppendHeader(&sip.ContactHeader{Address: d.svc.Contact(d.transport)})
		acked := d.expectAck(req.CSeq().SeqNo)
		if err := tx.Respond(answer); err != nil {
			r.log.Info("relaying response failed", "call_id", d.CallID(), "err", err)
			return
		}
		d.retransmitUntilAck(tx, answer, acked)
		return
	}
	if err := tx.Respond(answer); err != nil {
		r.log.Info("relaying response failed", "call_id", d.CallID(), "err", err)
	}
}
