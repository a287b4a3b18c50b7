package bridge_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/sip"
)

// TestMemoryPerRingingCall puts CALLWAKE_MEM calls in the ringing state
// (180 sent, push delivered, no phone awake) and reports what each costs
// the process: the in-process counterpart of bench/README.md's "memory per
// ringing call", in seconds rather than minutes. Not asserted; skipped
// unless CALLWAKE_MEM is set:
//
//	CALLWAKE_MEM=10000 go test ./bridge -run TestMemoryPerRingingCall -v
//	CALLWAKE_MEM=10000 CALLWAKE_MEM_PROFILE=/tmp/heap go test ./bridge -run TestMemoryPerRingingCall -v
//	go tool pprof -sample_index=inuse_space -base /tmp/heap.base /tmp/heap.ringing
//
// The PBX writes raw INVITEs and keeps no state, so that only callwake's
// side of each call is counted.
func TestMemoryPerRingingCall(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CALLWAKE_MEM"))
	if n <= 0 {
		t.Skip("set CALLWAKE_MEM=<calls> to measure memory per ringing call")
	}
	profile := os.Getenv("CALLWAKE_MEM_PROFILE")
	if profile != "" {
		runtime.MemProfileRate = 512
	}
	const extensions = 5000 // as the bench: several calls ring each extension
	e := newEnv(t, func(b *bridge.Config, s *sip.ServiceConfig) {
		b.Pusher = deliveredPusher{}
		b.RingTimeout, b.WakeTimeout = 10*time.Minute, 0
		s.Listeners = s.Listeners[:1] // UDP, as the bench
	})
	provision(t, e, extensions)

	p := newRawPBX(t, e.udpAddr)
	p.fill(t, e, extensions, extensions) // warm-up: pools, maps, the tx layer's goroutines
	p.cancelAll(t, e)
	before := sample(t, profile, "base")

	p.fill(t, e, n, extensions)
	rssRinging := vmRSS(t) // before any forced collection, as the bench's RSS
	after := sample(t, profile, "ringing")

	per := func(a, b uint64) string { return fmt.Sprintf("%.0f B", (float64(a)-float64(b))/float64(n)) }
	t.Logf("%d calls ringing, per call:", n)
	t.Logf("  RSS (no forced GC) %s, RSS (after GC) %s", per(rssRinging, before.rss), per(after.rss, before.rss))
	t.Logf("  StackInuse %s, HeapInuse %s, HeapAlloc %s, heap objects %.1f",
		per(after.StackInuse, before.StackInuse), per(after.HeapInuse, before.HeapInuse),
		per(after.HeapAlloc, before.HeapAlloc), (float64(after.HeapObjects)-float64(before.HeapObjects))/float64(n))
	t.Logf("  goroutines %.2f (%d → %d)", float64(after.goroutines-before.goroutines)/float64(n), before.goroutines, after.goroutines)
	t.Logf("  GC cycles %d, NextGC %d MiB", after.NumGC, after.NextGC>>20)
	p.cancelAll(t, e)
}

// deliveredPusher delivers every push at once.
type deliveredPusher struct{}

func (deliveredPusher) Push(_ context.Context, targets []push.Target, _ func(push.Target) push.Payload, _ time.Time) []push.Result {
	out := make([]push.Result, len(targets))
	for i, t := range targets {
		out[i] = push.Result{Target: t, Outcome: push.OutcomeDelivered, Attempts: 1}
	}
	return out
}

