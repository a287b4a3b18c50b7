package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/internal/logging"
	"github.com/callwake/callwake/internal/workers"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/sip"
)

// Call outcomes, as the call log and the metrics name them.
const (
	outcomeCompleted   = "completed"   // answered, then hung up
	outcomeDeclined    = "declined"    // 603
	outcomeTimeout     = "timeout"     // nobody woke or answered in time
	outcomeCancelled   = "cancelled"   // the caller hung up while ringing
	outcomeBusy        = "busy"        // 486
	outcomeUnavailable = "unavailable" // 480: no device
	outcomeNotFound    = "not_found"   // 404: unknown extension
	outcomeFailed      = "failed"      // anything else
	outcomeAnswered    = "answered"    // talking (not final)
)

// Reasons put on the CANCELs of branches that lost (RFC 3326).
var (
	reasonCompletedElsewhere = sipgo.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`)
	reasonDeclinedElsewhere  = sipgo.NewHeader("Reason", `SIP;cause=603;text="Declined"`)
)

// lingerAfterEnd bounds how long an ended call waits for the last answers
// of cancelled branches (a 2xx racing the CANCEL).
const lingerAfterEnd = 32 * time.Second

type event interface{}

type evRegister struct {
	binding sip.Binding
	targets []sip.PushTarget
}

type evResponse struct {
	br  *branch
	res *sipgo.Response
}

type evDecline struct {
	deviceID int64
	reply    chan int // HTTP status for the decline URL
}

type evPushed struct {
	kind    string
	results []push.Result
}

type evHangup struct{ byPBX bool }

// Timers and the PBX's side, as events.
type (
	evCallerGone  struct{} // the PBX cancelled, or its transaction ended unanswered
	evWakeTimeout struct{}
	evRingTimeout struct{}
	evLinger      struct{}
)

// call is one PBX INVITE from arrival to hang-up.
//
// One goroutine at a time owns a call: it alone touches the fields below
// mu's, handling the call's events one after another. Others talk to the
// call with send. The owner is whichever goroutine finds the call without
// one when it has an event to deliver, and it gives the call up once no
// event waits: a call that rings, waiting on a phone that sleeps, holds no
// goroutine. (A parked goroutine costs 4 KiB of stack at least, which was
// most of a ringing call's memory; STYLE.md's "one owner goroutine" is
// kept as "one owner at a time".)
type call struct {
	b       *Bridge
	id      string
	in      *sip.InboundCall
	ext     string
	devices []db.Device
	row     db.Call

	mu      sync.Mutex
	queue   []event       // events waiting for the owner
	running bool          // a goroutine owns the call
	over    bool          // the call is finished: events are dropped
	done    chan struct{} // closed when the call is finished

	ring, wake, linger *time.Timer

	pushed      []push.Target      // devices sent incoming_call
	branches    map[string]*branch // the current branch of each phone; nil until the first
	legs        []*branch          // every branch, for the final answers still due
	answered    *branch
	busySeen    bool
	earlyMedia  bool // a 183 with SDP was relayed
	ended       bool // the PBX has its final answer (or the call was answered)
	talking     bool // answered and not hung up yet
	wakeExpired bool // wake_timeout passed: no pushed device will still be waited for
	abandoned   bool // branches still unanswered lingerAfterEnd after the end
}

func newCall(b *Bridge, in *sip.InboundCall, devices []db.Device) *call {
	now := b.cfg.Now()
	name, number := in.Caller()
	// The INVITE's goroutine owns the call first: see start.
	c := &call{b: b, id: newCallID(), in: in, ext: in.Extension(), devices: devices,
		running: true, done: make(chan struct{})}
	c.row = db.Call{ID: c.id, SIPCallID: in.CallID(), Extension: c.ext, CallerName: name,
		CallerNumber: number, InviteAt: now, Outcome: "ringing"}
	return c
}

// log is the call's logger, for what logs on the call's behalf for a
// while (the relay of an answered call). It is made when asked for rather
// than kept: a logger made with With holds its attributes formatted, a few
// hundred bytes for every ringing call.
func (c *call) log() *slog.Logger {
	return c.b.log.With("sip_call_id", c.row.SIPCallID, "ext", c.ext, "call_id", c.id)
}

// logAttrs writes one line of the call's log, as log() would: the call's
// ids, then attrs. It makes no logger, and a line the level drops costs
// nothing: under load, making a logger for each line was a tenth of what
// a call allocated.
func (c *call) logAttrs(level slog.Level, msg string, attrs ...slog.Attr) {
	logging.Line(c.b.log, level, msg, []slog.Attr{slog.String("sip_call_id", c.row.SIPCallID),
		slog.String("ext", c.ext), slog.String("call_id", c.id)}, attrs...)
}

// logs reports whether the call's log takes lines at level, for a line
// whose attributes cost something to make.
func (c *call) logs(level slog.Level) bool { return c.b.log.Enabled(context.Background(), level) }

// send hands an event to the call's owner, and becomes the owner if the
// call has none. It never blocks; once the call is over it does nothing.
func (c *call) send(ev event) {
	c.mu.Lock()
	if c.over {
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, ev)
	start := !c.running
	c.running = true
	c.mu.Unlock()
	if start {
		workers.Go(c.own)
	}
}

// own handles the call's events until none waits, then gives the call up;
// it stops the call once it is finished.
func (c *call) own() {
	for {
		if c.abandoned || c.ended && !c.talking && c.pendingBranches() == 0 {
			c.stop()
			return
		}
		if c.ended && !c.talking && c.linger == nil {
			c.linger = c.after(lingerAfterEnd, evLinger{})
		}
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.queue = nil // a ringing call keeps no buffer
			c.running = false
			c.mu.Unlock()
			return
		}
		ev := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.mu.Unlock()
		c.handle(ev)
	}
}

// start sends the 180, the pushes and the INVITEs to phones reachable at
// once, and sets the call's timers. The INVITE's goroutine runs it as the
// call's first owner, then handles what arrived meanwhile (own).
func (c *call) start(bindings []sip.Binding) {
	if err := c.in.Provisional(sipgo.StatusRinging, "Ringing", nil); err != nil {
		c.logAttrs(slog.LevelInfo, "sending 180 failed", slog.Any("err", err))
	}
	c.ring = c.after(c.b.cfg.RingTimeout, evRingTimeout{})
	if c.b.cfg.WakeTimeout > 0 {
		c.wake = c.after(c.b.cfg.WakeTimeout, evWakeTimeout{})
	}
	c.in.OnDone(func() { c.send(evCallerGone{}) })
	c.startPushes()
	for _, bnd := range bindings {
		if ringAtOnce(bnd) {
			c.fork(bnd, c.devicesOf(bnd.PushTargets, bnd.Instance))
		}
	}
	c.logAttrs(slog.LevelInfo, "call ringing", slog.String("caller", c.row.CallerNumber), slog.Int("devices", len(c.devices)),
		slog.Int("live_bindings", len(c.branches)))
	c.insertRow()
}

// after sends ev to the call once d has passed.
func (c *call) after(d time.Duration, ev event) *time.Timer {
	return time.AfterFunc(d, func() { c.send(ev) })
}

// stop ends the call's life: later events are dropped, the call is
// forgotten and its transaction released.
func (c *call) stop() {
	c.mu.Lock()
	c.over, c.queue = true, nil
	c.mu.Unlock()
	for _, t := range []*time.Timer{c.ring, c.wake, c.linger} {
		if t != nil {
			t.Stop()
		}
	}
	c.b.forget(c)
	close(c.done)
	c.in.Release()
}

// onCallerGone: the PBX cancelled, or its transaction ended unanswered.
func (c *call) onCallerGone() {
	if c.ended || c.answered != nil {
		return
	}
	if c.in.Cancelled() {
		c.end(outcomeCancelled, 0, "", push.ReasonCallerHangup, 0, nil)
	} else {
		c.end(outcomeFailed, 0, "", push.ReasonCallerHangup, 0, nil)
	}
}

func (c *call) onWakeTimeout() {
	c.wakeExpired = true
	if !c.ended && c.pendingBranches() == 0 {
		c.logAttrs(slog.LevelInfo, "no device woke in time", slog.Duration("wake_timeout", c.b.cfg.WakeTimeout))
		c.timeout()
	}
}

// ringAtOnce tells the bindings that get the INVITE when the call arrives:
// a live connection (the app is up), and a binding that cannot be pushed
// (a softphone without push parameters is only reachable directly). Other
// bindings belong to apps that sleep: the push wakes them.
func ringAtOnce(b sip.Binding) bool {
	if b.ConnectionOriented() {
		return b.Live
	}
	return len(b.PushTargets) == 0
}

func (c *call) handle(ev event) {
	switch ev := ev.(type) {
	case evCallerGone:
		c.onCallerGone()
	case evWakeTimeout:
		c.onWakeTimeout()
	case evRingTimeout:
		if !c.ended {
			c.timeout()
		}
	case evLinger:
		c.logAttrs(slog.LevelWarn, "branches did not finish after the call ended", slog.Int("pending", c.pendingBranches()))
		c.abandoned = true
	case evRegister:
		c.onRegister(ev)
	case evResponse:
		c.onResponse(ev.br, ev.res)
	case evDecline:
		ev.reply <- c.onDecline(ev.deviceID)
	case evPushed:
		c.onPushed(ev)
	case evHangup:
		c.talking = false
		c.row.EndAt = c.b.cfg.Now()
		c.row.Outcome = outcomeCompleted
		c.finishRow()
		by := "phone"
		if ev.byPBX {
			by = "pbx"
		}
		c.logAttrs(slog.LevelInfo, "call ended", slog.String("outcome", outcomeCompleted), slog.Int("status", 200), slog.String("hangup_by", by),
			slog.Duration("duration", c.row.EndAt.Sub(c.row.AnswerAt).Round(time.Millisecond)))
		c.b.metrics.calls.WithLabelValues(outcomeCompleted).Inc()
		c.b.release(c)
	}
}

func (c *call) timeout() {
	status := c.b.cfg.TimeoutStatus
	outcome := outcomeTimeout
	if c.busySeen {
		status, outcome = sipgo.StatusBusyHere, outcomeBusy
	}
	c.end(outcome, status, "", push.ReasonTimeout, 0, nil)
}

// end gives the PBX its final answer (status 0: none, it cancelled),
// cancels the branches and dismisses the pushed phones but one (except).
func (c *call) end(outcome string, status int, reason, pushReason string, except int64, cancelReason sipgo.Header) {
	if c.ended {
		return
	}
	c.ended = true
	c.b.release(c)
	if status > 0 {
		if reason == "" {
			reason = sip.ReasonPhrase(status)
		}
		if err := c.in.Reject(status, reason); err != nil {
			c.logAttrs(slog.LevelDebug, "final answer not sent", slog.Int("status", status), slog.Any("err", err))
		}
	}
	c.cancelBranches(nil, cancelReason)
	c.cancelPushes(pushReason, except)
	c.row.EndAt = c.b.cfg.Now()
	c.row.Outcome, c.row.Status = outcome, status
	if status == 0 {
		c.row.Status = sipgo.StatusRequestTerminated
	}
	c.finishRow()
	c.b.metrics.calls.WithLabelValues(outcome).Inc()
	c.logAttrs(slog.LevelInfo, "call ended", slog.String("outcome", outcome), slog.Int("status", c.row.Status), slog.Int("branches", len(c.branches)),
		slog.Duration("ring_time", c.row.EndAt.Sub(c.row.InviteAt).Round(time.Millisecond)))
}

// onDecline is a POST to a decline URL: 603 to the PBX unless answered.
func (c *call) onDecline(deviceID int64) int {
	if c.ended || c.answered != nil {
		return 410
	}
	c.logAttrs(slog.LevelInfo, "declined from the push", slog.Int64("device_id", deviceID))
	c.end(outcomeDeclined, sipgo.StatusGlobalDecline, "Decline", push.ReasonDeclinedElsewhere, deviceID, reasonDeclinedElsewhere)
	return 200
}

// insertRow and updateRow queue the call's row for the store's journal:
// they return at once unless the queue is full, which only a stalled disk
// makes last.
func (c *call) insertRow() {
	if err := c.b.cfg.Store.InsertCall(context.Background(), c.row); err != nil {
		c.logAttrs(slog.LevelError, "writing call log", slog.Any("err", err))
	}
}

func (c *call) updateRow() {
	if err := c.b.cfg.Store.UpdateCall(context.Background(), c.row); err != nil {
		c.logAttrs(slog.LevelError, "updating call log", slog.Any("err", err))
	}
}

func (c *call) finishRow() {
	c.updateRow()
	c.b.metrics.observeEnd(c.row)
}
