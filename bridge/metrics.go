package bridge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/db"
)

type metrics struct {
	calls          *prometheus.CounterVec
	active         prometheus.Gauge
	inviteToPush   prometheus.Histogram
	pushToRegister prometheus.Histogram
	inviteToAnswer prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 45}
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callwake_calls_total", Help: "Calls by how they ended.",
		}, []string{"outcome"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callwake_calls_active", Help: "Calls ringing or talking.",
		}),
		inviteToPush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callwake_invite_to_push_seconds", Help: "From the PBX's INVITE to the first push sent.", Buckets: buckets,
		}),
		pushToRegister: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callwake_push_to_register_seconds", Help: "From the push to the first pushed device's REGISTER.", Buckets: buckets,
		}),
		inviteToAnswer: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "callwake_invite_to_answer_seconds", Help: "From the PBX's INVITE to a phone's 200 OK.", Buckets: buckets,
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.active, m.inviteToPush, m.pushToRegister, m.inviteToAnswer} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// observeEnd records the latencies of a call that has ended (once per call).
func (m *metrics) observeEnd(c db.Call) {
	if !c.PushAt.IsZero() {
		m.inviteToPush.Observe(c.PushAt.Sub(c.InviteAt).Seconds())
		if !c.FirstRegisterAt.IsZero() {
			m.pushToRegister.Observe(c.FirstRegisterAt.Sub(c.PushAt).Seconds())
		}
	}
	if !c.AnswerAt.IsZero() {
		m.inviteToAnswer.Observe(c.AnswerAt.Sub(c.InviteAt).Seconds())
	}
}
