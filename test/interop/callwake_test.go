package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	domain      = "callwake.test"
	extension   = "1001"
	password    = "interop-secret-1001"
	ringTimeout = 6 * time.Second
	wakeTimeout = 4 * time.Second
	// drainTime is how long callwake may take to stop on SIGTERM:
	// calls.ring_timeout + 5s, as serve waits for ringing calls.
	drainTime = ringTimeout + 5*time.Second
)

// callwake is a running `callwake serve`.
type callwake struct {
	t          *testing.T
	config     string
	sipAddr    string // host:port, UDP and TCP
	httpURL    string
	adminToken string
	proc       *process

	terminatedAt time.Time // when the test sent SIGTERM
}

// pbxConfig is the pbx: section of callwake's config.
type pbxConfig struct {
	trusted         []string      // pbx.trusted: trunk mode's INVITE sources
	registrar       string        // pbx.registrar: register mode, when set
	registerExpires time.Duration // pbx.register_expires; 0 = callwake's default
}

// trunkMode is the PBX of most tests: SIPp calling callwake straight from
// 127.0.0.1.
var trunkMode = pbxConfig{trusted: []string{"127.0.0.1/32"}}

func (p pbxConfig) yaml() string {
	var b strings.Builder
	b.WriteString("pbx:\n")
	quoted := make([]string, len(p.trusted))
	for i, cidr := range p.trusted {
		quoted[i] = strconv.Quote(cidr)
	}
	fmt.Fprintf(&b, "  trusted: [%s]\n", strings.Join(quoted, ", "))
	if p.registrar != "" {
		fmt.Fprintf(&b, "  registrar: %q\n", p.registrar)
	}
	if p.registerExpires != 0 {
		fmt.Fprintf(&b, "  register_expires: %s\n", p.registerExpires)
	}
	return b.String()
}

// startCallwake runs callwake in trunk mode (see startCallwakeWith).
func startCallwake(t *testing.T) *callwake {
	t.Helper()
	return startCallwakeWith(t, trunkMode)
}

// startCallwakeWith writes a config with free loopback ports and this pbx:
// section, and runs `callwake serve` until the test ends, when it must stop
// cleanly on SIGTERM.
func startCallwakeWith(t *testing.T, pbx pbxConfig) *callwake {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2)
	sipPort, httpPort := ports[0], ports[1]
	token := make([]byte, 16)
	rand.Read(token)
	cw := &callwake{
		t: t, config: filepath.Join(dir, "callwake.yaml"),
		sipAddr:    fmt.Sprintf("127.0.0.1:%d", sipPort),
		httpURL:    fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		adminToken: hex.EncodeToString(token),
	}
	// No push credentials: pushes are "disabled" and only logged. The
	// endpoints point at a closed loopback port all the same, so that
	// nothing here can ever reach Apple or Google.
	// baresip 1.0's libre answers MD5 challenges only.
	cfg := fmt.Sprintf(`sip:
  listen: ["udp:%[1]s", "tcp:%[1]s"]
  domain: %[2]s
  digest_algorithms: ["MD5"]
%[8]scalls:
  ring_timeout: %[3]s
  wake_timeout: %[4]s
push:
  apns:
    endpoint: https://127.0.0.1:9
    sandbox_endpoint: https://127.0.0.1:9
  fcm:
    endpoint: https://127.0.0.1:9/v1
http:
  listen: 127.0.0.1:%[5]d
  admin_token: %[6]s
db:
  path: %[7]s
`, cw.sipAddr, domain, ringTimeout, wakeTimeout, httpPort, cw.adminToken, filepath.Join(dir, "callwake.db"), pbx.yaml())
	if err := os.WriteFile(cw.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	cw.proc = startProcess(t, "callwake", dir, cleanEnv(), callwakeBin, "serve", "--config", cw.config, "--log-format", "json", "--log-level", "debug")
	// Registered after startProcess's cleanup, so it runs first: the
	// graceful stop is checked before anything is killed.
	t.Cleanup(cw.stop)
	cw.waitHealthy()
	return cw
}

func (cw *callwake) waitHealthy() {
	cw.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cw.proc.exited() {
			code, _ := cw.proc.wait(0)
			cw.t.Fatalf("callwake exited with %d before it was healthy", code)
		}
		resp, err := http.Get(cw.httpURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process we cannot be told about
	}
	cw.t.Fatal("callwake /healthz never answered 200")
}

// terminate sends SIGTERM: callwake drains (new calls get 503, ringing
// calls run to their end) and exits.
func (cw *callwake) terminate() {
	if cw.terminatedAt.IsZero() {
		cw.terminatedAt = time.Now()
		cw.proc.signal(syscall.SIGTERM)
	}
}

// stop terminates callwake, unless the test did, and expects it to exit 0
// within the drain time.
func (cw *callwake) stop() {
	if cw.terminatedAt.IsZero() && cw.proc.exited() {
		code, _ := cw.proc.wait(0)
		cw.t.Errorf("callwake had exited already, with %d", code)
		return
	}
	cw.terminate()
	code, ok := cw.proc.wait(time.Until(cw.terminatedAt.Add(drainTime + time.Second)))
	switch {
	case !ok:
		cw.t.Errorf("callwake still running %s after SIGTERM (drain time %s)", time.Since(cw.terminatedAt).Round(time.Millisecond), drainTime)
	case code != 0:
		cw.t.Errorf("callwake exited with %d after SIGTERM, want 0", code)
	case !strings.Contains(cw.proc.output(), `"msg":"database closed"`):
		cw.t.Error(`callwake stopped without logging "database closed"`)
	}
}

