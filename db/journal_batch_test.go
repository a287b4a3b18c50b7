package db

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// A batch written coalesced, in multi-row statements, leaves the tables as
// its writes run one by one would: random sequences of inserts and updates
// of calls (some inserted before the batch, some updated before their
// insert), push attempts and device stamps, over few ids so that they
// collide.
func TestBatchWriterMatchesOneByOne(t *testing.T) {
	ctx := context.Background()
	coalesced, oneByOne := openTest(t), openTest(t)
	for _, s := range []*Store{coalesced, oneByOne} {
		addExtension(t, s, "1001")
		for i := range 4 {
			if _, err := s.UpsertDevice(ctx, apnsDevice("1001", i), 10); err != nil {
				t.Fatal(err)
			}
		}
	}
	w := newBatchWriter()
	for seed := range 300 {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		before, batch := randomJournalOps(rng)
		for _, s := range []*Store{coalesced, oneByOne} {
			if err := s.inTx(ctx, func(tx *txn) error {
				for _, q := range []string{`DELETE FROM calls`, `DELETE FROM push_attempts`,
					`UPDATE devices SET last_seen_at = 1, last_push_at = 0, last_error = ''`} {
					if _, err := tx.ExecContext(ctx, q); err != nil {
						return err
					}
				}
				for _, op := range before {
					if err := execOne(ctx, tx, op); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := coalesced.inTx(ctx, func(tx *txn) error { return w.write(ctx, tx, batch) }); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for _, op := range batch {
			if err := execOne(ctx, oneByOne.w, op); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		if got, want := dumpJournalTables(t, coalesced), dumpJournalTables(t, oneByOne); got != want {
			t.Fatalf("seed %d: coalesced batch wrote\n%s\none by one\n%s", seed, got, want)
		}
	}
}

// randomJournalOps returns calls inserted before a batch, and a batch that
// no statement of fails when run one by one.
func randomJournalOps(rng *rand.Rand) (before, batch []journalOp) {
	inserted := map[string]bool{}
	for i := range rng.IntN(3) {
		id := fmt.Sprintf("c%d", i)
		inserted[id] = true
		before = append(before, journalOp{insertCall: &callRow{id: id, extension: "1001", inviteAt: int64(i),
			outcome: "ringing"}})
	}
	for range 1 + rng.IntN(150) {
		id := fmt.Sprintf("c%d", rng.IntN(8))
		device := int64(1 + rng.IntN(5)) // 5 is not a device: its stamps change nothing
		at := rng.Int64N(1000)
		switch rng.IntN(6) {
		case 0:
			if inserted[id] {
				continue
			}
			inserted[id] = true
			batch = append(batch, journalOp{insertCall: &callRow{id: id, sipCallID: "sip-" + id, extension: "1001",
				callerName: fmt.Sprint(rng.IntN(9)), inviteAt: at, outcome: "ringing"}})
		case 1:
			batch = append(batch, journalOp{updateCall: &callRow{id: id, pushAt: at, answerAt: rng.Int64N(9),
				endAt: rng.Int64N(9), outcome: fmt.Sprint("o", rng.IntN(9)), status: rng.IntN(600),
				answeredBy: device}})
		case 2:
			batch = append(batch, journalOp{pushAttempt: &pushAttemptRow{callID: id, deviceID: device,
				provider: "apns", typ: "incoming_call", sentAt: at, latencyUS: rng.Int64N(9), outcome: "delivered",
				reason: fmt.Sprint(rng.IntN(9)), status: 200}})
		case 3:
			batch = append(batch, journalOp{stampDevice: &deviceStamp{deviceID: device, pushed: true, pushAt: at,
				lastError: fmt.Sprint("e", rng.IntN(3))}})
		case 4:
			batch = append(batch, journalOp{stampDevice: &deviceStamp{deviceID: device, seen: true, seenAt: at}})
		case 5:
			batch = append(batch, journalOp{flushed: make(chan struct{})})
		}
	}
	return before, batch
}

func dumpJournalTables(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{`SELECT ` + callColumns + ` FROM calls ORDER BY seq`,
		`SELECT * FROM push_attempts ORDER BY id`, `SELECT ` + deviceColumns + ` FROM devices ORDER BY id`} {
		rows, err := s.r.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
