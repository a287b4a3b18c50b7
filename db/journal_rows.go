package db

import (
	"context"
	"database/sql"
	"strings"
)

// The rows the journal writes, and their single-row statements (used for a
// write on its own, and when a batch fails). Times are Unix milliseconds.

// callRow is a row of calls. An update writes only what changes after the
// INVITE (push_at … answered_by), by id.
type callRow struct {
	id, sipCallID, extension, callerName, callerNumber string
	inviteAt, pushAt, firstRegisterAt, answerAt, endAt int64
	outcome                                            string
	status                                             int
	answeredBy                                         int64
}

func (c *callRow) insertArgs(args []any) []any {
	return append(args, c.id, c.sipCallID, c.extension, c.callerName, c.callerNumber, c.inviteAt,
		c.pushAt, c.firstRegisterAt, c.answerAt, c.endAt, c.outcome, c.status, c.answeredBy)
}

func (c *callRow) updateArgs(args []any) []any {
	return append(args, c.pushAt, c.firstRegisterAt, c.answerAt, c.endAt, c.outcome, c.status, c.answeredBy, c.id)
}

// applyUpdate gives c the columns an update of it writes.
func (c *callRow) applyUpdate(u *callRow) {
	c.pushAt, c.firstRegisterAt, c.answerAt, c.endAt = u.pushAt, u.firstRegisterAt, u.answerAt, u.endAt
	c.outcome, c.status, c.answeredBy = u.outcome, u.status, u.answeredBy
}

const updateCallSQL = `UPDATE calls SET push_at = ?, first_register_at = ?, answer_at = ?, end_at = ?,
	outcome = ?, status = ?, answered_by = ? WHERE id = ?`

// pushAttemptRow is a row of push_attempts.
type pushAttemptRow struct {
	callID            string
	deviceID          int64
	provider, typ     string
	sentAt, latencyUS int64
	outcome, reason   string
	status            int
}

func (a *pushAttemptRow) insertArgs(args []any) []any {
	return append(args, a.callID, a.deviceID, a.provider, a.typ, a.sentAt, a.latencyUS, a.outcome, a.reason, a.status)
}

// deviceStamp is what a sighting (last_seen_at) or a push (last_push_at)
// writes on a device; both write last_error.
type deviceStamp struct {
	deviceID       int64
	seen, pushed   bool // which of seenAt, pushAt are written
	seenAt, pushAt int64
	lastError      string
}

// merge makes s the stamp of s followed by later.
func (s *deviceStamp) merge(later *deviceStamp) {
	if later.seen {
		s.seen, s.seenAt = true, later.seenAt
	}
	if later.pushed {
		s.pushed, s.pushAt = true, later.pushAt
	}
	s.lastError = later.lastError
}

// A stamp writes only the columns it sets: last_seen_at is indexed
// (devices_by_extension), and writing it unchanged would still rewrite the
// index entry.
func (s *deviceStamp) sqlAndArgs(args []any) (string, []any) {
	switch {
	case s.seen && s.pushed:
		return `UPDATE devices SET last_seen_at = ?, last_push_at = ?, last_error = ? WHERE id = ?`,
			append(args, s.seenAt, s.pushAt, s.lastError, s.deviceID)
	case s.seen:
		return `UPDATE devices SET last_seen_at = ?, last_error = ? WHERE id = ?`,
			append(args, s.seenAt, s.lastError, s.deviceID)
	default:
		return `UPDATE devices SET last_push_at = ?, last_error = ? WHERE id = ?`,
			append(args, s.pushAt, s.lastError, s.deviceID)
	}
}

// Multi-row INSERTs: a batch's rows of a table go in statements of
// 2^k rows (k ≤ 6), so that a handful of statements, each prepared once,
// write them: 50 rows are 32 + 16 + 2. 64 rows of 13 columns stay below
// the smallest limit SQLite builds have had on bound parameters (999).
const maxRowsPerInsert = 64

var (
	insertCallsSQL        = multiRowInserts(`INSERT OR FAIL INTO calls (id, sip_call_id, extension, caller_name, caller_number, invite_at, push_at, first_register_at, answer_at, end_at, outcome, status, answered_by) VALUES `, 13)
	insertPushAttemptsSQL = multiRowInserts(`INSERT OR FAIL INTO push_attempts (call_id, device_id, provider, type, sent_at, latency_us, outcome, reason, status) VALUES `, 9)
)

// updateCallsSQL update 1, 2, 4 … 64 calls by id, from rows of updateArgs.
var updateCallsSQL = multiRowUpdates(`UPDATE OR FAIL calls SET push_at = v.column1, first_register_at = v.column2,
	answer_at = v.column3, end_at = v.column4, outcome = v.column5, status = v.column6, answered_by = v.column7
	FROM (VALUES `, 8, `) AS v WHERE calls.id = v.column8`)

func multiRowUpdates(prefix string, columns int, suffix string) []string {
	row := "(?" + strings.Repeat(", ?", columns-1) + ")"
	var out []string
	for n := 1; n <= maxRowsPerInsert; n *= 2 {
		out = append(out, prefix+row+strings.Repeat(", "+row, n-1)+suffix)
	}
	return out
}

// multiRowInserts returns the statements inserting 1, 2, 4 … 64 rows, by
// log2 of the row count.
func multiRowInserts(prefix string, columns int) []string {
	row := "(?" + strings.Repeat(", ?", columns-1) + ")"
	var out []string
	for n := 1; n <= maxRowsPerInsert; n *= 2 {
		out = append(out, prefix+row+strings.Repeat(", "+row, n-1))
	}
	return out
}

// chunk is the largest statement size, as an index in multiRowInserts' list
// and a row count, that n rows fill.
func chunk(n int) (index, rows int) {
	for rows = maxRowsPerInsert; rows > n; rows /= 2 {
		index++
	}
	return len(insertCallsSQL) - 1 - index, rows
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// execOne writes op on its own.
func execOne(ctx context.Context, ex execer, op journalOp) error {
	var err error
	switch {
	case op.insertCall != nil:
		_, err = ex.ExecContext(ctx, insertCallsSQL[0], op.insertCall.insertArgs(nil)...)
	case op.updateCall != nil:
		_, err = ex.ExecContext(ctx, updateCallSQL, op.updateCall.updateArgs(nil)...)
	case op.pushAttempt != nil:
		_, err = ex.ExecContext(ctx, insertPushAttemptsSQL[0], op.pushAttempt.insertArgs(nil)...)
	case op.stampDevice != nil:
		query, args := op.stampDevice.sqlAndArgs(nil)
		_, err = ex.ExecContext(ctx, query, args...)
	}
	return err
}