// api calls the HTTP API and decodes a JSON answer into out (if not nil).
// auth is "admin" for the bearer token, or "user:password" for basic auth.
func (cw *callwake) api(method, path, auth string, body any, out any) int {
	cw.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			cw.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, cw.httpURL+path, rd)
	if err != nil {
		cw.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth == "admin" {
		req.Header.Set("Authorization", "Bearer "+cw.adminToken)
	} else if user, pass, ok := strings.Cut(auth, ":"); ok {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cw.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			cw.t.Fatalf("%s %s: decoding %s: %v", method, path, data, err)
		}
	}
	if resp.StatusCode >= 300 {
		cw.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	return resp.StatusCode
}

// device is a push device as the API shows it.
type device struct {
	ID       int64  `json:"id"`
	Provider string `json:"provider"`
	Token    string `json:"token"`
	Instance string `json:"instance"`
}

// provision adds the extension (admin API) and, as the app would, its APNs
// device (the extension's own credentials). instance, when set, is the
// +sip.instance of the app install the device belongs to.
func (cw *callwake) provision(instance string) device {
	cw.t.Helper()
	cw.addExtension(nil)
	return cw.addDevice(instance)
}

// addExtension adds an extension through the admin API: the test's
// extension, with fields added to or replacing those of its JSON body.
func (cw *callwake) addExtension(fields map[string]string) {
	cw.t.Helper()
	body := map[string]string{"extension": extension, "password": password, "display_name": "Interop Phone"}
	maps.Copy(body, fields)
	if code := cw.api(http.MethodPost, "/api/v1/extensions", "admin", body, nil); code != http.StatusCreated {
		cw.t.Fatalf("POST /api/v1/extensions %s = %d, want 201", body["extension"], code)
	}
}

// addDevice registers an APNs device for the test's extension, as the app
// would, with the extension's own credentials.
func (cw *callwake) addDevice(instance string) device {
	cw.t.Helper()
	token := make([]byte, 32)
	rand.Read(token)
	var reply struct {
		Device device `json:"device"`
	}
	in := map[string]string{"provider": "apns", "token": hex.EncodeToString(token), "topic": "com.example.callwake.voip", "instance": instance}
	if code := cw.api(http.MethodPost, "/api/v1/devices", extension+":"+password, in, &reply); code != http.StatusCreated {
		cw.t.Fatalf("POST /api/v1/devices = %d, want 201", code)
	}
	if reply.Device.ID == 0 || reply.Device.Token != in["token"] {
		cw.t.Fatalf("device registered as %+v", reply.Device)
	}
	return reply.Device
}

// callRow is a call-log entry as the API and `callwake calls --json` show it.
type callRow struct {
	ID              string     `json:"id"`
	SIPCallID       string     `json:"sip_call_id"`
	Extension       string     `json:"extension"`
	CallerName      string     `json:"caller_name"`
	CallerNumber    string     `json:"caller_number"`
	Outcome         string     `json:"outcome"`
	Status          int        `json:"status"`
	AnsweredBy      int64      `json:"answered_by"`
	PushAt          *time.Time `json:"push_at"`
	FirstRegisterAt *time.Time `json:"first_register_at"`
	AnswerAt        *time.Time `json:"answer_at"`
	EndAt           *time.Time `json:"end_at"`
	PushMS          *int64     `json:"push_ms"`
	RegisterMS      *int64     `json:"register_ms"`
	AnswerMS        *int64     `json:"answer_ms"`
	DurationMS      *int64     `json:"duration_ms"`
}

func (cw *callwake) calls(limit int) []callRow {
	cw.t.Helper()
	var reply struct {
		Calls []callRow `json:"calls"`
	}
	if code := cw.api(http.MethodGet, fmt.Sprintf("/api/v1/calls?limit=%d", limit), "admin", nil, &reply); code != http.StatusOK {
		cw.t.Fatalf("GET /api/v1/calls = %d", code)
	}
	return reply.Calls
}

// waitCall polls the call log until the call with this SIP Call-ID has the
// outcome, and returns it.
func (cw *callwake) waitCall(sipCallID, outcome string, within time.Duration) callRow {
	cw.t.Helper()
	deadline := time.Now().Add(within)
	var last []callRow
	for {
		last = cw.calls(5)
		for _, c := range last {
			if c.SIPCallID == sipCallID && c.Outcome == outcome {
				return c
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the call log, as an operator would
	}
	cw.t.Fatalf("call %s never had outcome %q in GET /api/v1/calls; newest calls: %+v", sipCallID, outcome, last)
	return callRow{}
}

// cli runs a callwake command against the daemon's config and database.
func (cw *callwake) cli(args ...string) string {
	cw.t.Helper()
	cmd := exec.Command(callwakeBin, append(args, "--config", cw.config)...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		cw.t.Fatalf("callwake %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// cliCall finds the call with this SIP Call-ID in `callwake calls --json`.
func (cw *callwake) cliCall(sipCallID string) callRow {
	cw.t.Helper()
	out := cw.cli("calls", "--json", "--limit", "5", "--ext", extension)
	var rows []callRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		cw.t.Fatalf("callwake calls --json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.SIPCallID == sipCallID {
			return r
		}
	}
	cw.t.Fatalf("callwake calls --json has no call %s:\n%s", sipCallID, out)
	return callRow{}
}

// logEntries are callwake's JSON log lines with this message.
func (cw *callwake) logEntries(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(cw.proc.output(), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == msg {
			out = append(out, entry)
		}
	}
	return out
}

// waitLog waits until callwake has logged a line with this message.
func (cw *callwake) waitLog(msg string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if len(cw.logEntries(msg)) > 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond) // polling a log file
	}
	return false
}
