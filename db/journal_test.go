package db

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Call-log rows are queued, and the Store's reads see them at once.
func TestJournalReadsSeeQueuedWrites(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	c := Call{ID: "c1", SIPCallID: "sip-1", Extension: "1001", InviteAt: time.UnixMilli(1000)}
	if err := s.InsertCall(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Outcome, c.Status, c.EndAt = "timeout", 487, time.UnixMilli(5000)
	if err := s.UpdateCall(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPushAttempt(ctx, PushAttempt{CallID: "c1", DeviceID: 7, Provider: "apns",
		Type: "incoming_call", SentAt: time.UnixMilli(1001), Outcome: "delivered"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCall(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != "timeout" || got.Status != 487 {
		t.Errorf("call = %+v, want the update applied", got)
	}
	attempts, err := s.PushAttempts(ctx, "c1")
	if err != nil || len(attempts) != 1 {
		t.Fatalf("push attempts = %v, %v; want 1", attempts, err)
	}
}

// A row that fails costs only itself: the rest of its batch is written.
func TestJournalBadRowCostsOnlyItself(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for i := range 50 {
		id := fmt.Sprintf("c%d", i)
		if i == 25 {
			id = "c0" // a duplicate id: the UNIQUE constraint refuses it
		}
		if err := s.InsertCall(ctx, Call{ID: id, Extension: "1001", InviteAt: time.UnixMilli(int64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	calls, err := s.ListCalls(ctx, CallQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 49 {
		t.Errorf("%d calls written, want 49", len(calls))
	}
}

// Close commits what is queued; later writes are refused, not lost silently.
func TestJournalCloseCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if err := s.InsertCall(ctx, Call{ID: fmt.Sprint(i), Extension: "1001", InviteAt: time.UnixMilli(int64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertCall(ctx, Call{ID: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v, want ErrClosed", err)
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM calls`).Scan(&n); err != nil || n != 1000 {
		t.Errorf("%d calls after reopening (%v), want 1000", n, err)
	}
}

// Device sightings wait in the journal; the LRU still sees them.
func TestSightingsCountForEviction(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	addExtension(t, s, "1001")
	for i := range 5 {
		if _, err := s.UpsertDevice(ctx, apnsDevice("1001", i), 5); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Lookup(ctx, "1001"); err != nil { // the directory holds the devices now
		t.Fatal(err)
	}
	// Device 0, the oldest, is seen again (a journal write): device 1 is
	// now the least recently seen, and the sixth device evicts it.
	if _, err := s.UpsertDevice(ctx, apnsDevice("1001", 0), 5); err != nil {
		t.Fatal(err)
	}
	up, err := s.UpsertDevice(ctx, apnsDevice("1001", 5), 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Evicted) != 1 || up.Evicted[0].Token != apnsDevice("1001", 1).Token {
		t.Errorf("evicted %+v, want device 1", up.Evicted)
	}
}
