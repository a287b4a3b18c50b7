package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/internal/logging"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/sip"
)

// Pusher sends pushes; *push.Pusher implements it.
type Pusher interface {
	Push(ctx context.Context, targets []push.Target, payloadFor func(push.Target) push.Payload, deadline time.Time) []push.Result
}

// SIP is what the bridge needs of the SIP service.
type SIP interface {
	Invite(ctx context.Context, p sip.InviteParams) (*sip.OutboundLeg, error)
}

// Bindings lists the phones' current registrations of an extension.
type Bindings interface {
	Bindings(ext string) []sip.Binding
}

// Config configures the bridge.
type Config struct {
	Store    *db.Store
	Pusher   Pusher
	SIP      SIP
	Bindings Bindings

	Domain         string // registrar domain: the To of INVITEs to phones
	RegistrarURI   string // the "registrar" of push payloads
	RingTimeout    time.Duration
	WakeTimeout    time.Duration // 0: wait for RingTimeout
	TimeoutStatus  int
	BusyOnBusy     bool
	MaxDevices     int
	ForwardHeaders []string
	DeclineBaseURL string // public URL of the HTTP server
	DeclineSecret  []byte

	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Bridge joins the PBX's calls, the pushes and the woken phones. It
// implements sip.CallHandler and sip.RegisterHandler.
type Bridge struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	forkHeaderNames []string // the INVITE's headers a phone's INVITE carries

	mu    sync.Mutex
	calls map[string]*call              // by callwake call id
	byExt map[string]map[*call]struct{} // calls that ring or talk, by extension

	draining atomic.Bool
	changed  chan struct{} // closed and replaced whenever a call ends
}

// New builds the bridge.
func New(cfg Config) (*Bridge, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TimeoutStatus == 0 {
		cfg.TimeoutStatus = sipgo.StatusRequestTerminated
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = 5
	}
	if len(cfg.DeclineSecret) < 16 {
		return nil, errors.New("bridge: decline secret must be at least 16 bytes")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Bridge{
		cfg:             cfg,
		log:             cfg.Logger.With("component", "bridge"),
		metrics:         m,
		forkHeaderNames: append([]string{"P-Asserted-Identity"}, cfg.ForwardHeaders...),
		calls:           map[string]*call{},
		byExt:           map[string]map[*call]struct{}{},
		changed:         make(chan struct{}),
	}, nil
}

// Drain makes new INVITEs get 503; ringing calls go on.
func (b *Bridge) Drain() { b.draining.Store(true) }

// Draining reports whether Drain was called.
func (b *Bridge) Draining() bool { return b.draining.Load() }

// Wait blocks until every call has ended, or ctx ends.
func (b *Bridge) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		n, changed := len(b.calls), b.changed
		b.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ActiveCalls is how many calls ring or talk.
func (b *Bridge) ActiveCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

// OnInvite implements sip.CallHandler.
func (b *Bridge) OnInvite(in *sip.InboundCall) {
	ext := in.Extension()
	// The lookups' deadline ends with them: the call that follows can last
	// an hour, and must not keep a timer alive for nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	reject := func(code int, reason, outcome string) {
		if err := in.Reject(code, reason); err != nil {
			b.logInvite(in, slog.LevelDebug, "rejecting INVITE", slog.Any("err", err))
		}
		in.Release()
		b.metrics.calls.WithLabelValues(outcome).Inc()
		b.logInvite(in, slog.LevelInfo, "call refused", slog.Int("status", code), slog.String("reason", reason))
	}
	if ext == "" {
		reject(sipgo.StatusNotFound, "Not Found (no extension in Request-URI)", outcomeNotFound)
		return
	}
	entry, err := b.cfg.Store.Lookup(ctx, ext)
	cancel()
	if err != nil {
		if errors.Is(err, db.ErrNotFound) {
			reject(sipgo.StatusNotFound, "Not Found", outcomeNotFound)
			return
		}
		b.logInvite(in, slog.LevelError, "looking up extension", slog.Any("err", err))
		reject(sipgo.StatusInternalServerError, "Server Internal Error", outcomeFailed)
		return
	}
	if b.cfg.BusyOnBusy && b.busy(ext) {
		reject(sipgo.StatusBusyHere, "Busy Here", outcomeBusy)
		return
	}
	devices := entry.Devices
	bindings := b.cfg.Bindings.Bindings(ext)
	if len(devices) == 0 && len(bindings) == 0 {
		reject(sipgo.StatusTemporarilyUnavailable, "Temporarily Unavailable (no device)", outcomeUnavailable)
		return
	}

	c := newCall(b, in, devices)
	b.mu.Lock()
	b.calls[c.id] = c
	if b.byExt[ext] == nil {
		b.byExt[ext] = map[*call]struct{}{}
	}
	b.byExt[ext][c] = struct{}{}
	b.mu.Unlock()
	b.metrics.active.Inc()
	c.start(bindings)
	c.own()
}

