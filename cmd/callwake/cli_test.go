package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callwake/callwake/config"
	"github.com/callwake/callwake/db"
)

type cli struct {
	t      *testing.T
	config string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("sip:\n  domain: example.com\n  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nhttp:\n  listen: 127.0.0.1:0\n  admin_token: tok\ncalls:\n  ring_timeout: 2s\ndb:\n  path: %s\n",
		filepath.Join(dir, "cli.db"))
	path := filepath.Join(dir, "callwake.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &cli{t: t, config: path}
}

// run runs a command line and returns its exit code, stdout and stderr.
func (c *cli) run(stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"--config", c.config}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (c *cli) expect(wantCode int, wantOut string, stdin string, args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(stdin, args...)
	if code != wantCode || !strings.Contains(out+errOut, wantOut) {
		c.t.Fatalf("callwake %s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant output containing %q",
			strings.Join(args, " "), code, wantCode, out, errOut, wantOut)
	}
	return out
}

func TestCLIExtensionsAndDevices(t *testing.T) {
	c := newCLI(t)
	c.expect(exitOK, "register the app as sip:1001@example.com", "", "ext", "add", "1001", "--password", "secret-1001", "--display-name", "Alice")
	c.expect(exitExists, "already exists", "", "ext", "add", "1001", "--password", "secret-1001")
	c.expect(exitOK, "extension 1002 added", "secret-from-stdin\n", "ext", "add", "1002")
	c.expect(exitUsage, "8-128", "", "ext", "add", "1003", "--password", "short")
	c.expect(exitUsage, "extension", "", "ext", "add", "bad id", "--password", "secret-pw")
	c.expect(exitUsage, "no password", "", "ext", "add", "1004")
	c.expect(exitUsage, "takes 1 argument", "", "ext", "add")
	c.expect(exitUsage, "unknown flag", "", "ext", "list", "--colour")
	c.expect(exitUsage, "unknown command", "", "frobnicate")

	out := c.expect(exitOK, "Alice", "", "ext", "list")
	if !strings.Contains(out, "1002") {
		t.Errorf("list lacks 1002: %s", out)
	}
	out = c.expect(exitOK, "", "", "ext", "list", "--json")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 2 {
		t.Fatalf("ext list --json = %s (%v)", out, err)
	}

	// The password typed on stdin is the extension's password.
	store, err := db.Open(context.Background(), filepath.Join(filepath.Dir(c.config), "cli.db"))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := store.GetExtension(context.Background(), "1002")
	if !e.CheckPassword("secret-from-stdin") {
		t.Error("stdin password not stored")
	}
	up, err := store.UpsertDevice(context.Background(), db.Device{Extension: "1001", Provider: "fcm", Token: "tok-1"}, 5)
	if err != nil {
		t.Fatal(err)
	}
	d := up.Device
	store.Close()

	c.expect(exitOK, "tok-1", "", "device", "list", "1001")
	c.expect(exitOK, "has no devices", "", "device", "list", "1002")
	c.expect(exitNotFound, "not found", "", "device", "list", "9999")
	c.expect(exitUsage, "not a number", "", "device", "rm", "1001", "x")
	c.expect(exitNotFound, "not found", "", "device", "rm", "1002", fmt.Sprint(d.ID))
	c.expect(exitOK, "removed", "", "device", "rm", "1001", fmt.Sprint(d.ID))
	c.expect(exitOK, "devices:      0", "", "ext", "show", "1001")
	c.expect(exitNotFound, "not found", "", "ext", "show", "9999")
	c.expect(exitOK, "extension 1001 removed", "", "ext", "rm", "1001")
	c.expect(exitNotFound, "not found", "", "ext", "rm", "1001")
}

func TestCLICalls(t *testing.T) {
	c := newCLI(t)
	// Reading commands do not create a database at a mistyped path.
	c.expect(exitUsage, "no database at", "", "calls")
	store, _ := db.Open(context.Background(), filepath.Join(filepath.Dir(c.config), "cli.db"))
	t0 := time.Now()
	store.InsertCall(context.Background(), db.Call{ID: "call-a", SIPCallID: "x", Extension: "1001", CallerNumber: "555",
		InviteAt: t0, PushAt: t0.Add(4 * time.Millisecond), Outcome: "timeout", Status: 487})
	store.Close()
	c.expect(exitOK, "OUTCOME", "", "calls", "--ext", "9999")
	c.expect(exitOK, "4ms", "", "calls", "-n", "5")
	out := c.expect(exitOK, `"push_ms": 4`, "", "calls", "--json")
	if !strings.Contains(out, `"status": 487`) {
		t.Errorf("calls --json = %s", out)
	}
	c.expect(exitUsage, "--limit", "", "calls", "--limit", "0")
}

func TestCLIConfigCheck(t *testing.T) {
	c := newCLI(t)
	out := c.expect(exitOK, "is valid", "", "config", "check")
	if strings.Contains(out, "admin_token: tok") || !strings.Contains(out, "admin_token: "+config.Redacted) {
		t.Errorf("secret not redacted:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yml")
	os.WriteFile(bad, []byte("calls:\n  ring_timeot: 3s\n"), 0o600)
	c.config = bad
	c.expect(exitUsage, `bad.yml:2: unknown key "ring_timeot"`, "", "config", "check")
	c.config = filepath.Join(t.TempDir(), "missing.yml")
	c.expect(exitUsage, "not found: pass --config", "", "config", "check")
}

func TestCLIPushTestWithoutCredentials(t *testing.T) {
	c := newCLI(t)
	c.expect(exitOK, "added", "", "ext", "add", "1001", "--password", "secret-1001")
	c.expect(exitNotFound, "not found", "", "push", "test", "9999")
	c.expect(exitError, "no devices", "", "push", "test", "1001", "--window", "10ms")
	store, _ := db.Open(context.Background(), filepath.Join(filepath.Dir(c.config), "cli.db"))
	store.UpsertDevice(context.Background(), db.Device{Extension: "1001", Provider: "fcm", Token: "tok-1"}, 5)
	store.Close()
	c.expect(exitOK, "disabled", "", "push", "test", "1001", "--window", "10ms")
}

func TestHelpOnEveryCommand(t *testing.T) {
	c := newCLI(t)
	for _, args := range [][]string{{}, {"serve"}, {"config", "check"}, {"ext"}, {"ext", "add"}, {"ext", "list"},
		{"ext", "show"}, {"ext", "rm"}, {"device", "list"}, {"device", "rm"}, {"calls"}, {"push", "test"}} {
		c.expect(exitOK, "Usage:", "", append(args, "--help")...)
	}
}

// serve starts, answers HTTP and stops cleanly when its context ends.
func TestServeStartsAndStops(t *testing.T) {
	c := newCLI(t)
	cfg, err := config.LoadFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve failed: %v", err)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}

func TestCLIExtSet(t *testing.T) {
	c := newCLI(t)
	c.expect(exitOK, "added", "", "ext", "add", "1001", "--password", "secret-1001")
	c.expect(exitUsage, "nothing to change", "", "ext", "set", "1001")
	c.expect(exitNotFound, "not found", "", "ext", "set", "9999", "--display-name", "X")
	c.expect(exitUsage, "go together", "", "ext", "set", "1001", "--pbx-username", "1001")
	c.expect(exitOK, "changed", "", "ext", "set", "1001", "--pbx-username", "1001", "--pbx-password", "pbx-pw", "--display-name", "Bob")
	c.expect(exitOK, "pbx user:     1001", "", "ext", "show", "1001")
	c.expect(exitOK, "changed", "", "ext", "set", "1001", "--password", "new-secret-1001")
	store, _ := db.Open(context.Background(), filepath.Join(filepath.Dir(c.config), "cli.db"))
	defer store.Close()
	e, _ := store.GetExtension(context.Background(), "1001")
	if !e.CheckPassword("new-secret-1001") || e.DisplayName != "Bob" || e.PBXPassword != "pbx-pw" {
		t.Errorf("extension after set: %+v", e)
	}
}
