package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/callwake/callwake/internal/logging"
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a push, in Result.Outcome and Attempt.Outcome.
const (
	OutcomeDelivered = "delivered"  // the provider accepted the push
	OutcomeDeadToken = "dead_token" // the token is gone; the device was removed
	OutcomeFailed    = "failed"     // not accepted; see Reason and Err
	OutcomeExpired   = "expired"    // the ring deadline passed before a send
	OutcomeDisabled  = "disabled"   // no credentials for the provider: only logged
)

// Errors reported in Result.Err.
var (
	ErrClosed          = errors.New("push: pusher closed")
	ErrUnknownProvider = errors.New("push: unknown provider")
	ErrExpired         = errors.New("push: ring deadline passed before sending")
	ErrDisabled        = errors.New("push: provider disabled: no credentials")
)

// Target is one device to push.
type Target struct {
	DeviceID  int64  // store id, passed back in results and to Store
	Provider  string // ProviderAPNs, ProviderAPNsSandbox or ProviderFCM
	Token     string
	Topic     string // APNs: "<bundle-id>.voip"
	ProjectID string // FCM project id; default Options.FCM.ProjectID
}

// Result is the final answer for one target.
type Result struct {
	Target   Target
	Outcome  string        // one of the Outcome constants
	Reason   string        // provider's reason, e.g. "BadDeviceToken", "UNREGISTERED", "503"
	Status   int           // provider's HTTP status, when known
	Latency  time.Duration // from the first attempt to the final answer
	Attempts int           // requests sent to the provider
	Err      error
}

// Attempt is one request to a provider, as recorded in the Store.
type Attempt struct {
	DeviceID int64
	Provider string
	Type     string // payload type
	CallID   string
	SentAt   time.Time
	Latency  time.Duration
	Outcome  string // OutcomeDelivered, OutcomeDeadToken or OutcomeFailed
	Reason   string
	Status   int
}

// Store is what push needs from the database.
type Store interface {
	// RemoveDevice deletes a device whose token the provider reported dead.
	RemoveDevice(ctx context.Context, deviceID int64, reason string) error
	// RecordPushAttempt records every request sent to a provider.
	RecordPushAttempt(ctx context.Context, a Attempt) error
}

// storeTimeout bounds a Store call; it runs even when the call's context is
// already cancelled, so that a dead token is removed in any case.
const storeTimeout = 5 * time.Second

// warmInterval is how often connections are re-warmed and credentials
// refreshed, so that neither a TLS handshake nor a token signature lands on
// a call's path.
const warmInterval = 4 * time.Minute

// Pusher sends VoIP pushes through APNs and FCM. It is safe for concurrent
// use.
type Pusher struct {
	opts    Options
	store   Store
	log     *slog.Logger
	metrics *metrics
	health  *healthBook
	senders map[string]sender // enabled providers only

	stop      context.CancelFunc
	warmers   sync.WaitGroup
	mu        sync.RWMutex
	closed    bool
	closeOnce sync.Once
}

// sender is one provider endpoint with its long-lived client.
type sender interface {
	// send makes one attempt (FCM: firebase-admin may retry a 503 inside it;
	// those requests come back in attemptResult.earlier).
	send(ctx context.Context, t Target, p Payload, deadline time.Time) attemptResult
	// warm opens the connection and refreshes credentials ahead of use.
	warm(ctx context.Context) attemptResult
	close()
}

