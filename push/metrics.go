package push

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the push component's Prometheus metrics.
type metrics struct {
	pushes           *prometheus.CounterVec   // final result per target
	sendSeconds      *prometheus.HistogramVec // every request to a provider
	deadTokens       *prometheus.CounterVec
	credentialErrors *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callwake_push_total",
			Help: "Pushes by provider, payload type and final result (delivered, dead_token, failed, expired, disabled).",
		}, []string{"provider", "type", "result"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "callwake_push_send_seconds",
			Help:    "Time for one request to a push provider to be answered.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"provider"}),
		deadTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callwake_push_dead_tokens_total",
			Help: "Device tokens the provider reported dead; each device was removed.",
		}, []string{"provider"}),
		credentialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callwake_push_credential_errors_total",
			Help: "Requests a provider refused because of our credentials.",
		}, []string{"provider"}),
	}
	for _, provider := range []string{ProviderAPNs, ProviderAPNsSandbox, ProviderFCM} {
		m.deadTokens.WithLabelValues(provider)
		m.credentialErrors.WithLabelValues(provider)
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.pushes, m.sendSeconds, m.deadTokens, m.credentialErrors} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("push: register metrics: %w", err)
		}
	}
	return nil
}

// providerLabel keeps label values to the known providers.
func providerLabel(provider string) string {
	switch provider {
	case ProviderAPNs, ProviderAPNsSandbox, ProviderFCM:
		return provider
	}
	return "unknown"
}
