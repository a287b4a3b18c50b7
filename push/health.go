package push

import (
	"sync"
	"time"
)

// ProviderHealth is what Health reports for one provider. Healthy is only
// meaningful when Enabled: it turns false on a credential error or when the
// provider cannot be reached or keeps failing, and true again on the next
// success.
type ProviderHealth struct {
	Enabled     bool
	Healthy     bool
	LastError   string
	LastErrorAt time.Time
}

type healthBook struct {
	mu        sync.Mutex
	providers map[string]*providerState
}

type providerState struct {
	ProviderHealth
	failedAt         time.Time // monotonic, orders successes against failures
	credentialFailed bool
}

func newHealthBook(enabled map[string]sender) *healthBook {
	h := &healthBook{providers: map[string]*providerState{}}
	for _, provider := range []string{ProviderAPNs, ProviderAPNsSandbox, ProviderFCM} {
		_, on := enabled[provider]
		h.providers[provider] = &providerState{ProviderHealth: ProviderHealth{Enabled: on, Healthy: on}}
	}
	return h
}

// ok records a success of a request started at since. It clears only
// failures older than since (a slow warm-up does not hide a newer failure),
// and a credential failure only when the request proved our credentials
// (an APNs warm-up does not).
func (h *healthBook) ok(provider string, since time.Time, provedCredentials bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ph := h.providers[provider]
	if ph == nil || !ph.Enabled || ph.failedAt.After(since) || (ph.credentialFailed && !provedCredentials) {
		return
	}
	ph.Healthy, ph.credentialFailed = true, false
}

func (h *healthBook) fail(provider, lastError string, at time.Time, credential bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ph := h.providers[provider]
	if ph == nil || !ph.Enabled {
		return
	}
	ph.Healthy = false
	ph.LastError, ph.LastErrorAt = lastError, at
	ph.failedAt = time.Now()
	ph.credentialFailed = ph.credentialFailed || credential
}

func (h *healthBook) snapshot() map[string]ProviderHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]ProviderHealth, len(h.providers))
	for k, v := range h.providers {
		out[k] = v.ProviderHealth
	}
	return out
}
