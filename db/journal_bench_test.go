package db

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Offsets of a call's writes from its INVITE, like an answered call of the
// load bench (flow 2) at 1,000 calls/s: the push is sent at once, the woken
// phone registers and answers within tens of milliseconds, the call ends
// after 1.2 s.
const (
	benchPushAfter     = 2
	benchSightingAfter = 15
	benchAnswerAfter   = 25
	benchEndAfter      = 1200
	benchExtensions    = 3000
	benchLinger        = 50 // ms of traffic per flush, like the journal's linger
)

// BenchmarkJournalCalls replays the journal traffic of answered calls, one
// call per millisecond of virtual time: per call the INSERT of its row, a
// push attempt (with the device's push stamp), the device's sighting, the
// answer and the end, interleaved with the calls around it, and a flush
// every 50 ms of traffic, so that batches are as large as at 1,000 calls/s.
// It reports the process's CPU time per call (the writer runs beside the
// callers: wall time is not all of it) and allocations per call.
func BenchmarkJournalCalls(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	devices := benchPopulate(b, s)

	start := time.UnixMilli(1_700_000_000_000)
	// Call ids as the bridge makes them: UUIDv7, in time order.
	ids := make([]string, 0, b.N)
	call := func(i int) Call {
		for len(ids) <= i {
			ids = append(ids, uuid.Must(uuid.NewV7()).String())
		}
		return Call{ID: ids[i], SIPCallID: fmt.Sprintf("sip-%d", i),
			Extension: devices[i%len(devices)].Extension, CallerName: "Caller", CallerNumber: "+15550100",
			InviteAt: start.Add(time.Duration(i) * time.Millisecond)}
	}
	events := func(t int) error {
		if i := t; i < b.N {
			if err := s.InsertCall(ctx, call(i)); err != nil {
				return err
			}
		}
		if i := t - benchPushAfter; i >= 0 && i < b.N {
			c, d := call(i), devices[i%len(devices)]
			if err := s.RecordPushAttempt(ctx, PushAttempt{CallID: c.ID, DeviceID: d.ID, Provider: d.Provider,
				Type: "incoming_call", SentAt: c.InviteAt.Add(benchPushAfter * time.Millisecond),
				Latency: 900 * time.Microsecond, Outcome: "delivered", Status: 200}); err != nil {
				return err
			}
		}
		if i := t - benchSightingAfter; i >= 0 && i < b.N {
			if _, err := s.UpsertDevice(ctx, devices[i%len(devices)], 5); err != nil {
				return err
			}
		}
		if i := t - benchAnswerAfter; i >= 0 && i < b.N {
			c := call(i)
			c.PushAt = c.InviteAt.Add(benchPushAfter * time.Millisecond)
			c.FirstRegisterAt = c.InviteAt.Add(benchSightingAfter * time.Millisecond)
			c.AnswerAt = c.InviteAt.Add(benchAnswerAfter * time.Millisecond)
			c.AnsweredBy, c.Outcome, c.Status = devices[i%len(devices)].ID, "answered", 200
			if err := s.UpdateCall(ctx, c); err != nil {
				return err
			}
		}
		if i := t - benchEndAfter; i >= 0 && i < b.N {
			c := call(i)
			c.PushAt = c.InviteAt.Add(benchPushAfter * time.Millisecond)
			c.FirstRegisterAt = c.InviteAt.Add(benchSightingAfter * time.Millisecond)
			c.AnswerAt = c.InviteAt.Add(benchAnswerAfter * time.Millisecond)
			c.EndAt = c.InviteAt.Add(benchEndAfter * time.Millisecond)
			c.AnsweredBy, c.Outcome, c.Status = devices[i%len(devices)].ID, "completed", 200
			if err := s.UpdateCall(ctx, c); err != nil {
				return err
			}
		}
		if t%benchLinger == benchLinger-1 {
			return s.Flush(ctx)
		}
		return nil
	}

	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for t := 0; t < b.N+benchEndAfter; t++ {
		if err := events(t); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/call")
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM calls WHERE outcome = 'completed'`).Scan(&n); err != nil || n < b.N {
		b.Fatalf("%d calls completed (%v), want %d", n, err, b.N)
	}
}

// benchPopulate adds extensions with a device each and a call log of
// 100,000 calls, and loads the directory; it returns the devices.
func benchPopulate(b *testing.B, s *Store) []Device {
	b.Helper()
	ctx := context.Background()
	err := s.inTx(ctx, func(tx *txn) error {
		for i := range benchExtensions {
			ext := fmt.Sprint(10000 + i)
			if _, err := tx.ExecContext(ctx, `INSERT INTO extensions (extension, realm, ha1_md5, ha1_sha256,
				created_at, updated_at) VALUES (?, 'example.com', '', '', 1, 1)`, ext); err != nil {
				return err
			}
			d := apnsDevice(ext, i)
			if _, err := tx.ExecContext(ctx, `INSERT INTO devices (extension, provider, token, topic,
				registered_at, last_seen_at) VALUES (?, ?, ?, ?, 1, 1)`, ext, d.Provider, d.Token, d.Topic); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
			INSERT INTO calls (id, sip_call_id, extension, invite_at, outcome) SELECT
			lower(hex(randomblob(16))), 'old-' || i, 10000 + i % ?, i, 'completed' FROM n`, benchExtensions); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO push_attempts (call_id, device_id, provider, type, sent_at,
			latency_us, outcome) SELECT id, 1, 'apns', 'incoming_call', invite_at, 1000, 'delivered' FROM calls`)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	devices := make([]Device, benchExtensions)
	for i := range devices {
		e, err := s.Lookup(ctx, fmt.Sprint(10000+i))
		if err != nil || len(e.Devices) != 1 {
			b.Fatalf("extension %d: %v, %d devices", 10000+i, err, len(e.Devices))
		}
		devices[i] = e.Devices[0]
	}
	return devices
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
