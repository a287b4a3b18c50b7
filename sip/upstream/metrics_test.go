package upstream

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counter is the value of a metric sample with the label name=value.
func counter(t *testing.T, h *harness, metric, name, value string) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", metric, name, value)
	return 0
}

func TestMetricsCountStatusesAndAttempts(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw"; p.passwords["1002"] = "pw" })
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{
		{Ext: "1001", Password: "pw"},
		{Ext: "1002", Password: "bad"},
		{Ext: "1003", Password: "pw"}, // unknown at the PBX: 403
		{Ext: "1004", Password: "pw", Registrar: "sip:"},
	})
	for status, want := range map[string]float64{"registered": 0, "registering": 3, "failing": 0, "disabled": 1} {
		if got := counter(t, h, "callwake_upstream_registrations", "status", status); got != want {
			t.Errorf("before Run: registrations{status=%q} = %v, want %v", status, got, want)
		}
	}
	h.run(t)
	h.scheduled(t, "1001", "1002", "1003")
	h.clock.Advance(time.Second) // past the start slots, StartInterval apart
	h.waitStatus(t, "1001", StatusRegistered)
	h.waitStatus(t, "1002", StatusFailing)
	h.waitStatus(t, "1003", StatusFailing)

	for status, want := range map[string]float64{"registered": 1, "registering": 0, "failing": 2, "disabled": 1} {
		if got := counter(t, h, "callwake_upstream_registrations", "status", status); got != want {
			t.Errorf("registrations{status=%q} = %v, want %v", status, got, want)
		}
	}
	for result, want := range map[string]float64{"success": 1, "auth_failed": 1, "rejected": 1, "timeout": 0} {
		if got := counter(t, h, "callwake_upstream_register_attempts_total", "result", result); got != want {
			t.Errorf("attempts{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	client := testClient(t)
	for name, cfg := range map[string]Config{
		"no client":  {Contact: testContact},
		"no contact": {Client: client},
		"jitter":     {Client: client, Contact: testContact, Jitter: 1},
		"negative":   {Client: client, Contact: testContact, RetryMax: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Client: client, Contact: testContact, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Client: client, Contact: testContact, Registerer: reg}); err == nil {
		t.Errorf("a second Manager on the same registry should fail to register its metrics")
	}
}
