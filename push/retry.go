package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"
)

// errClass is what an answer from a provider means for the device and for
// what happens next.
type errClass int

const (
	classDelivered  errClass = iota
	classDeadToken           // token gone: remove the device
	classRetryable           // 429, 5xx, timeout, dropped connection
	classCredential          // our credentials were refused
	classPermanent           // this request will never succeed (bad topic, …)
)

// attemptResult is the answer to one request to a provider.
type attemptResult struct {
	class      errClass
	status     int    // HTTP status, 0 when there was no answer
	reason     string // provider's reason, else a short word ("timeout", "network")
	err        error
	retry      bool          // a credential error worth one more try (fresh APNs JWT)
	retryAfter time.Duration // provider's Retry-After, if any

	// providerFault marks a permanent error that is the provider's side or
	// ours rather than the device's (TLS verification): Health goes red.
	providerFault bool
	// provedCredentials: the provider authenticated this request (any
	// answer to a push; an FCM warm-up; not an APNs warm-up).
	provedCredentials bool

	// sentAt and latency, when set by the sender, replace the engine's own
	// measurement (the last of several requests made by one send).
	sentAt  time.Time
	latency time.Duration
	started time.Time // monotonic start of the send, to order health news
	// earlier holds requests made inside one send before this one
	// (firebase-admin retries a 503 itself); each is recorded too.
	earlier []attemptResult
}

func (r attemptResult) outcome() string {
	switch r.class {
	case classDelivered:
		return OutcomeDelivered
	case classDeadToken:
		return OutcomeDeadToken
	}
	return OutcomeFailed
}

func (r attemptResult) describe() string {
	if r.err != nil {
		return r.err.Error()
	}
	if r.status != 0 {
		return strconv.Itoa(r.status) + " " + r.reason
	}
	return r.reason
}

// deliver sends one push, retrying retryable errors with jittered
// exponential back-off while the ring window lasts. No request starts at or
// after deadline, and none outlives it.
func (p *Pusher) deliver(ctx context.Context, s sender, t Target, payload Payload, deadline time.Time, log pushLog) Result {
	// deadline is on the injected clock; contexts and timers run on the
	// real one, so carry over the time that is left.
	ringCtx, cancel := context.WithTimeout(ctx, deadline.Sub(p.opts.Now()))
	defer cancel()

	start := time.Now()
	res := Result{Target: t}
	wait := backoff{next: p.opts.RetryBackoff, max: p.opts.MaxRetryBackoff}
	for {
		r := p.attempt(ctx, ringCtx, s, t, payload, deadline, log)
		res.Attempts += len(r.earlier) + 1
		res.Status, res.Reason, res.Err = r.status, r.reason, r.err
		res.Latency = time.Since(start)
		if outcome, final := p.settle(ctx, t, r, log); final {
			res.Outcome = outcome
			if outcome == OutcomeDelivered {
				res.Err = nil
			}
			return res
		}
		if !p.waitToRetry(ringCtx, wait.delay(r.retryAfter), deadline) {
			res.Outcome, res.Latency = OutcomeFailed, time.Since(start)
			if ctx.Err() != nil {
				// The call ended: that says nothing about the provider.
				res.Err = fmt.Errorf("push: stopped after %d attempts: %w", res.Attempts, ctx.Err())
				return res
			}
			p.health.fail(t.Provider, r.describe(), p.opts.Now(), false)
			res.Err = fmt.Errorf("push: gave up at the ring deadline after %d attempts: %s", res.Attempts, r.describe())
			if r.err != nil {
				res.Err = fmt.Errorf("push: gave up at the ring deadline after %d attempts: %w", res.Attempts, r.err)
			}
			return res
		}
		log.write(slog.LevelDebug, "push attempt failed; retrying", slog.String("reason", r.reason), slog.Int("status", r.status), slog.Any("err", r.err))
	}
}

