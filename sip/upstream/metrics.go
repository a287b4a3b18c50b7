package upstream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the upstream registrations. The registrations gauge is
// counted from the states at scrape time, so it cannot drift.
type metrics struct {
	attempts      *prometheus.CounterVec
	registrations *prometheus.Desc
	m             *Manager
}

func newMetrics(reg prometheus.Registerer, m *Manager) (*metrics, error) {
	mt := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callwake_upstream_register_attempts_total",
			Help: "REGISTER attempts to the PBX by result (a digest challenge and its answer are one attempt).",
		}, []string{"result"}),
		registrations: prometheus.NewDesc("callwake_upstream_registrations",
			"Upstream registrations at the PBX by status.", []string{"status"}, nil),
		m: m,
	}
	for _, r := range results {
		mt.attempts.WithLabelValues(string(r))
	}
	if reg == nil {
		return mt, nil
	}
	for _, c := range []prometheus.Collector{mt.attempts, mt} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering upstream metrics: %w", err)
		}
	}
	return mt, nil
}

func (mt *metrics) attempt(r result) { mt.attempts.WithLabelValues(string(r)).Inc() }

// Describe and Collect make the registrations gauge a collector.
func (mt *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- mt.registrations }

func (mt *metrics) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{StatusRegistered: 0, StatusRegistering: 0, StatusFailing: 0, StatusDisabled: 0}
	for _, st := range mt.m.States() {
		counts[st.Status]++
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(mt.registrations, prometheus.GaugeValue, float64(n), status)
	}
}