// logInvite writes a line about an INVITE that has no call: its ids, then
// attrs, as a logger made with With would, without making one (most
// INVITEs become calls, which log with their own ids).
func (b *Bridge) logInvite(in *sip.InboundCall, level slog.Level, msg string, attrs ...slog.Attr) {
	logging.Line(b.log, level, msg, []slog.Attr{slog.String("sip_call_id", in.CallID()),
		slog.String("ext", in.Extension())}, attrs...)
}

func (b *Bridge) busy(ext string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byExt[ext]) > 0
}

// release takes an ended call out of the extension's set: a phone that
// registers now is not rung, and the extension is no longer busy.
func (b *Bridge) release(c *call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if set := b.byExt[c.ext]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(b.byExt, c.ext)
		}
	}
}

// forget drops a call whose owner goroutine has returned.
func (b *Bridge) forget(c *call) {
	b.release(c)
	b.mu.Lock()
	delete(b.calls, c.id)
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	b.metrics.active.Dec()
}

func (b *Bridge) lookup(id string) *call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[id]
}

// ringing lists the calls of ext a registering phone may join.
func (b *Bridge) ringing(ext string) []*call {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*call, 0, len(b.byExt[ext]))
	for c := range b.byExt[ext] {
		out = append(out, c)
	}
	return out
}

// OnRegister implements sip.RegisterHandler: the phone's push address is
// stored (or removed on logout) before the REGISTER is answered.
func (b *Bridge) OnRegister(ctx context.Context, ev sip.RegisterEvent) error {
	if ev.Removed {
		for _, t := range ev.Targets {
			removed, err := b.cfg.Store.DeleteDeviceByToken(ctx, ev.Ext, t.Provider, t.Token)
			if err != nil {
				return fmt.Errorf("removing device: %w", err)
			}
			if removed {
				b.log.Info("device logged out", "ext", ev.Ext, "provider", t.Provider)
			}
		}
		return nil
	}
	for _, t := range ev.Targets {
		up, err := b.cfg.Store.UpsertDevice(ctx, db.Device{Extension: ev.Ext, Provider: t.Provider, Token: t.Token,
			Topic: t.Topic, ProjectID: t.ProjectID, Instance: ev.Binding.Instance}, b.cfg.MaxDevices)
		if err != nil {
			return &sip.StatusError{Code: sipgo.StatusBadRequest, Reason: "Bad Push Parameters", Err: err}
		}
		for _, e := range up.Evicted {
			b.log.Info("device evicted: too many devices", "ext", ev.Ext, "device_id", e.ID)
		}
	}
	// A binding whose token changed without +sip.instance: the old token is
	// the same app install, now dead.
	for _, old := range ev.PreviousTargets {
		if !containsToken(ev.Targets, old.Token) && len(ev.Targets) > 0 {
			if _, err := b.cfg.Store.DeleteDeviceByToken(ctx, ev.Ext, old.Provider, old.Token); err != nil {
				return fmt.Errorf("replacing device token: %w", err)
			}
		}
	}
	return nil
}

// AfterRegister implements sip.AfterRegisterHandler: a phone registered
// while its extension rings gets the call now.
func (b *Bridge) AfterRegister(ev sip.RegisterEvent) {
	if ev.Removed {
		return
	}
	for _, c := range b.ringing(ev.Ext) {
		c.send(evRegister{binding: ev.Binding, targets: ev.Targets})
	}
}

func containsToken(ts []sip.PushTarget, token string) bool {
	for _, t := range ts {
		if strings.EqualFold(t.Token, token) {
			return true
		}
	}
	return false
}

// newCallID is a UUIDv7: in time order, so that the call log's inserts go
// to the end of its id indexes instead of random pages of them (half the
// journal's CPU per call, db's BenchmarkJournalCalls), and still 74 random
// bits. The contract asks for a UUID (CallKit's).
func newCallID() string { return uuid.Must(uuid.NewV7()).String() }

// Attach gives the bridge the SIP side, which is built after it (the SIP
// service calls the bridge, and the bridge sends through the service), and
// the "registrar" of push payloads, known once the listeners are bound.
func (b *Bridge) Attach(s SIP, bindings Bindings, registrarURI string) {
	b.cfg.SIP, b.cfg.Bindings, b.cfg.RegistrarURI = s, bindings, registrarURI
}

// PhoneCredentials implements sip.CredentialStore from the store.
func (b *Bridge) PhoneCredentials(ctx context.Context, ext string) (sip.Credentials, bool, error) {
	e, err := b.cfg.Store.Lookup(ctx, ext)
	if errors.Is(err, db.ErrNotFound) {
		return sip.Credentials{}, false, nil
	}
	if err != nil {
		return sip.Credentials{}, false, err
	}
	x := e.Extension
	return sip.Credentials{HA1MD5: x.HA1MD5, HA1SHA256: x.HA1SHA256, Realm: x.Realm}, true, nil
}
