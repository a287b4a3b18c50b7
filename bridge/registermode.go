package bridge

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/sip/upstream"
)

// RegisterMode keeps callwake's registrations to the PBX in step with the
// extensions in the store: every extension with PBX credentials is
// registered, re-registered when changed, and un-registered when removed.
// It also saves each registration's state to the store, where the API and
// the CLI read it.
type RegisterMode struct {
	manager          *upstream.Manager
	store            *db.Store
	log              *slog.Logger
	defaultRegistrar string
	interval         time.Duration
	trust            func(ctx context.Context, hosts []string)
	kick             chan struct{}

	mu         sync.Mutex
	transports map[string]string // ext -> transport toward its registrar
	saved      map[string]upstream.State
}

// RegisterModeConfig configures RegisterMode.
type RegisterModeConfig struct {
	Manager          *upstream.Manager
	Store            *db.Store
	Logger           *slog.Logger
	DefaultRegistrar string                                    // pbx.registrar
	Interval         time.Duration                             // store re-read and state save; default 2s
	Trust            func(ctx context.Context, hosts []string) // the registrars' hosts send the calls
}

// NewRegisterMode builds the register-mode loop; Run drives it.
func NewRegisterMode(cfg RegisterModeConfig) *RegisterMode {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &RegisterMode{manager: cfg.Manager, store: cfg.Store, log: cfg.Logger.With("component", "upstream"),
		defaultRegistrar: cfg.DefaultRegistrar, interval: cfg.Interval, trust: cfg.Trust,
		kick: make(chan struct{}, 1), transports: map[string]string{}}
}

// Changed asks for the extensions to be read again now (an API change);
// CLI changes, made by another process, are seen within Interval.
func (r *RegisterMode) Changed() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Transport is the transport callwake registers ext over, for its Contact.
func (r *RegisterMode) Transport(ext string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.transports[ext]; ok {
		return t
	}
	return registrarTransport(r.defaultRegistrar)
}

// Run registers until ctx ends, then un-registers every extension (bounded)
// and saves the final states.
func (r *RegisterMode) Run(ctx context.Context) error {
	r.sync(ctx)
	done := make(chan error, 1)
	go func() { done <- r.manager.Run(ctx) }()
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			err := <-done
			saveCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r.save(saveCtx)
			return err
		case <-r.kick:
			r.sync(ctx)
			r.save(ctx)
		case <-ticker.C:
			r.sync(ctx)
			r.save(ctx)
		}
	}
}

func (r *RegisterMode) sync(ctx context.Context) {
	exts, err := r.store.ListPBXAccounts(ctx)
	if err != nil {
		r.log.Error("reading extensions for register mode", "err", err)
		return
	}
	var accounts []upstream.Account
	transports := map[string]string{}
	hosts := map[string]struct{}{}
	for _, e := range exts {
		accounts = append(accounts, upstream.Account{Ext: e.Extension, Username: e.PBXUsername,
			Password: e.PBXPassword, Registrar: e.PBXRegistrar})
		registrar := e.PBXRegistrar
		if registrar == "" {
			registrar = r.defaultRegistrar
		}
		transports[e.Extension] = registrarTransport(registrar)
		if h := registrarHost(registrar); h != "" {
			hosts[h] = struct{}{}
		}
	}
	r.mu.Lock()
	r.transports = transports
	r.mu.Unlock()
	if r.trust != nil {
		r.trust(ctx, sortedKeys(hosts))
	}
	r.manager.Sync(accounts)
}

// save writes the states to the store when they changed.
func (r *RegisterMode) save(ctx context.Context) {
	states := r.manager.States()
	r.mu.Lock()
	same := maps.EqualFunc(states, r.saved, func(a, b upstream.State) bool { return a == b })
	r.mu.Unlock()
	if same {
		return
	}
	regs := make([]db.Registration, 0, len(states))
	for ext, st := range states {
		regs = append(regs, db.Registration{Extension: ext, Status: st.Status, Registrar: st.Registrar,
			ExpiresAt: st.ExpiresAt, LastSuccess: st.LastSuccess, LastError: st.LastError,
			LastErrorAt: st.LastErrorAt, NextAttempt: st.NextAttempt})
	}
	if err := r.store.SaveRegistrations(ctx, regs); err != nil {
		r.log.Error("saving registration states", "err", err)
		return
	}
	r.mu.Lock()
	r.saved = states
	r.mu.Unlock()
}

// registrarTransport is the transport a registrar URI asks for.
func registrarTransport(registrar string) string {
	var u sipgo.Uri
	if registrar == "" || sipgo.ParseUri(registrar, &u) != nil {
		return "udp"
	}
	if t, ok := u.UriParams.Get("transport"); ok && t != "" {
		return strings.ToLower(t)
	}
	if u.IsEncrypted() {
		return "tls"
	}
	return "udp"
}

func registrarHost(registrar string) string {
	var u sipgo.Uri
	if registrar == "" || sipgo.ParseUri(registrar, &u) != nil {
		return ""
	}
	return u.Host
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