// attempt makes one send bounded by AttemptTimeout and the ring, and
// records it (with any requests firebase-admin retried inside it).
func (p *Pusher) attempt(ctx, ringCtx context.Context, s sender, t Target, payload Payload, deadline time.Time, log pushLog) attemptResult {
	attemptCtx, cancel := context.WithTimeout(ringCtx, p.opts.AttemptTimeout)
	defer cancel()
	sentAt, start := p.opts.Now(), time.Now()
	r := s.send(attemptCtx, t, payload, deadline)
	if r.sentAt.IsZero() {
		r.sentAt, r.latency = sentAt, time.Since(start)
	}
	r.started = start
	if r.status == 0 && ringCtx.Err() != nil && r.class != classDelivered {
		r.class, r.reason = classRetryable, contextReason(ctx)
	}
	for _, e := range r.earlier {
		p.recordAttempt(ctx, t, payload, e, log)
	}
	p.recordAttempt(ctx, t, payload, r, log)
	return r
}

// settle acts on an answer and says whether it is final.
func (p *Pusher) settle(ctx context.Context, t Target, r attemptResult, log pushLog) (outcome string, final bool) {
	switch r.class {
	case classDelivered:
		p.health.ok(t.Provider, r.started, true)
		return OutcomeDelivered, true
	case classDeadToken:
		p.health.ok(t.Provider, r.started, true)
		p.removeDevice(ctx, t, r, log)
		return OutcomeDeadToken, true
	case classCredential:
		p.noteCredentialError(t.Provider, r, log)
		return OutcomeFailed, !r.retry
	case classPermanent:
		if r.providerFault {
			p.health.fail(t.Provider, r.describe(), p.opts.Now(), false)
		}
		return OutcomeFailed, true
	}
	return OutcomeFailed, false
}

// waitToRetry waits delay and reports whether a retry may go: not when the
// wait would reach the deadline (nothing is sent at or after it), nor when
// the ring ends first.
func (p *Pusher) waitToRetry(ringCtx context.Context, delay time.Duration, deadline time.Time) bool {
	if !p.opts.Now().Add(delay).Before(deadline) {
		return false
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ringCtx.Done():
		return false
	}
}

func (p *Pusher) recordAttempt(ctx context.Context, t Target, payload Payload, r attemptResult, log pushLog) {
	p.metrics.sendSeconds.WithLabelValues(t.Provider).Observe(r.latency.Seconds())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	err := p.store.RecordPushAttempt(sctx, Attempt{
		DeviceID: t.DeviceID,
		Provider: t.Provider,
		Type:     payload.Type,
		CallID:   payload.CallID,
		SentAt:   r.sentAt,
		Latency:  r.latency,
		Outcome:  r.outcome(),
		Reason:   r.reason,
		Status:   r.status,
	})
	if err != nil {
		log.write(slog.LevelError, "recording push attempt", slog.Any("err", err))
	}
}

func (p *Pusher) removeDevice(ctx context.Context, t Target, r attemptResult, log pushLog) {
	p.metrics.deadTokens.WithLabelValues(t.Provider).Inc()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := p.store.RemoveDevice(sctx, t.DeviceID, r.reason); err != nil {
		log.write(slog.LevelError, "removing device with dead push token", slog.String("reason", r.reason), slog.Any("err", err))
	}
}

// contextReason says why the ring context ended: the call's context was
// cancelled, or the ring deadline came.
func contextReason(callCtx context.Context) string {
	if callCtx.Err() != nil {
		return "cancelled"
	}
	return "deadline"
}

// backoff is exponential back-off with equal jitter: each wait is between
// half and all of the current step.
type backoff struct{ next, max time.Duration }

func (b *backoff) delay(retryAfter time.Duration) time.Duration {
	step := b.next
	b.next = min(2*b.next, b.max)
	d := step/2 + rand.N(step/2+1)
	return max(d, retryAfter)
}

// transportError classifies a request that got no HTTP answer.
func transportError(err error) attemptResult {
	r := attemptResult{class: classRetryable, reason: "network", err: err}
	var opErr *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		r.reason = "timeout"
	case errors.Is(err, context.Canceled):
		r.reason = "cancelled"
	case isCertificateVerificationError(err):
		r.class, r.reason, r.providerFault = classPermanent, "tls_verify", true
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// The provider refused our TLS handshake: with certificate auth,
		// that is the client certificate.
		r.class, r.reason = classCredential, "tls_refused"
	}
	return r
}

func isCertificateVerificationError(err error) bool {
	var verifyErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verifyErr) || errors.As(err, &unknownAuthority) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}

// parseRetryAfter reads a Retry-After header given in seconds.
func parseRetryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 0 {
		return 0
	}
	return time.Duration(secs) * time.Second
}
