package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
)

const adminToken = "test-admin-token"

type fakeTester struct{ ext string }

func (f *fakeTester) TestPush(_ context.Context, ext string, _ bool) ([]push.Result, error) {
	f.ext = ext
	return []push.Result{{Target: push.Target{DeviceID: 1, Provider: "apns"}, Outcome: "delivered", Latency: time.Millisecond}}, nil
}

type env struct {
	t       *testing.T
	srv     *httptest.Server
	store   *db.Store
	tester  *fakeTester
	changed []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	store, err := db.Open(context.Background(), filepath.Join(t.TempDir(), "api.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{t: t, store: store, tester: &fakeTester{}}
	api := New(Options{
		Store: store, AdminToken: adminToken, Realm: "example.com", MaxDevices: 2,
		PushTester: e.tester, Gatherer: prometheus.NewRegistry(),
		Health: map[string]HealthChecker{
			"push": func(context.Context) (any, error) { return map[string]string{"apns": "disabled"}, nil },
		},
		ExtensionChange: func(ext string) { e.changed = append(e.changed, ext) },
	})
	e.srv = httptest.NewServer(api)
	t.Cleanup(e.srv.Close)
	return e
}

type response struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

func (e *env) do(method, path, token, body string) response {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) response {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: body is not JSON: %s", req.Method, req.URL.Path, raw)
		}
	}
	return r
}

func (e *env) expect(r response, status int, errContains string) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	if errContains != "" {
		msg, _ := r.body["error"].(string)
		if !strings.Contains(msg, errContains) {
			e.t.Fatalf("error %q does not contain %q", msg, errContains)
		}
	}
}

func (e *env) addExtension(ext string) {
	e.t.Helper()
	r := e.do("POST", "/api/v1/extensions", adminToken,
		fmt.Sprintf(`{"extension":%q,"password":"secret-%s","display_name":"User %s"}`, ext, ext, ext))
	e.expect(r, http.StatusCreated, "")
}

func TestAdminAuth(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/api/v1/extensions", "/api/v1/extensions/1001", "/api/v1/extensions/1001/devices", "/api/v1/calls"} {
		e.expect(e.do("GET", path, "", ""), http.StatusUnauthorized, "admin token")
		e.expect(e.do("GET", path, "wrong", ""), http.StatusUnauthorized, "admin token")
	}
	e.expect(e.do("POST", "/api/v1/extensions/1001/test-push", "nope", ""), http.StatusUnauthorized, "")
	e.expect(e.do("DELETE", "/api/v1/extensions/1001/devices/1", "", ""), http.StatusUnauthorized, "")
}

func TestAdminAPIDisabledWithoutToken(t *testing.T) {
	store, _ := db.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"))
	defer store.Close()
	srv := httptest.NewServer(New(Options{Store: store, Gatherer: prometheus.NewRegistry()}))
	defer srv.Close()
	e := &env{t: t, srv: srv}
	e.expect(e.do("GET", "/api/v1/extensions", "", ""), http.StatusUnauthorized, "disabled")
	e.expect(e.do("GET", "/api/v1/extensions", "Bearer ", ""), http.StatusUnauthorized, "disabled")
}

