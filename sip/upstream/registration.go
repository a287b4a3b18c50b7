package upstream

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// registration is one extension's binding at the PBX. One goroutine owns
// it and runs a select over its events: the refresh or retry timer, a
// changed account from Sync, and its end (removal or shutdown).
type registration struct {
	m    *Manager
	ext  string
	log  *slog.Logger
	prev *registration // a removed registration of the same extension, still un-registering
	wake chan struct{} // Sync changed the account
	done chan struct{}

	mu            sync.Mutex
	desired       Account // the latest account from Sync
	pending       bool    // desired not yet applied by the goroutine
	started       bool
	removed       bool
	cancel        context.CancelFunc // ends the goroutine
	cancelAttempt context.CancelFunc // aborts the REGISTER in flight
	state         State              // what State() shows

	// Owned by the goroutine.
	ctx        context.Context
	tgt        target
	tgtOK      bool
	bind       binding
	expires    time.Duration // to request: Config.Expires, raised by 423
	failures   int           // failed attempts in a row
	boundUntil time.Time     // until when the PBX may hold a binding of ours
	timer      Timer
	st         State // staged; publish makes it the state
}

func newRegistration(m *Manager, acc Account, prev *registration) *registration {
	r := &registration{
		m: m, ext: acc.Ext, log: m.log.With("ext", acc.Ext), prev: prev,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		desired: acc, pending: true, expires: m.cfg.Expires,
	}
	r.st.Status = StatusRegistering
	if t, err := resolve(acc, m.cfg.DefaultRegistrar); err != nil {
		r.st.Status = StatusDisabled
		r.st.LastError, r.st.LastErrorAt = err.Error(), m.cfg.Clock.Now()
	} else {
		r.st.Registrar = t.registrar.String()
	}
	r.state = r.st
	return r
}

func (r *registration) start(parent context.Context, delay time.Duration) {
	ctx, cancel := context.WithCancel(parent)
	r.ctx = ctx
	r.mu.Lock()
	r.started, r.cancel = true, cancel
	r.mu.Unlock()
	go r.run(delay)
}

// remove ends the registration: its goroutine un-registers and exits. It
// reports whether there is a goroutine to wait for.
func (r *registration) remove() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = true
	if r.started {
		r.cancel()
	}
	return r.started
}

// update hands a changed account to the goroutine, aborting a REGISTER in
// flight so that a fixed registrar or password is used at once.
func (r *registration) update(acc Account) {
	r.mu.Lock()
	if acc == r.desired {
		r.mu.Unlock()
		return
	}
	r.desired, r.pending = acc, true
	if r.cancelAttempt != nil {
		r.cancelAttempt()
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *registration) takePending() (Account, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.pending {
		return Account{}, false
	}
	r.pending = false
	return r.desired, true
}

func (r *registration) snapshot() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (r *registration) run(delay time.Duration) {
	defer r.m.left(r)
	defer close(r.done)
	if r.prev != nil {
		// Its un-REGISTER must not land after our REGISTER: same Contact.
		select {
		case <-r.prev.done:
		case <-r.ctx.Done():
			return
		}
	}
	if acc, ok := r.takePending(); ok && r.apply(acc) {
		r.schedule(delay)
	}
	r.publish()
	for {
		var timerC <-chan time.Time
		if r.timer != nil {
			timerC = r.timer.C()
		}
		select {
		case <-r.ctx.Done():
			r.stop()
			return
		case <-r.wake:
			acc, ok := r.takePending()
			if !ok {
				continue
			}
			if r.apply(acc) {
				r.schedule(r.m.slot())
			} else {
				r.cancelTimer()
			}
			r.publish()
		case <-timerC:
			r.timer = nil
			r.st.NextAttempt = time.Time{}
			// Shown while the REGISTER waits for its answer (up to the
			// request timeout): no stale next attempt in the past.
			r.show()
			if d, ok := r.attempt(); ok {
				r.schedule(d)
			}
			r.publish()
		}
	}
}

// apply switches to a new version of the account and reports whether to
// register it. A binding at another registrar or under another username is
// removed first.
func (r *registration) apply(acc Account) bool {
	t, err := resolve(acc, r.m.cfg.DefaultRegistrar)
	if r.tgtOK && (err != nil || !t.sameBinding(r.tgt)) {
		if r.mayBeBound() {
			r.unregister(r.tgt, "account changed")
		}
		r.tgtOK = false
	}
	r.failures = 0
	if err != nil {
		r.st = State{Status: StatusDisabled, LastError: err.Error(), LastErrorAt: r.m.cfg.Clock.Now()}
		r.log.Warn("upstream account disabled", "err", err)
		return false
	}
	if !r.tgtOK {
		r.bind, r.boundUntil, r.expires = newBinding(), time.Time{}, r.m.cfg.Expires
		r.st.Status, r.st.ExpiresAt = StatusRegistering, time.Time{}
	}
	r.tgt, r.tgtOK = t, true
	r.st.Registrar = t.registrar.String()
	return true
}

func (r *registration) mayBeBound() bool { return r.m.cfg.Clock.Now().Before(r.boundUntil) }

func (r *registration) schedule(d time.Duration) {
	r.cancelTimer()
	r.timer = r.m.cfg.Clock.NewTimer(d)
	r.st.NextAttempt = r.m.cfg.Clock.Now().Add(d)
}

func (r *registration) cancelTimer() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.st.NextAttempt = time.Time{}
}

func (r *registration) publish() {
	st := r.show()
	if r.m.onState != nil {
		r.m.onState(r.ext, st)
	}
}

// show makes the current state what State reports, without an event.
func (r *registration) show() State {
	st := r.st
	r.mu.Lock()
	r.state = st
	r.mu.Unlock()
	return st
}

// stop un-registers, when the PBX may hold a binding, as the registration
// ends (removal or shutdown).
func (r *registration) stop() {
	r.cancelTimer()
	why := "shutdown"
	r.mu.Lock()
	if r.removed {
		why = "account removed"
	}
	r.mu.Unlock()
	if r.tgtOK && r.mayBeBound() && r.unregister(r.tgt, why) {
		r.st.ExpiresAt = time.Time{}
	}
	r.st.Status = StatusDisabled
	r.publish()
}
