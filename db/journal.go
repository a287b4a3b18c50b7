package db

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned for writes queued after Close.
var ErrClosed = errors.New("store closed")

// Journal sizes: how many writes may wait, and how many one transaction
// commits. A full queue makes writers wait (back-pressure), never drops.
// A batch is committed once journalLinger has passed since its first write,
// or at once when it is full or someone flushes: each commit costs WAL
// writes (syscalls) and a B-tree walk per index, so fewer, larger commits
// leave more of the CPU to calls.
const (
	journalQueue  = 8192
	journalBatch  = 512
	journalLinger = 50 * time.Millisecond
)

// journal writes what calls leave behind — call-log rows, push attempts,
// device sightings — from one goroutine, many rows per transaction, so
// that no call waits for SQLite's single writer. A write is queued in
// order; reads of those tables flush the queue first (Store.Flush), so
// nobody reading through the Store sees the log behind.
//
// The queue holds rows, not SQL: a batch is written by a batchWriter, which
// folds the writes of a row into one (a call's insert and its updates, a
// device's stamps) and inserts many rows per statement, leaving the tables
// as the writes one by one would. An answered call took six statements;
// at 1,000 calls/s it takes about three (BenchmarkJournalCalls), and
// SQLite's per-statement work (cursors, binding, database/sql) was most of
// the journal's CPU besides the commit.
type journal struct {
	s       *Store
	batch   *batchWriter // the writer goroutine's
	ops     chan journalOp
	pending atomic.Int64 // queued and not committed yet
	done    chan struct{}
	log     *slog.Logger

	mu     sync.RWMutex // held for reading while queueing, for writing by close
	closed bool
}

// journalOp is one write (one of its row fields is set), or a flush marker
// (flushed != nil), closed once every op queued before it is committed.
type journalOp struct {
	insertCall  *callRow
	updateCall  *callRow
	pushAttempt *pushAttemptRow
	stampDevice *deviceStamp
	flushed     chan struct{}
}

func newJournal(s *Store, log *slog.Logger) *journal {
	j := &journal{s: s, batch: newBatchWriter(), ops: make(chan journalOp, journalQueue), done: make(chan struct{}), log: log}
	go j.run()
	return j
}

// write queues statements that are committed together.
func (j *journal) write(ctx context.Context, ops ...journalOp) error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return ErrClosed
	}
	j.pending.Add(int64(len(ops)))
	for i, op := range ops {
		select {
		case j.ops <- op:
		case <-ctx.Done():
			j.pending.Add(-int64(len(ops) - i))
			return ctx.Err()
		}
	}
	return nil
}

// flush waits until every write queued before it is committed.
func (j *journal) flush(ctx context.Context) error {
	if j.pending.Load() == 0 {
		return nil
	}
	op := journalOp{flushed: make(chan struct{})}
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return nil // close committed everything
	}
	select {
	case j.ops <- op:
	case <-ctx.Done():
		j.mu.RUnlock()
		return ctx.Err()
	}
	j.mu.RUnlock()
	select {
	case <-op.flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close commits what is queued and stops the writer.
func (j *journal) close() {
	j.mu.Lock()
	if !j.closed {
		j.closed = true
		close(j.ops)
	}
	j.mu.Unlock()
	<-j.done
}

func (j *journal) run() {
	defer close(j.done)
	batch := make([]journalOp, 0, journalBatch)
	linger := time.NewTimer(journalLinger)
	for op := range j.ops {
		batch = append(batch[:0], op)
		linger.Reset(journalLinger)
		j.commit(j.collect(batch, linger))
	}
}

// collect adds ops to batch until it is full, a flush asks for it, the
// linger timer fires or the queue closes.
func (j *journal) collect(batch []journalOp, linger *time.Timer) []journalOp {
	for len(batch) < journalBatch && batch[len(batch)-1].flushed == nil {
		select {
		case op, ok := <-j.ops:
			if !ok {
				return batch
			}
			batch = append(batch, op)
		case <-linger.C:
			return batch
		}
	}
	return batch
}

// commit writes a batch in one transaction; if that fails, each statement
// on its own, so that one bad row costs only itself.
func (j *journal) commit(batch []journalOp) {
	n := 0
	for _, op := range batch {
		if op.flushed == nil {
			n++
		}
	}
	if n > 0 {
		// No deadline: the SQLite driver watches a context that can end
		// with a goroutine per statement; the busy timeout bounds waits.
		ctx := context.Background()
		err := j.s.inTx(ctx, func(tx *txn) error { return j.batch.write(ctx, tx, batch) })
		if err != nil {
			j.log.Warn("call log batch failed; writing its rows one by one", "rows", n, "err", err)
			for _, op := range batch {
				if op.flushed != nil {
					continue
				}
				if err := execOne(ctx, j.s.w, op); err != nil {
					j.log.Error("call log row lost", "err", err)
				}
			}
		}
		j.pending.Add(-int64(n))
	}
	for _, op := range batch {
		if op.flushed != nil {
			close(op.flushed)
		}
	}
}