func TestExtensionLifecycle(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	if len(e.changed) != 1 || e.changed[0] != "1001" {
		t.Errorf("change hook: %v", e.changed)
	}
	e.expect(e.do("POST", "/api/v1/extensions", adminToken, `{"extension":"1001","password":"another-pw"}`),
		http.StatusConflict, "already exists")

	r := e.do("GET", "/api/v1/extensions/1001", adminToken, "")
	e.expect(r, http.StatusOK, "")
	if r.body["display_name"] != "User 1001" || r.body["devices"] != float64(0) {
		t.Errorf("GET = %v", r.body)
	}
	if strings.Contains(r.raw, "secret-1001") || strings.Contains(r.raw, "ha1") {
		t.Errorf("password leaked: %s", r.raw)
	}

	r = e.do("PATCH", "/api/v1/extensions/1001", adminToken, `{"display_name":"Alice","pbx_username":"1001","pbx_password":"pbxpw"}`)
	e.expect(r, http.StatusOK, "")
	if r.body["display_name"] != "Alice" || r.body["has_pbx_password"] != true {
		t.Errorf("PATCH = %v", r.body)
	}
	e.expect(e.do("PATCH", "/api/v1/extensions/1001", adminToken, `{"extension":"1002"}`), http.StatusUnprocessableEntity, "renamed")
	e.expect(e.do("PATCH", "/api/v1/extensions/1001", adminToken, `{"pbx_password":""}`), http.StatusUnprocessableEntity, "go together")
	e.expect(e.do("PATCH", "/api/v1/extensions/9999", adminToken, `{"display_name":"x"}`), http.StatusNotFound, "not found")

	e.addExtension("1002")
	r = e.do("GET", "/api/v1/extensions", adminToken, "")
	e.expect(r, http.StatusOK, "")
	if list, _ := r.body["extensions"].([]any); len(list) != 2 {
		t.Errorf("list = %v", r.body)
	}

	e.expect(e.do("DELETE", "/api/v1/extensions/1001", adminToken, ""), http.StatusNoContent, "")
	e.expect(e.do("DELETE", "/api/v1/extensions/1001", adminToken, ""), http.StatusNotFound, "not found")
	e.expect(e.do("GET", "/api/v1/extensions/1001", adminToken, ""), http.StatusNotFound, "not found")
}

