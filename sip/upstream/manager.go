package upstream

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Statuses of a registration.
const (
	StatusRegistered  = "registered"  // the PBX holds a binding (until ExpiresAt)
	StatusRegistering = "registering" // no answer yet: the first REGISTER is pending
	StatusFailing     = "failing"     // the last attempt failed; retrying at NextAttempt
	StatusDisabled    = "disabled"    // not trying: bad account config, or stopped
)

// State is what is known of one extension's registration at the PBX.
type State struct {
	Status      string
	Registrar   string    // the registrar URI in use
	ExpiresAt   time.Time // end of the binding last granted
	LastSuccess time.Time
	LastError   string // why the last failed attempt failed; kept after a success
	LastErrorAt time.Time
	NextAttempt time.Time // next REGISTER (refresh or retry); zero if none
}

// Manager keeps callwake registered at the PBX as each Account.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu        sync.Mutex
	regs      map[string]*registration // by extension
	leaving   map[string]*registration // removed, still un-registering
	runCtx    context.Context          // nil until Run
	stopped   bool                     // Run is shutting down
	nextStart time.Time                // earliest first REGISTER of the next new account
	wg        sync.WaitGroup

	onState func(ext string, st State) // tests: every published state
}

// New checks cfg and makes a Manager. Nothing is sent before Run.
func New(cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "upstream"),
		regs:    map[string]*registration{},
		leaving: map[string]*registration{},
	}
	metrics, err := newMetrics(cfg.Registerer, m)
	if err != nil {
		return nil, err
	}
	m.metrics = metrics
	return m, nil
}

// Sync makes accounts the set of registrations: new ones are registered,
// changed ones re-registered (after removing the old binding when the
// registrar or username changed), removed ones un-registered. It does not
// block on the network and may be called at any time, before or during Run.
func (m *Manager) Sync(accounts []Account) {
	want := make(map[string]Account, len(accounts))
	for _, acc := range accounts {
		if acc.Ext == "" {
			m.log.Warn("ignoring an upstream account without extension", "username", acc.Username)
			continue
		}
		want[acc.Ext] = acc
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for ext, r := range m.regs {
		if _, ok := want[ext]; !ok {
			delete(m.regs, ext)
			if r.remove() {
				m.leaving[ext] = r
			}
		}
	}
	for _, ext := range slices.Sorted(maps.Keys(want)) {
		if r, ok := m.regs[ext]; ok {
			r.update(want[ext])
			continue
		}
		r := newRegistration(m, want[ext], m.leaving[ext])
		m.regs[ext] = r
		if m.runCtx != nil {
			m.start(r)
		}
	}
}

// Run registers every account, keeps the registrations fresh and follows
// Sync until ctx ends; then it un-registers every binding that may exist,
// all at once, within Config.ShutdownTimeout, and returns.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.runCtx != nil {
		m.mu.Unlock()
		return errors.New("upstream: Run called twice")
	}
	m.runCtx = ctx
	for _, ext := range slices.Sorted(maps.Keys(m.regs)) {
		m.start(m.regs[ext])
	}
	n := len(m.regs)
	m.mu.Unlock()
	m.log.Info("upstream registrations starting", "accounts", n)

	<-ctx.Done()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	start := time.Now()
	m.wg.Wait()
	m.log.Info("upstream registrations stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// start runs r's goroutine, its first REGISTER in the next free start slot.
// m.mu is held.
func (m *Manager) start(r *registration) {
	if m.stopped {
		return
	}
	m.wg.Add(1)
	r.start(m.runCtx, m.startDelay())
}

// startDelay hands out start slots StartInterval apart, so that many new
// accounts do not register in one burst. m.mu is held.
func (m *Manager) startDelay() time.Duration {
	now := m.cfg.Clock.Now()
	if m.nextStart.Before(now) {
		m.nextStart = now
	}
	d := m.nextStart.Sub(now)
	m.nextStart = m.nextStart.Add(m.cfg.StartInterval)
	return d
}

// slot is startDelay for a registration's goroutine.
func (m *Manager) slot() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.startDelay()
}

// left is called by a registration's goroutine as it ends.
func (m *Manager) left(r *registration) {
	m.mu.Lock()
	if m.leaving[r.ext] == r {
		delete(m.leaving, r.ext)
	}
	m.mu.Unlock()
	m.wg.Done()
}

// State is the registration state of an extension, if it has an account.
func (m *Manager) State(ext string) (State, bool) {
	m.mu.Lock()
	r, ok := m.regs[ext]
	m.mu.Unlock()
	if !ok {
		return State{}, false
	}
	return r.snapshot(), true
}

// States are the registration states of every account, by extension.
func (m *Manager) States() map[string]State {
	m.mu.Lock()
	regs := slices.Collect(maps.Values(m.regs))
	m.mu.Unlock()
	states := make(map[string]State, len(regs))
	for _, r := range regs {
		states[r.ext] = r.snapshot()
	}
	return states
}