// New builds a Pusher. A provider without credentials is disabled (logged
// once here) and its pushes are only logged; invalid credentials are an
// error. Connections are opened in the background: an unreachable provider
// does not fail New. store may be nil (nothing recorded), logger may be nil
// (slog.Default), reg may be nil (metrics not registered).
func New(opts Options, store Store, logger *slog.Logger, reg prometheus.Registerer) (*Pusher, error) {
	opts.setDefaults()
	if logger == nil {
		logger = slog.Default()
	}
	if store == nil {
		store = nopStore{}
	}
	p := &Pusher{
		opts:    opts,
		store:   store,
		log:     logger.With("component", "push"),
		metrics: newMetrics(),
		senders: map[string]sender{},
	}
	prod, sandbox, err := newAPNsSenders(opts.APNs, opts.Now, p.log)
	if err != nil {
		return nil, err
	}
	if prod != nil {
		p.senders[ProviderAPNs] = prod
		p.senders[ProviderAPNsSandbox] = sandbox
	} else {
		p.log.Info("APNs pushes disabled: no credentials configured (push.apns.key_file or push.apns.cert_file); pushes are only logged",
			"providers", []string{ProviderAPNs, ProviderAPNsSandbox})
	}
	fcm, err := newFCMSender(opts.FCM, opts.Now, p.log)
	if err != nil {
		p.closeSenders()
		return nil, err
	}
	if fcm != nil {
		p.senders[ProviderFCM] = fcm
	} else {
		p.log.Info("FCM pushes disabled: no credentials configured (push.fcm.credentials_file); pushes are only logged",
			"providers", []string{ProviderFCM})
	}

	if reg != nil {
		if err := p.metrics.register(reg); err != nil {
			p.closeSenders()
			return nil, err
		}
	}

	p.health = newHealthBook(p.senders)
	ctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	for provider, s := range p.senders {
		p.warmers.Go(func() { p.keepWarm(ctx, provider, s) })
	}
	return p, nil
}

// Push sends payloadFor(target) to every target at once and returns when
// all are done, at the latest at deadline (the ring deadline): nothing is
// sent after it. Results are in the order of targets. payloadFor is called
// once per target, from the calling goroutine.
func (p *Pusher) Push(ctx context.Context, targets []Target, payloadFor func(Target) Payload, deadline time.Time) []Result {
	results := make([]Result, len(targets))
	if len(targets) == 1 {
		// One device, the usual case: nothing to wait for but itself.
		results[0] = p.pushOne(ctx, targets[0], payloadFor(targets[0]), deadline)
		return results
	}
	var wg sync.WaitGroup
	for i, t := range targets {
		payload := payloadFor(t)
		wg.Go(func() { results[i] = p.pushOne(ctx, t, payload, deadline) })
	}
	wg.Wait()
	return results
}

func (p *Pusher) pushOne(ctx context.Context, t Target, payload Payload, deadline time.Time) Result {
	ids := [...]slog.Attr{slog.Int64("device_id", t.DeviceID), slog.String("provider", t.Provider),
		slog.String("call_id", payload.CallID), slog.String("push_type", payload.Type)}
	log := pushLog{logger: p.log, ids: ids[:]}
	res := p.dispatch(ctx, t, payload, deadline, log)
	p.metrics.pushes.WithLabelValues(providerLabel(t.Provider), payload.Type, res.Outcome).Inc()

	var buf [5]slog.Attr
	attrs := append(buf[:0], slog.String("outcome", res.Outcome), slog.Int("attempts", res.Attempts), slog.Duration("latency", res.Latency))
	if res.Reason != "" {
		attrs = append(attrs, slog.String("reason", res.Reason))
	}
	switch res.Outcome {
	case OutcomeDelivered:
		log.write(slog.LevelDebug, "push delivered", attrs...)
	case OutcomeDeadToken:
		log.write(slog.LevelInfo, "push token dead: device removed", attrs...)
	case OutcomeFailed, OutcomeExpired:
		log.write(slog.LevelWarn, "push not delivered", append(attrs, slog.Any("err", res.Err))...)
	}
	return res
}

// pushLog writes the lines of one push: the push's ids, then the line's
// own attributes, as a logger made with With would write them. It makes
// no logger: under load, a logger for each push was a tenth of what a
// push allocated, for lines the info level mostly drops.
type pushLog struct {
	logger *slog.Logger
	ids    []slog.Attr
}

func (l pushLog) write(level slog.Level, msg string, attrs ...slog.Attr) {
	logging.Line(l.logger, level, msg, l.ids, attrs...)
}

