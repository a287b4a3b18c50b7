package push

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"
)

// freshTokens fetches a new access token on every call; caching is left to
// ReuseTokenSourceWithExpiry, which can refresh early (jwt.Config's own
// cache refreshes only 10 s before expiry, on a call's path).
type freshTokens struct {
	cfg *jwt.Config
	ctx context.Context
}

func (f freshTokens) Token() (*oauth2.Token, error) { return f.cfg.TokenSource(f.ctx).Token() }

func newFCMTransport(base *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if base != nil {
		t.TLSClientConfig = base.Clone()
	}
	t.ForceAttemptHTTP2 = true
	t.IdleConnTimeout = 0 // kept open by the keep-warm loop; pings find dead ones
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second}
	return t
}

// fcmAuthTransport adds the OAuth2 bearer and traces every request, so that
// requests firebase-admin retries on its own are measured and recorded too.
type fcmAuthTransport struct {
	tokens oauth2.TokenSource
	base   http.RoundTripper
	now    func() time.Time
}

func (t *fcmAuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	trace, _ := req.Context().Value(traceKey{}).(*sendTrace)
	tok, err := t.tokens.Token()
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		trace.setAuthError(err)
		return nil, fmt.Errorf("fetch FCM access token: %w", err)
	}
	authed := req.Clone(req.Context())
	tok.SetAuthHeader(authed)
	sentAt, start := t.now(), time.Now()
	resp, err := t.base.RoundTrip(authed)
	tr := tracedRequest{sentAt: sentAt, latency: time.Since(start), err: err}
	if resp != nil {
		tr.status = resp.StatusCode
	}
	trace.add(tr)
	return resp, err
}

type traceKey struct{}

func withTrace(ctx context.Context, t *sendTrace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// sendTrace collects what happened under one firebase-admin Send. A nil
// trace (a request made outside send) records nothing.
type sendTrace struct {
	mu       sync.Mutex
	requests []tracedRequest
	authErr  error
}

type tracedRequest struct {
	sentAt  time.Time
	latency time.Duration
	status  int
	err     error
}

func (t *sendTrace) add(r tracedRequest) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests = append(t.requests, r)
}

func (t *sendTrace) setAuthError(err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.authErr = err
}

func (t *sendTrace) authError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.authErr
}

func (t *sendTrace) lastError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.requests); n > 0 {
		return t.requests[n-1].err
	}
	return nil
}

// result attaches the traced requests to the final answer: the last request
// is the answer's, the earlier ones (retried by firebase-admin) were failures.
func (t *sendTrace) result(r attemptResult) attemptResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.requests)
	if n == 0 {
		return r
	}
	last := t.requests[n-1]
	r.sentAt, r.latency = last.sentAt, last.latency
	for _, e := range t.requests[:n-1] {
		earlier := attemptResult{class: classRetryable, status: e.status, reason: strconv.Itoa(e.status), sentAt: e.sentAt, latency: e.latency}
		if e.err != nil {
			earlier = transportError(e.err)
			earlier.sentAt, earlier.latency = e.sentAt, e.latency
		}
		r.earlier = append(r.earlier, earlier)
	}
	return r
}
