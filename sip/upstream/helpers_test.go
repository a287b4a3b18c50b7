package upstream

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// stateEvent is a state a registration published.
type stateEvent struct {
	ext string
	st  State
}

// harness is a Manager on a fake clock with its SIP client on loopback.
type harness struct {
	*Manager
	clock   *fakeClock
	events  chan stateEvent
	backlog []stateEvent // events read while waiting for another extension
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

const contactPort = 5099

func testContact(ext string) sip.Uri {
	return sip.Uri{Scheme: "sip", User: ext, Host: "127.0.0.1", Port: contactPort}
}

func testClient(t *testing.T) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("callwake"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// newHarness makes a Manager with test defaults; edit changes its Config.
func newHarness(t *testing.T, registrar string, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{clock: newFakeClock(), events: make(chan stateEvent, 10000), reg: prometheus.NewRegistry()}
	cfg := Config{
		Client: testClient(t), DefaultRegistrar: registrar, Contact: testContact,
		Clock: h.clock, Registerer: h.reg, RequestTimeout: 5 * time.Second, ShutdownTimeout: 3 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.onState = func(ext string, st State) { h.events <- stateEvent{ext, st} }
	h.Manager = m
	return h
}

// run starts Run; the test's cleanup stops it if the test did not.
func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
}

// stop ends Run and waits for it, returning how long that took.
func (h *harness) stop(t *testing.T) time.Duration {
	t.Helper()
	if h.cancel == nil {
		return 0
	}
	start := time.Now()
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	return time.Since(start)
}

// wait returns the first state published for ext, from here on, that
// satisfies ok. Other extensions' states are kept for their own waits.
func (h *harness) wait(t *testing.T, ext string, ok func(State) bool) State {
	t.Helper()
	for i := 0; i < len(h.backlog); {
		ev := h.backlog[i]
		if ev.ext != ext {
			i++
			continue
		}
		h.backlog = slices.Delete(h.backlog, i, i+1)
		if ok(ev.st) {
			return ev.st
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-h.events:
			if ev.ext != ext {
				h.backlog = append(h.backlog, ev)
			} else if ok(ev.st) {
				return ev.st
			}
		case <-deadline:
			st, _ := h.State(ext)
			t.Fatalf("%s: state never matched; now %+v", ext, st)
		}
	}
}

func (h *harness) waitStatus(t *testing.T, ext, status string) State {
	t.Helper()
	return h.wait(t, ext, func(st State) bool { return st.Status == status })
}

// syncAfterSlots is Sync once the start slots handed out so far are past,
// so that changed accounts register at once.
func (h *harness) syncAfterSlots(accounts []Account) {
	h.clock.Advance(time.Second)
	h.Sync(accounts)
}

// scheduled waits until each extension has its first REGISTER scheduled.
func (h *harness) scheduled(t *testing.T, exts ...string) {
	t.Helper()
	for _, ext := range exts {
		h.wait(t, ext, func(s State) bool { return !s.NextAttempt.IsZero() })
	}
}

// in reports whether d lies in [lo, hi].
func in(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }

func header(req *sip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

func expiresParam(req *sip.Request) int {
	v, _ := req.Contact().Params.Get("expires")
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// testWriter sends log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
