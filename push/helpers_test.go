package push_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/push/pushtest"
)

const (
	testTopic   = "com.example.callwake.voip"
	testProject = "callwake-test"
)

// fakeStore records what the pusher tells the database.
type fakeStore struct {
	mu        sync.Mutex
	removed   map[int64]string
	attempts  []push.Attempt
	attempted chan push.Attempt // if set, gets every attempt
}

func newFakeStore() *fakeStore { return &fakeStore{removed: map[int64]string{}} }

func (s *fakeStore) RemoveDevice(_ context.Context, id int64, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed[id] = reason
	return nil
}

func (s *fakeStore) RecordPushAttempt(_ context.Context, a push.Attempt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, a)
	if s.attempted != nil {
		s.attempted <- a
	}
	return nil
}

func (s *fakeStore) Removed() map[int64]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int64]string{}
	for k, v := range s.removed {
		out[k] = v
	}
	return out
}

func (s *fakeStore) Attempts() []push.Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]push.Attempt(nil), s.attempts...)
}

// logRecorder is a slog handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
	parent  *logRecorder
}

func (h *logRecorder) root() *logRecorder {
	if h.parent != nil {
		return h.parent.root()
	}
	return h
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	root := h.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.records = append(root.records, r)
	return nil
}

func (h *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{parent: h, attrs: append(append([]slog.Attr{}, h.attrs...), attrs...)}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// matching returns the records whose message contains msg.
func (h *logRecorder) matching(msg string) []slog.Record {
	root := h.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out []slog.Record
	for _, r := range root.records {
		if strings.Contains(r.Message, msg) {
			out = append(out, r)
		}
	}
	return out
}

func attr(r slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value, true
			return false
		}
		return true
	})
	return v, found
}

// testOptions are quick to retry, so that tests stay short.
func testOptions() push.Options {
	return push.Options{RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 40 * time.Millisecond}
}

// apnsEnv is a production and a sandbox APNs mock accepting one .p8 key.
type apnsEnv struct {
	prod, sandbox *pushtest.APNsMock
	key           pushtest.APNsKey
}

func newAPNsEnv(t testing.TB, countOnly bool) apnsEnv {
	key := pushtest.WriteAPNsKey(t, t.TempDir())
	cfg := pushtest.APNsMockConfig{AuthKey: &key.Key.PublicKey, KeyID: key.KeyID, TeamID: key.TeamID, CountOnly: countOnly}
	return apnsEnv{prod: pushtest.NewAPNsMock(t, cfg), sandbox: pushtest.NewAPNsMock(t, cfg), key: key}
}

func (e apnsEnv) options(o push.Options) push.Options {
	o.APNs = push.APNsOptions{
		KeyFile: e.key.Path, KeyID: e.key.KeyID, TeamID: e.key.TeamID,
		Endpoint: e.prod.URL, SandboxEndpoint: e.sandbox.URL,
		TLSConfig: e.prod.ClientTLS(),
	}
	return o
}

// fcmEnv is an FCM mock and a service account whose token_uri is the mock.
type fcmEnv struct {
	mock *pushtest.FCMMock
	sa   pushtest.ServiceAccount
}

func newFCMEnv(t testing.TB) fcmEnv {
	mock := pushtest.NewFCMMock(t, pushtest.FCMMockConfig{ProjectID: testProject})
	return fcmEnv{mock: mock, sa: mock.WriteServiceAccount(t, t.TempDir())}
}

func (e fcmEnv) options(o push.Options) push.Options {
	o.FCM = push.FCMOptions{CredentialsFile: e.sa.Path, Endpoint: e.mock.Endpoint(), TLSConfig: e.mock.ClientTLS()}
	return o
}

func newPusher(t testing.TB, opts push.Options, store push.Store, reg prometheus.Registerer) (*push.Pusher, *logRecorder) {
	t.Helper()
	logs := &logRecorder{}
	p, err := push.New(opts, store, slog.New(logs), reg)
	if err != nil {
		t.Fatalf("push.New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, logs
}

var (
	t0       = time.UnixMilli(1_700_000_000_000)
	callUUID = "5b3a1c2e-9f0d-4a8b-8c7e-2d1f0e9a6b4c"
)

func samplePayload() push.Payload {
	return push.Payload{
		Type:         push.TypeIncomingCall,
		CallID:       callUUID,
		SIPCallID:    "a84b4c76e66710@pbx.example.com",
		CallerName:   "Alice Liddell",
		CallerNumber: "+15551230000",
		Callee:       "1001",
		SentAt:       t0,
		ExpiresAt:    t0.Add(30 * time.Second),
		DeclineURL:   "https://callwake.example.com/api/v1/decline/abc?sig=xyz&d=7",
		Registrar:    "sip:1001@callwake.example.com;transport=tls",
		Headers:      map[string]string{"X-Customer-Id": "42"},
	}
}

func payloadFunc(p push.Payload) func(push.Target) push.Payload {
	return func(push.Target) push.Payload { return p }
}

func apnsTarget(id int64, provider string) push.Target {
	return push.Target{DeviceID: id, Provider: provider, Token: pushtest.DeviceToken(int(id)), Topic: testTopic}
}

func fcmTarget(id int64) push.Target {
	return push.Target{DeviceID: id, Provider: push.ProviderFCM, Token: fmt.Sprintf("fcm-registration-token-%d", id), ProjectID: testProject}
}

// metricValue returns a counter's value or a histogram's sample count for
// the series with exactly these labels.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matchLabels(m, labels) {
				if h := m.GetHistogram(); h != nil {
					return float64(h.GetSampleCount())
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	if len(m.GetLabel()) != len(want) {
		return false
	}
	for _, l := range m.GetLabel() {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func writeTestFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

var quietLogger = slog.New(slog.DiscardHandler)

func fixedClock(at time.Time) func() time.Time { return func() time.Time { return at } }
