package bridge_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	sipgosip "github.com/emiago/sipgo/sip"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/sip/upstream"
)

// fakeRegistrar accepts every REGISTER (no auth) and remembers bindings.
type fakeRegistrar struct {
	addr     string
	mu       sync.Mutex
	bindings map[string]string // user -> contact, "" after Expires 0
}

func startFakeRegistrar(t *testing.T) *fakeRegistrar {
	t.Helper()
	ua, _ := sipgo.NewUA()
	srv, _ := sipgo.NewServer(ua)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRegistrar{addr: conn.LocalAddr().String(), bindings: map[string]string{}}
	srv.OnRegister(func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
		expires := "60"
		if h := req.GetHeader("Expires"); h != nil {
			expires = h.Value()
		}
		f.mu.Lock()
		if expires == "0" {
			delete(f.bindings, req.To().Address.User)
		} else {
			f.bindings[req.To().Address.User] = req.Contact().Address.String()
		}
		f.mu.Unlock()
		res := sipgosip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sipgosip.NewHeader("Expires", expires))
		tx.Respond(res)
	})
	go srv.ServeUDP(conn)
	t.Cleanup(func() { ua.Close(); conn.Close() })
	return f
}

func (f *fakeRegistrar) contact(user string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bindings[user]
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling the store and the fake PBX
	}
}

// Register mode follows the store: an extension given PBX credentials is
// registered with a Contact naming it, its state is saved for the API and
// the CLI, and it is un-registered when the credentials go and on shutdown.
func TestRegisterModeFollowsTheStore(t *testing.T) {
	ctx := context.Background()
	store, err := db.Open(ctx, filepath.Join(t.TempDir(), "rm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	pbx := startFakeRegistrar(t)
	ua, _ := sipgo.NewUA()
	defer ua.Close()
	client, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	manager, err := upstream.New(upstream.Config{Client: client, DefaultRegistrar: "sip:" + pbx.addr,
		Logger: testLogger(), StartInterval: time.Millisecond,
		Contact: func(ext string) sipgosip.Uri {
			return sipgosip.Uri{Scheme: "sip", User: ext, Host: "127.0.0.1", Port: 5099}
		}})
	if err != nil {
		t.Fatal(err)
	}
	var trusted []string
	var trustMu sync.Mutex
	rm := bridge.NewRegisterMode(bridge.RegisterModeConfig{Manager: manager, Store: store, Logger: testLogger(),
		DefaultRegistrar: "sip:" + pbx.addr, Interval: 50 * time.Millisecond,
		Trust: func(_ context.Context, hosts []string) { trustMu.Lock(); trusted = hosts; trustMu.Unlock() }})

	x := db.Extension{Extension: "1001", PBXUsername: "1001", PBXPassword: "pbx-pw"}
	x.SetPassword(domain, "secret-1001")
	if _, err := store.CreateExtension(ctx, x); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rm.Run(runCtx) }()

	waitUntil(t, "1001 registered at the PBX", func() bool { return pbx.contact("1001") != "" })
	if c := pbx.contact("1001"); c != "sip:1001@127.0.0.1:5099" {
		t.Errorf("Contact = %s", c)
	}
	waitUntil(t, "state saved", func() bool {
		r, err := store.GetRegistration(ctx, "1001")
		return err == nil && r.Status == upstream.StatusRegistered
	})
	trustMu.Lock()
	if fmt.Sprint(trusted) != "[127.0.0.1]" {
		t.Errorf("trusted hosts = %v", trusted)
	}
	trustMu.Unlock()

	// The credentials are removed (API or CLI): un-registered.
	if _, err := store.UpdateExtension(ctx, "1001", func(e *db.Extension) error {
		e.PBXUsername, e.PBXPassword = "", ""
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rm.Changed()
	waitUntil(t, "1001 un-registered", func() bool { return pbx.contact("1001") == "" })

	// Added back, then shutdown removes the binding.
	store.UpdateExtension(ctx, "1001", func(e *db.Extension) error { e.PBXUsername, e.PBXPassword = "1001", "pbx-pw"; return nil })
	rm.Changed()
	waitUntil(t, "1001 registered again", func() bool { return pbx.contact("1001") != "" })
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c := pbx.contact("1001"); c != "" {
		t.Errorf("binding left after shutdown: %s", c)
	}
}