// provision gives extensions 20000… one APNs device each.
func provision(t *testing.T, e *env, extensions int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < extensions; i++ {
		ext := strconv.Itoa(20000 + i)
		if _, err := e.store.CreateExtension(ctx, db.Extension{Extension: ext}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.UpsertDevice(ctx, db.Device{Extension: ext, Provider: "apns",
			Token: apnsToken(i), Topic: "com.example.app.voip"}, 5); err != nil {
			t.Fatal(err)
		}
	}
}

type memSample struct {
	runtime.MemStats
	rss        uint64
	goroutines int
}

// sample collects until the stacks stop shrinking (the GC halves a parked
// goroutine's stack at most once per cycle), then reads the figures.
func sample(t *testing.T, profile, name string) memSample {
	t.Helper()
	for i := 0; i < 4; i++ {
		runtime.GC()
	}
	debug.FreeOSMemory()
	var s memSample
	runtime.ReadMemStats(&s.MemStats)
	s.rss, s.goroutines = vmRSS(t), runtime.NumGoroutine()
	if profile != "" {
		f, err := os.Create(profile + "." + name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func vmRSS(t *testing.T) uint64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// rawPBX sends INVITEs as datagrams and only counts the answers: it keeps
// no transaction or dialog, so the process's growth is callwake's.
type rawPBX struct {
	conn    *net.UDPConn
	target  string
	addr    *net.UDPAddr
	local   string
	sent    int
	ringing atomic.Int64
	refused atomic.Int64
}

func newRawPBX(t *testing.T, target string) *rawPBX {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetReadBuffer(8 << 20)
	addr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPBX{conn: conn, target: target, addr: addr, local: conn.LocalAddr().String()}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msg := buf[:n]
			switch {
			case bytes.HasPrefix(msg, []byte("SIP/2.0 180 ")):
				p.ringing.Add(1)
			case bytes.HasPrefix(msg, []byte("SIP/2.0 4")), bytes.HasPrefix(msg, []byte("SIP/2.0 5")):
				if !bytes.Contains(msg, []byte("CSeq: 1 CANCEL")) && !bytes.HasPrefix(msg, []byte("SIP/2.0 487")) {
					p.refused.Add(1)
				}
			}
		}
	}()
	return p
}

func (p *rawPBX) request(method string, i int, ext string) []byte {
	host, port, _ := net.SplitHostPort(p.target)
	body := ""
	if method == "INVITE" {
		body = pbxSDP
	}
	return []byte(fmt.Sprintf("%[1]s sip:%[2]s@%[3]s:%[4]s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[5]s;branch=z9hG4bK-mem-%[6]d\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: \"Caller %[6]d\" <sip:+1555%07[6]d@pbx.test>;tag=pbx-%[6]d\r\n"+
		"To: <sip:%[2]s@%[3]s>\r\n"+
		"Call-ID: mem-%[6]d@pbx.test\r\n"+
		"CSeq: 1 %[1]s\r\n"+
		"Contact: <sip:pbx@%[5]s>\r\n"+
		"P-Asserted-Identity: \"Alice Caller\" <sip:+15551234@pbx.test>\r\n"+
		"Content-Type: application/sdp\r\n"+
		"Content-Length: %[7]d\r\n\r\n%[8]s",
		method, ext, host, port, p.local, i, len(body), body))
}

// fill adds n ringing calls, a window at a time so that no datagram is
// dropped, and waits until the bridge holds them all.
func (p *rawPBX) fill(t *testing.T, e *env, n, extensions int) {
	t.Helper()
	const window = 100
	start := e.bridge.ActiveCalls()
	deadline := time.Now().Add(5 * time.Minute)
	sent := 0
	for i := 0; i < n; i++ {
		// Paced on the calls the bridge holds, not on the 180s received: a
		// 180 is not retransmitted, and a datagram can be dropped.
		for sent-(e.bridge.ActiveCalls()-start) >= window {
			if time.Now().After(deadline) || p.refused.Load() > 0 {
				t.Fatalf("stuck: %d sent, %d ringing, %d refused", sent, e.bridge.ActiveCalls()-start, p.refused.Load())
			}
			time.Sleep(time.Millisecond) // pacing the sender, not synchronising
		}
		ext := strconv.Itoa(20000 + p.sent%extensions)
		if _, err := p.conn.WriteToUDP(p.request("INVITE", p.sent, ext), p.addr); err != nil {
			t.Fatal(err)
		}
		p.sent++
		sent++
	}
	for e.bridge.ActiveCalls() < start+n {
		if time.Now().After(deadline) || p.refused.Load() > 0 {
			t.Fatalf("stuck: %d active, want %d; %d refused", e.bridge.ActiveCalls(), start+n, p.refused.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cancelAll cancels every call sent so far and waits until none rings.
func (p *rawPBX) cancelAll(t *testing.T, e *env) {
	t.Helper()
	for i := 0; i < p.sent; i++ {
		ext := strconv.Itoa(20000 + i%5000)
		if _, err := p.conn.WriteToUDP(p.request("CANCEL", i, ext), p.addr); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond) // pacing the sender
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.bridge.Wait(ctx); err != nil {
		t.Fatalf("%d calls still ringing after CANCEL", e.bridge.ActiveCalls())
	}
}
