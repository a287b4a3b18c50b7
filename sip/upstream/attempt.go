package upstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// result is how a REGISTER attempt ended; it labels the attempts metric.
type result string

const (
	resultSuccess    result = "success"
	resultAuthFailed result = "auth_failed"        // challenged again: wrong password
	resultRejected   result = "rejected"           // 403, 404
	resultTooBrief   result = "interval_too_brief" // 423
	resultError      result = "error"              // any other answer, transport errors
	resultTimeout    result = "timeout"            // no final answer in time
	resultCancelled  result = "cancelled"          // Sync or shutdown cut it short; not counted
)

// statusIntervalTooBrief is 423 (RFC 3261 21.4.17); sipgo has no name for it.
const statusIntervalTooBrief = 423

var results = []result{resultSuccess, resultAuthFailed, resultRejected, resultTooBrief, resultError, resultTimeout}

// attempt registers (or refreshes) the binding and returns the wait until
// the next attempt; false when there is none to schedule because the
// attempt was cut short by Sync or shutdown.
func (r *registration) attempt() (time.Duration, bool) {
	ctx, cancel := context.WithCancel(r.ctx)
	r.mu.Lock()
	r.cancelAttempt = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cancelAttempt = nil
		r.mu.Unlock()
		cancel()
	}()

	clock := r.m.cfg.Clock
	for retried := false; ; retried = true {
		requested := seconds(r.expires)
		sentAt := clock.Now()
		res, err := r.m.exchange(ctx, &r.bind, r.ext, r.tgt, requested)
		kind, err := classify(res, err, r.m.cfg.RequestTimeout)
		if res == nil {
			// No final answer: the REGISTER may have been taken all the same.
			r.boundUntil = later(r.boundUntil, sentAt.Add(r.expires))
		}
		if kind == resultCancelled {
			return 0, false
		}
		r.m.metrics.attempt(kind)

		switch kind {
		case resultSuccess:
			granted := time.Duration(grantedExpiry(res, r.m.cfg.Contact(r.ext), requested)) * time.Second
			if granted <= 0 {
				return r.failed(resultError, fmt.Errorf("%d %s granted no time to our Contact", res.StatusCode, res.Reason), res), true
			}
			return r.registered(granted), true
		case resultTooBrief:
			minExpires, ok := intHeader(res, "Min-Expires")
			if !retried && ok && minExpires > requested {
				r.log.Info("registrar wants a longer expiry", "registrar", r.st.Registrar, "asked", requested, "min_expires", minExpires)
				r.expires = time.Duration(minExpires) * time.Second
				continue
			}
			return r.failed(resultError, fmt.Errorf("%s with unusable Min-Expires %q", err, headerValue(res, "Min-Expires")), res), true
		default:
			return r.failed(kind, err, res), true
		}
	}
}

// classify sorts the outcome of an exchange; err says why it failed.
func classify(res *sip.Response, err error, timeout time.Duration) (result, error) {
	switch {
	case errors.Is(err, errCredentialsRejected):
		return resultAuthFailed, err
	case errors.Is(err, context.Canceled):
		return resultCancelled, err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, sip.ErrTransactionTimeout):
		return resultTimeout, fmt.Errorf("no answer within %s: %w", timeout, err)
	case err != nil:
		return resultError, err
	case res.IsSuccess():
		return resultSuccess, nil
	}
	err = fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	switch res.StatusCode {
	case sip.StatusForbidden, sip.StatusNotFound:
		return resultRejected, err
	case statusIntervalTooBrief:
		return resultTooBrief, err
	}
	return resultError, err
}

func (r *registration) registered(granted time.Duration) time.Duration {
	now := r.m.cfg.Clock.Now()
	wasRegistered := r.st.Status == StatusRegistered
	r.failures = 0
	r.boundUntil = now.Add(granted)
	r.st.Status, r.st.ExpiresAt, r.st.LastSuccess = StatusRegistered, r.boundUntil, now
	d := r.m.cfg.refreshDelay(granted)
	if wasRegistered {
		r.log.Debug("upstream registration refreshed", "registrar", r.st.Registrar, "expires", granted, "refresh_in", d)
	} else {
		r.log.Info("registered at the PBX", "registrar", r.st.Registrar, "expires", granted, "refresh_in", d)
	}
	return d
}

// failed records a failed attempt and returns the back-off: long after a
// rejection or wrong password (a PBX bans addresses that keep failing
// auth), exponential otherwise.
func (r *registration) failed(kind result, err error, res *sip.Response) time.Duration {
	r.failures++
	r.st.Status = StatusFailing
	r.st.LastError, r.st.LastErrorAt = err.Error(), r.m.cfg.Clock.Now()
	var d time.Duration
	if kind == resultAuthFailed || kind == resultRejected {
		d = r.m.cfg.rejectedDelay()
	} else {
		var retryAfter int
		if res != nil {
			retryAfter, _ = intHeader(res, "Retry-After")
		}
		d = r.m.cfg.retryDelay(r.failures, time.Duration(retryAfter)*time.Second)
	}
	r.log.Warn("upstream registration failed", "registrar", r.st.Registrar, "result", string(kind),
		"err", err, "failures", r.failures, "retry_in", d)
	return d
}

// unregister removes our binding (Expires: 0, same Call-ID, next CSeq),
// within Config.ShutdownTimeout even when the registration is ending.
func (r *registration) unregister(t target, why string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.m.cfg.ShutdownTimeout)
	defer cancel()
	res, err := r.m.exchange(ctx, &r.bind, r.ext, t, 0)
	if err == nil && !res.IsSuccess() {
		err = fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	if err != nil {
		r.log.Warn("upstream un-REGISTER failed", "registrar", t.registrar.String(), "why", why, "err", err)
		return false
	}
	r.boundUntil = time.Time{}
	r.log.Info("un-registered from the PBX", "registrar", t.registrar.String(), "why", why)
	return true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func headerValue(res *sip.Response, name string) string {
	if h := res.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}