func (p *Pusher) dispatch(ctx context.Context, t Target, payload Payload, deadline time.Time, log pushLog) Result {
	p.mu.RLock()
	closed := p.closed
	p.mu.RUnlock()
	if closed {
		return Result{Target: t, Outcome: OutcomeFailed, Err: ErrClosed}
	}
	switch t.Provider {
	case ProviderAPNs, ProviderAPNsSandbox, ProviderFCM:
	default:
		return Result{Target: t, Outcome: OutcomeFailed, Reason: "unknown_provider",
			Err: fmt.Errorf("%w %q", ErrUnknownProvider, t.Provider)}
	}
	s := p.senders[t.Provider]
	if s == nil {
		p.logDisabled(log, t, payload, deadline)
		return Result{Target: t, Outcome: OutcomeDisabled, Err: ErrDisabled}
	}
	if !p.opts.Now().Before(deadline) {
		return Result{Target: t, Outcome: OutcomeExpired, Err: ErrExpired}
	}
	return p.deliver(ctx, s, t, payload, deadline, log)
}

// logDisabled logs the push a disabled provider would have sent, so that a
// fresh install without credentials still shows what happens.
func (p *Pusher) logDisabled(log pushLog, t Target, payload Payload, deadline time.Time) {
	attrs := []slog.Attr{slog.String("token", tokenHint(t.Token)), slog.Time("deadline", deadline)}
	if t.Provider == ProviderFCM {
		attrs = append(attrs, slog.String("project_id", t.ProjectID), slog.Any("data", FCMData(payload)))
	} else {
		attrs = append(attrs, slog.String("topic", t.Topic), slog.String("body", string(APNsBody(payload))))
	}
	log.write(slog.LevelInfo, "push not sent: provider disabled (no credentials)", attrs...)
}

// Health reports every provider, keyed by provider name.
func (p *Pusher) Health() map[string]ProviderHealth { return p.health.snapshot() }

// Close stops the keep-warm loops and closes idle connections. Pushes after
// Close fail with ErrClosed. It is idempotent.
func (p *Pusher) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.stop()
		p.warmers.Wait()
		p.closeSenders()
	})
	return nil
}

func (p *Pusher) closeSenders() {
	for _, s := range p.senders {
		s.close()
	}
}

// keepWarm warms a provider at once and then every warmInterval.
func (p *Pusher) keepWarm(ctx context.Context, provider string, s sender) {
	ticker := time.NewTicker(warmInterval)
	defer ticker.Stop()
	log := pushLog{logger: p.log, ids: []slog.Attr{slog.String("provider", provider)}}
	for {
		wctx, cancel := context.WithTimeout(ctx, p.opts.AttemptTimeout)
		started := time.Now()
		r := s.warm(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch r.class {
		case classDelivered:
			p.health.ok(provider, started, r.provedCredentials)
			log.write(slog.LevelDebug, "push provider connection warm")
		case classCredential:
			p.noteCredentialError(provider, r, log)
		default:
			p.health.fail(provider, r.describe(), p.opts.Now(), false)
			log.write(slog.LevelWarn, "push provider not reachable; will retry", slog.String("reason", r.reason), slog.Any("err", r.err))
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return
		}
	}
}

func (p *Pusher) noteCredentialError(provider string, r attemptResult, log pushLog) {
	p.metrics.credentialErrors.WithLabelValues(provider).Inc()
	p.health.fail(provider, r.describe(), p.opts.Now(), true)
	log.write(slog.LevelError, "push provider rejected our credentials", slog.Int("status", r.status), slog.String("reason", r.reason),
		slog.Any("err", r.err))
}

// tokenHint shortens a device token for logs.
func tokenHint(token string) string {
	if len(token) <= 8 {
		return token
	}
	return token[:8] + "…"
}

type nopStore struct{}

func (nopStore) RemoveDevice(context.Context, int64, string) error { return nil }
func (nopStore) RecordPushAttempt(context.Context, Attempt) error  { return nil }