func TestExtensionBadInput(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		body   string
		status int
		err    string
	}{
		{`{"extension":"1001","password":`, http.StatusBadRequest, "bad JSON"},
		{``, http.StatusBadRequest, "empty"},
		{`[1,2]`, http.StatusBadRequest, "bad JSON"},
		{`{"extension":"1001","password":"secret-pw","colour":"red"}`, http.StatusBadRequest, "unknown field"},
		{`{"extension":"1001"}`, http.StatusUnprocessableEntity, "required"},
		{`{"extension":"10 01","password":"secret-pw"}`, http.StatusUnprocessableEntity, "extension"},
		{`{"extension":"../etc","password":"secret-pw"}`, http.StatusUnprocessableEntity, "extension"},
		{`{"extension":"1001","password":"short"}`, http.StatusUnprocessableEntity, "8-128"},
		{`{"extension":"1001","password":"secret-pw","display_name":"a\r\nVia: x"}`, http.StatusUnprocessableEntity, "control"},
		{`{"extension":"1001","password":"secret-pw","pbx_registrar":"pbx.local"}`, http.StatusUnprocessableEntity, "SIP URI"},
		{`{"extension":"1001","password":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, http.StatusRequestEntityTooLarge, "larger than"},
	}
	for _, c := range cases {
		e.expect(e.do("POST", "/api/v1/extensions", adminToken, c.body), c.status, c.err)
	}
	// Nothing was stored by the bad requests.
	if exts, _ := e.store.ListExtensions(context.Background()); len(exts) != 0 {
		t.Errorf("bad input stored: %v", exts)
	}
	e.expect(e.do("PUT", "/api/v1/extensions", adminToken, "{}"), http.StatusMethodNotAllowed, "not allowed")
	e.expect(e.do("GET", "/api/v1/nope", adminToken, ""), http.StatusNotFound, "no such endpoint")
}

func (e *env) registerDevice(user, password, body string) response {
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/devices", strings.NewReader(body))
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	return e.send(req)
}

func apnsBody(n int) string {
	return fmt.Sprintf(`{"provider":"apns","token":"%064x","topic":"com.example.app.voip"}`, n)
}

func TestDeviceRegistrationOverHTTP(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.expect(e.registerDevice("", "", apnsBody(1)), http.StatusUnauthorized, "basic auth")
	e.expect(e.registerDevice("1001", "wrong-password", apnsBody(1)), http.StatusUnauthorized, "wrong extension or password")
	e.expect(e.registerDevice("9999", "secret-9999", apnsBody(1)), http.StatusUnauthorized, "wrong extension or password")
	e.expect(e.registerDevice("1001", "secret-1001", `{"provider":"apns","token":"abc","topic":"x.voip"}`), http.StatusUnprocessableEntity, "64 hex")
	e.expect(e.registerDevice("1001", "secret-1001", `{"provider":"fcm","token":""}`), http.StatusUnprocessableEntity, "FCM token")
	e.expect(e.registerDevice("1001", "secret-1001", `{"provider":"pigeon","token":"x"}`), http.StatusUnprocessableEntity, "provider")
	e.expect(e.registerDevice("1001", "secret-1001", `{"provider":`), http.StatusBadRequest, "bad JSON")

	r := e.registerDevice("1001", "secret-1001", apnsBody(1))
	e.expect(r, http.StatusCreated, "")
	first := r.body["device"].(map[string]any)["id"].(float64)
	// A push stamps the device after the store's directory loaded it: the
	// refresh answers with the stamp, not the directory's copy.
	if err := e.store.RecordPushAttempt(context.Background(), db.PushAttempt{CallID: "c", DeviceID: int64(first),
		Provider: "apns", Type: "incoming_call", SentAt: time.UnixMilli(1_700_000_000_000), Outcome: "failed",
		DeviceError: "failed: BadTopic"}); err != nil {
		t.Fatal(err)
	}
	r = e.registerDevice("1001", "secret-1001", apnsBody(1))
	e.expect(r, http.StatusOK, "")
	if dev := r.body["device"].(map[string]any); dev["last_push_at"] == nil || dev["last_push_at"] == "" {
		t.Errorf("refreshed device %v: no last_push_at", dev)
	}
	e.expect(e.registerDevice("1001", "secret-1001", `{"provider":"fcm","token":"fcm:tok-1","project_id":"proj"}`), http.StatusCreated, "")
	// MaxDevices is 2 here: the third evicts the least recently used (the APNs one).
	r = e.registerDevice("1001", "secret-1001", `{"provider":"fcm","token":"fcm:tok-2"}`)
	e.expect(r, http.StatusCreated, "")
	if ev, _ := r.body["evicted"].([]any); len(ev) != 1 || ev[0] != first {
		t.Errorf("evicted = %v, want [%v]", r.body["evicted"], first)
	}

	r = e.do("GET", "/api/v1/extensions/1001/devices", adminToken, "")
	e.expect(r, http.StatusOK, "")
	devs := r.body["devices"].([]any)
	if len(devs) != 2 {
		t.Fatalf("devices = %v", devs)
	}
	id := int(devs[0].(map[string]any)["id"].(float64))
	e.expect(e.do("GET", "/api/v1/extensions/9999/devices", adminToken, ""), http.StatusNotFound, "not found")
	e.expect(e.do("DELETE", "/api/v1/extensions/1001/devices/abc", adminToken, ""), http.StatusBadRequest, "not a number")
	e.expect(e.do("DELETE", "/api/v1/extensions/9999/devices/"+fmt.Sprint(id), adminToken, ""), http.StatusNotFound, "not found")
	e.expect(e.do("DELETE", "/api/v1/extensions/1001/devices/"+fmt.Sprint(id), adminToken, ""), http.StatusNoContent, "")
	e.expect(e.do("DELETE", "/api/v1/extensions/1001/devices/"+fmt.Sprint(id), adminToken, ""), http.StatusNotFound, "not found")
}

func TestCallLog(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < 5; i++ {
		c := db.Call{ID: fmt.Sprintf("c%d", i), SIPCallID: "s", Extension: "1001", InviteAt: t0,
			PushAt: t0.Add(5 * time.Millisecond), AnswerAt: t0.Add(2 * time.Second), EndAt: t0.Add(62 * time.Second),
			Outcome: "completed", Status: 200}
		if err := e.store.InsertCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	r := e.do("GET", "/api/v1/calls?limit=2", adminToken, "")
	e.expect(r, http.StatusOK, "")
	calls := r.body["calls"].([]any)
	if len(calls) != 2 || calls[0].(map[string]any)["id"] != "c4" {
		t.Fatalf("calls = %v", calls)
	}
	c0 := calls[0].(map[string]any)
	if c0["push_ms"] != float64(5) || c0["answer_ms"] != float64(2000) || c0["duration_ms"] != float64(60000) {
		t.Errorf("timings = %v", c0)
	}
	next := fmt.Sprint(r.body["next_before"])
	r = e.do("GET", "/api/v1/calls?limit=10&before="+next, adminToken, "")
	if calls := r.body["calls"].([]any); len(calls) != 3 || r.body["next_before"] != nil {
		t.Errorf("second page = %v", r.body)
	}
	e.expect(e.do("GET", "/api/v1/calls?limit=0", adminToken, ""), http.StatusBadRequest, "limit")
	e.expect(e.do("GET", "/api/v1/calls?limit=x", adminToken, ""), http.StatusBadRequest, "limit")
	e.expect(e.do("GET", "/api/v1/calls?before=-1", adminToken, ""), http.StatusBadRequest, "before")
}

func TestTestPush(t *testing.T) {
	e := newEnv(t)
	e.expect(e.do("POST", "/api/v1/extensions/1001/test-push", adminToken, ""), http.StatusNotFound, "not found")
	e.addExtension("1001")
	r := e.do("POST", "/api/v1/extensions/1001/test-push", adminToken, "")
	e.expect(r, http.StatusOK, "")
	if e.tester.ext != "1001" || len(r.body["results"].([]any)) != 1 {
		t.Errorf("test push = %v", r.body)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/healthz", "", "")
	e.expect(r, http.StatusOK, "")
	if r.body["status"] != "ok" {
		t.Errorf("healthz = %v", r.body)
	}
	r = e.do("GET", "/metrics", "", "")
	if r.status != http.StatusOK {
		t.Errorf("metrics status %d", r.status)
	}

	store, _ := db.Open(context.Background(), filepath.Join(t.TempDir(), "h.db"))
	defer store.Close()
	srv := httptest.NewServer(New(Options{Store: store, Gatherer: prometheus.NewRegistry(), Health: map[string]HealthChecker{
		"push": func(context.Context) (any, error) {
			return map[string]string{"apns": "InvalidProviderToken"}, errors.New("apns unhealthy")
		},
	}}))
	defer srv.Close()
	e2 := &env{t: t, srv: srv}
	r = e2.do("GET", "/healthz", "", "")
	e2.expect(r, http.StatusServiceUnavailable, "")
	if r.body["status"] != "unhealthy" || !strings.Contains(r.raw, "InvalidProviderToken") {
		t.Errorf("unhealthy healthz = %s", r.raw)
	}
}

func TestProfilesNeedTheAdminToken(t *testing.T) {
	e := newEnv(t)
	e.expect(e.do("GET", "/debug/pprof/goroutine?debug=1", "", ""), http.StatusUnauthorized, "admin token")
	if r := e.do("GET", "/debug/pprof/goroutine?debug=1", adminToken, ""); r.status != http.StatusOK || !strings.Contains(r.raw, "goroutine") {
		t.Errorf("pprof with token: %d", r.status)
	}
}

func TestExtensionShowsRegistrationState(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	r := e.do("GET", "/api/v1/extensions/1001", adminToken, "")
	if _, ok := r.body["registration"]; ok {
		t.Errorf("registration shown for an extension not in register mode: %s", r.raw)
	}
	if err := e.store.SaveRegistrations(context.Background(), []db.Registration{{Extension: "1001", Status: "failing",
		Registrar: "sip:pbx.test", LastError: "403 Forbidden", LastErrorAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/api/v1/extensions/1001", adminToken, "")
	reg, _ := r.body["registration"].(map[string]any)
	if reg["status"] != "failing" || reg["last_error"] != "403 Forbidden" || reg["registrar"] != "sip:pbx.test" {
		t.Errorf("registration = %v", r.body["registration"])
	}
}
