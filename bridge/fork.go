package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/callwake/callwake/internal/workers"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/sip"
)

// branch is the INVITE toward one phone: one per device (or per binding,
// for a phone without push), never one per REGISTER retry.
type branch struct {
	key      string
	deviceID int64 // 0: a binding with no known device
	binding  sip.Binding
	leg      *sip.OutboundLeg
	started  time.Time
	reached  bool // the phone answered with a 1xx
	final    int  // final status; 0 while the INVITE is pending
}

// reforkAfter is how long an INVITE may go without a 1xx before a new
// REGISTER of the same phone from another address gets a fresh INVITE: the
// old address is then taken to be dead (the app woke on a new connection).
const reforkAfter = 2 * time.Second

// branchKey names the phone a binding belongs to.
func branchKey(b sip.Binding, deviceIDs []int64) string {
	if len(deviceIDs) > 0 {
		return deviceKey(deviceIDs[0])
	}
	if b.Instance != "" {
		return "instance:" + b.Instance
	}
	return "contact:" + b.Contact.String()
}

func deviceKey(id int64) string { return "device:" + strconv.FormatInt(id, 10) }

// devicesOf finds the call's devices a binding stands for: by push token,
// else by +sip.instance.
func (c *call) devicesOf(targets []sip.PushTarget, instance string) []int64 {
	var ids []int64
	for _, d := range c.devices {
		match := instance != "" && d.Instance == instance
		for _, t := range targets {
			match = match || strings.EqualFold(t.Token, d.Token)
		}
		if match {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

func (c *call) onRegister(ev evRegister) {
	if c.ended || c.answered != nil {
		return
	}
	targets := ev.targets
	if len(targets) == 0 {
		targets = ev.binding.PushTargets
	}
	ids := c.devicesOf(targets, ev.binding.Instance)
	if len(ids) > 0 && c.row.FirstRegisterAt.IsZero() {
		c.row.FirstRegisterAt = c.b.cfg.Now()
		c.logAttrs(slog.LevelDebug, "pushed device registered", slog.Int64("device_id", ids[0]),
			slog.Duration("after", c.row.FirstRegisterAt.Sub(c.row.InviteAt).Round(time.Millisecond)))
	}
	c.fork(ev.binding, ids)
}

// fork sends the PBX's INVITE to a phone's binding, unless that phone
// already has a branch that reached it or uses the same binding.
func (c *call) fork(b sip.Binding, deviceIDs []int64) {
	key := branchKey(b, deviceIDs)
	if old, ok := c.branches[key]; ok && old.final == 0 {
		sameContact := sameAddress(old.binding.Contact, b.Contact)
		fresh := c.b.cfg.Now().Sub(old.started) < reforkAfter
		if old.reached || (sameContact && (old.binding.Source == b.Source || fresh)) {
			return // a REGISTER retry or refresh: the phone is already ringing
		}
		// The app woke on a new connection; the old one never answered.
		old.leg.Cancel()
	}
	req := c.in.Request()
	name, number := c.in.Caller()
	from := sipgo.Uri{Scheme: "sip", User: number, Host: c.b.cfg.Domain}
	if pai := req.GetHeader("P-Asserted-Identity"); pai == nil {
		if f := req.From(); f != nil {
			from = *f.Address.Clone()
		}
	}
	params := sip.InviteParams{
		Target:      b.Contact,
		Destination: b.Source,
		Transport:   b.Transport,
		From:        from,
		FromName:    name,
		To:          sipgo.Uri{Scheme: "sip", User: c.ext, Host: c.b.cfg.Domain},
		Body:        req.Body(),
		ContentType: contentType(req),
		Headers:     c.forkHeaders(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leg, err := c.b.cfg.SIP.Invite(ctx, params)
	if err != nil {
		c.logAttrs(slog.LevelWarn, "INVITE to phone failed", slog.String("contact", b.Contact.String()), slog.Any("err", err))
		return
	}
	br := &branch{key: key, binding: b, leg: leg, started: c.b.cfg.Now()}
	if len(deviceIDs) > 0 {
		br.deviceID = deviceIDs[0]
	}
	if c.branches == nil {
		c.branches = map[string]*branch{}
	}
	c.branches[key] = br
	c.legs = append(c.legs, br)
	if c.logs(slog.LevelDebug) {
		c.logAttrs(slog.LevelDebug, "ringing phone", slog.String("contact", b.Contact.String()), slog.String("transport", b.Transport),
			slog.Int64("device_id", br.deviceID))
	}
	workers.Go(func() {
		for res := range leg.Responses() {
			c.send(evResponse{br: br, res: res})
		}
	})
}

// sameAddress compares where two Contacts lead, ignoring parameters other
// than the transport (push parameters come in any order).
func sameAddress(a, b sipgo.Uri) bool {
	ta, _ := a.UriParams.Get("transport")
	tb, _ := b.UriParams.Get("transport")
	return a.User == b.User && strings.EqualFold(a.Host, b.Host) && a.Port == b.Port && strings.EqualFold(ta, tb)
}

// forkHeaders are the headers the phone's INVITE carries besides the SDP:
// the caller's identity and callwake's call id, which the app matches with
// the push's call_id (its CallKit UUID).
func (c *call) forkHeaders() []sipgo.Header {
	req := c.in.Request()
	out := make([]sipgo.Header, 1, 2+len(c.b.cfg.ForwardHeaders))
	out[0] = sipgo.NewHeader("X-Callwake-Call-ID", c.id)
	for _, name := range c.b.forkHeaderNames {
		for _, h := range req.GetHeaders(name) {
			out = append(out, sipgo.NewHeader(h.Name(), h.Value()))
		}
	}
	return out
}

func contentType(m interface{ GetHeader(string) sipgo.Header }) string {
	if ct := m.GetHeader("Content-Type"); ct != nil {
		return ct.Value()
	}
	return ""
}

// pendingBranches counts INVITEs to phones still waiting for a final answer.
func (c *call) pendingBranches() int {
	n := 0
	for _, br := range c.legs {
		if br.final == 0 {
			n++
		}
	}
	return n
}

func (c *call) cancelBranches(except *branch, reason sipgo.Header) {
	for _, br := range c.legs {
		if br == except || br.final != 0 {
			continue
		}
		if reason != nil {
			br.leg.Cancel(reason)
		} else {
			br.leg.Cancel()
		}
	}
}

func (c *call) onResponse(br *branch, res *sipgo.Response) {
	code := res.StatusCode
	if code < 200 {
		br.reached = true
		if code == sipgo.StatusSessionInProgress && len(res.Body()) > 0 && !c.earlyMedia && !c.ended {
			c.earlyMedia = true
			if err := c.in.Provisional(code, "Session Progress", res.Body(), sipgo.NewHeader("Content-Type", contentType(res))); err != nil {
				c.logAttrs(slog.LevelInfo, "relaying early media failed", slog.Any("err", err))
			}
		}
		return
	}
	br.final = code
	if code < 300 {
		if c.ended {
			// Lost the race to another phone or to the end of the call.
			go br.leg.Discard(res, reasonCompletedElsewhere)
			return
		}
		c.answer(br, res)
		return
	}
	if c.ended {
		return
	}
	c.logAttrs(slog.LevelInfo, "phone refused the call", slog.Int64("device_id", br.deviceID), slog.Int("status", code), slog.String("reason", res.Reason))
	switch code {
	case sipgo.StatusGlobalDecline:
		c.end(outcomeDeclined, sipgo.StatusGlobalDecline, "Decline", push.ReasonDeclinedElsewhere, br.deviceID, reasonDeclinedElsewhere)
		return
	case sipgo.StatusBusyHere, sipgo.StatusGlobalBusyEverywhere:
		c.busySeen = true
	}
	if c.pendingBranches() == 0 && !c.mayStillWake() {
		c.timeout()
	}
}

// mayStillWake reports whether a pushed device that has not registered yet
// can still do so within the wake window.
func (c *call) mayStillWake() bool {
	if c.wakeExpired {
		return false
	}
	for _, t := range c.pushed {
		if _, ok := c.branches[deviceKey(t.DeviceID)]; !ok {
			return true
		}
	}
	return false
}

// answer joins the phone that sent the first 2xx with the PBX.
func (c *call) answer(br *branch, res *sipgo.Response) {
	phone, err := br.leg.Confirm(res)
	if err != nil {
		c.logAttrs(slog.LevelWarn, "acknowledging the phone's 200 failed", slog.Any("err", err))
		return
	}
	pbx, err := c.in.Answer(phone, res)
	if err != nil {
		// The PBX gave up at the same moment.
		c.logAttrs(slog.LevelInfo, "answering the PBX failed: hanging up the phone", slog.Any("err", err))
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
			defer cancel()
			_ = phone.Bye(ctx)
		}()
		c.end(outcomeCancelled, 0, "", push.ReasonCallerHangup, br.deviceID, nil)
		return
	}
	now := c.b.cfg.Now()
	c.answered, c.ended, c.talking = br, true, true
	c.row.AnswerAt, c.row.AnsweredBy, c.row.Outcome, c.row.Status = now, br.deviceID, outcomeAnswered, sipgo.StatusOK
	var buf [3]slog.Attr
	attrs := append(buf[:0], slog.Int64("device_id", br.deviceID), slog.Duration("after", now.Sub(c.row.InviteAt).Round(time.Millisecond)))
	if !c.row.FirstRegisterAt.IsZero() {
		attrs = append(attrs, slog.Duration("woke_after", c.row.FirstRegisterAt.Sub(c.row.InviteAt).Round(time.Millisecond)))
	}
	c.logAttrs(slog.LevelInfo, "call answered", attrs...)
	sip.Relay(pbx, phone, c.log(), func(by *sip.Dialog) { c.send(evHangup{byPBX: by == pbx}) })
	c.cancelBranches(br, reasonCompletedElsewhere)
	c.cancelPushes(push.ReasonAnsweredElsewhere, br.deviceID)
	c.updateRow()
}

// relayTimeout bounds a BYE sent while tearing down.
const relayTimeout = 10 * time.Second
