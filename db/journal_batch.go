package db

import "context"

// batchWriter writes a batch of journal ops as few statements as gives the
// same tables as running them one by one, in order:
//
//   - an update of a call inserted earlier in the batch is folded into the
//     insert, and of several updates of a call only the last is written
//     (an update sets every column it writes, by id);
//   - a device's stamps (sightings, pushes) become one update that writes
//     the latest value of each column they set;
//   - the inserts of calls and of push attempts go in multi-row statements,
//     in the order they were queued, so that seq and push_attempts.id are
//     given in that order.
//
// Reordering across tables is safe because nothing ties them: no foreign
// key or trigger links calls, push_attempts and the push stamps of
// devices, and the batch commits as one transaction. Within a table, rows
// differ or are coalesced as above. The one sequence this cannot express —
// an insert of a call id the batch already wrote (a duplicate, or an
// update that came before its insert) — ends a segment: what came before
// is written first, as it is.
type batchWriter struct {
	calls    []callRow      // inserts, with the updates that followed folded in
	inserted map[string]int // call id → index in calls
	updates  []callRow      // the last update of calls inserted before the segment
	updated  map[string]int // call id → index in updates
	attempts []*pushAttemptRow
	stamps   []deviceStamp
	stamped  map[int64]int // device id → index in stamps
	args     []any
}

func newBatchWriter() *batchWriter {
	return &batchWriter{inserted: map[string]int{}, updated: map[string]int{}, stamped: map[int64]int{}}
}

// write writes the batch's ops (flush markers are skipped) in tx.
func (w *batchWriter) write(ctx context.Context, tx execer, batch []journalOp) error {
	w.reset()
	for _, op := range batch {
		if w.add(op) {
			continue
		}
		if err := w.flush(ctx, tx); err != nil {
			return err
		}
		w.add(op)
	}
	return w.flush(ctx, tx)
}

// add coalesces op into the segment; false if op must start a new one.
func (w *batchWriter) add(op journalOp) bool {
	switch {
	case op.insertCall != nil:
		id := op.insertCall.id
		if _, ok := w.inserted[id]; ok {
			return false
		}
		if _, ok := w.updated[id]; ok {
			return false
		}
		w.inserted[id] = len(w.calls)
		w.calls = append(w.calls, *op.insertCall)
	case op.updateCall != nil:
		id := op.updateCall.id
		if i, ok := w.inserted[id]; ok {
			w.calls[i].applyUpdate(op.updateCall)
		} else if i, ok := w.updated[id]; ok {
			w.updates[i] = *op.updateCall
		} else {
			w.updated[id] = len(w.updates)
			w.updates = append(w.updates, *op.updateCall)
		}
	case op.pushAttempt != nil:
		w.attempts = append(w.attempts, op.pushAttempt)
	case op.stampDevice != nil:
		if i, ok := w.stamped[op.stampDevice.deviceID]; ok {
			w.stamps[i].merge(op.stampDevice)
		} else {
			w.stamped[op.stampDevice.deviceID] = len(w.stamps)
			w.stamps = append(w.stamps, *op.stampDevice)
		}
	}
	return true
}

// flush writes the segment and starts the next.
func (w *batchWriter) flush(ctx context.Context, tx execer) error {
	defer w.reset()
	if err := w.inChunks(ctx, tx, insertCallsSQL, len(w.calls),
		func(k int, args []any) []any { return w.calls[k].insertArgs(args) }); err != nil {
		return err
	}
	if err := w.inChunks(ctx, tx, updateCallsSQL, len(w.updates),
		func(k int, args []any) []any { return w.updates[k].updateArgs(args) }); err != nil {
		return err
	}
	if err := w.inChunks(ctx, tx, insertPushAttemptsSQL, len(w.attempts),
		func(k int, args []any) []any { return w.attempts[k].insertArgs(args) }); err != nil {
		return err
	}
	for k := range w.stamps {
		query, args := w.stamps[k].sqlAndArgs(w.args[:0])
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return err
		}
	}
	return nil
}

// inChunks writes n rows with statements of 2^k rows (statements[k], as
// chunk picks them); rowArgs appends row i's arguments.
func (w *batchWriter) inChunks(ctx context.Context, tx execer, statements []string, n int,
	rowArgs func(i int, args []any) []any) error {
	for done := 0; done < n; {
		i, rows := chunk(n - done)
		w.args = w.args[:0]
		for k := done; k < done+rows; k++ {
			w.args = rowArgs(k, w.args)
		}
		if _, err := tx.ExecContext(ctx, statements[i], w.args...); err != nil {
			return err
		}
		done += rows
	}
	return nil
}

func (w *batchWriter) reset() {
	clear(w.calls)
	clear(w.updates)
	clear(w.attempts)
	clear(w.args[:cap(w.args)]) // let go of the rows' strings
	w.calls, w.updates, w.attempts, w.stamps = w.calls[:0], w.updates[:0], w.attempts[:0], w.stamps[:0]
	clear(w.inserted)
	clear(w.updated)
	clear(w.stamped)
}
