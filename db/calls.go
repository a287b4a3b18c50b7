package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Call is one row of the call log.
type Call struct {
	Seq             int64 // order of arrival; the pagination cursor
	ID              string
	SIPCallID       string
	Extension       string
	CallerName      string
	CallerNumber    string
	InviteAt        time.Time
	PushAt          time.Time // first push sent
	FirstRegisterAt time.Time // first pushed device registered
	AnswerAt        time.Time
	EndAt           time.Time
	Outcome         string // ringing, answered, completed, declined, timeout, cancelled, busy, unavailable, failed
	Status          int    // final SIP status answered to the PBX
	AnsweredBy      int64  // device id, 0 when none
}

const callColumns = `seq, id, sip_call_id, extension, caller_name, caller_number, invite_at,
	push_at, first_register_at, answer_at, end_at, outcome, status, answered_by`

func scanCall(row interface{ Scan(...any) error }) (Call, error) {
	var c Call
	var invite, push, reg, answer, end int64
	err := row.Scan(&c.Seq, &c.ID, &c.SIPCallID, &c.Extension, &c.CallerName, &c.CallerNumber,
		&invite, &push, &reg, &answer, &end, &c.Outcome, &c.Status, &c.AnsweredBy)
	c.InviteAt, c.PushAt, c.FirstRegisterAt = fromMillis(invite), fromMillis(push), fromMillis(reg)
	c.AnswerAt, c.EndAt = fromMillis(answer), fromMillis(end)
	return c, err
}

// InsertCall adds a call to the log. Like UpdateCall and
// RecordPushAttempt, it queues the row for the journal and returns at once
// (or when ctx ends, if the queue is full); the Store's reads see it.
func (s *Store) InsertCall(ctx context.Context, c Call) error {
	if c.Outcome == "" {
		c.Outcome = "ringing"
	}
	return s.journal.write(ctx, journalOp{insertCall: &callRow{id: c.ID, sipCallID: c.SIPCallID,
		extension: c.Extension, callerName: c.CallerName, callerNumber: c.CallerNumber,
		inviteAt: toMillis(c.InviteAt), pushAt: toMillis(c.PushAt), firstRegisterAt: toMillis(c.FirstRegisterAt),
		answerAt: toMillis(c.AnswerAt), endAt: toMillis(c.EndAt), outcome: c.Outcome, status: c.Status,
		answeredBy: c.AnsweredBy}})
}

// UpdateCall writes the call's timestamps and outcome (queued).
func (s *Store) UpdateCall(ctx context.Context, c Call) error {
	return s.journal.write(ctx, journalOp{updateCall: &callRow{id: c.ID, pushAt: toMillis(c.PushAt),
		firstRegisterAt: toMillis(c.FirstRegisterAt), answerAt: toMillis(c.AnswerAt), endAt: toMillis(c.EndAt),
		outcome: c.Outcome, status: c.Status, answeredBy: c.AnsweredBy}})
}

// GetCall returns one call by callwake's id.
func (s *Store) GetCall(ctx context.Context, id string) (Call, error) {
	if err := s.Flush(ctx); err != nil {
		return Call{}, err
	}
	c, err := scanCall(s.r.QueryRowContext(ctx, `SELECT `+callColumns+` FROM calls WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Call{}, fmt.Errorf("call %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Call{}, fmt.Errorf("reading call %s: %w", id, err)
	}
	return c, nil
}

// CallQuery selects a page of the call log, newest first.
type CallQuery struct {
	Limit     int    // at most this many (1-1000)
	BeforeSeq int64  // only calls older than this cursor; 0 = from the newest
	Extension string // only this extension's calls, when set
}

// ListCalls returns a page of the call log, newest first.
func (s *Store) ListCalls(ctx context.Context, q CallQuery) ([]Call, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 50
	}
	if err := s.Flush(ctx); err != nil {
		return nil, err
	}
	where, args := "1 = 1", []any{}
	if q.BeforeSeq > 0 {
		where += " AND seq < ?"
		args = append(args, q.BeforeSeq)
	}
	if q.Extension != "" {
		where += " AND extension = ?"
		args = append(args, q.Extension)
	}
	args = append(args, q.Limit)
	rows, err := s.r.QueryContext(ctx, `SELECT `+callColumns+` FROM calls WHERE `+where+
		` ORDER BY seq DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing calls: %w", err)
	}
	defer rows.Close()
	var out []Call
	for rows.Next() {
		c, err := scanCall(rows)
		if err != nil {
			return nil, fmt.Errorf("listing calls: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// PushAttempt is one push sent (or not) to one device.
type PushAttempt struct {
	CallID   string
	DeviceID int64
	Provider string
	Type     string // incoming_call | call_cancelled
	SentAt   time.Time
	Latency  time.Duration
	Outcome  string
	Reason   string
	Status   int
	// DeviceError becomes the device's last_error ("" after a delivery).
	DeviceError string
}

// RecordPushAttempt logs a push attempt and stamps it on its device
// (last_push_at, last_error), committed together (queued).
func (s *Store) RecordPushAttempt(ctx context.Context, a PushAttempt) error {
	return s.journal.write(ctx,
		journalOp{pushAttempt: &pushAttemptRow{callID: a.CallID, deviceID: a.DeviceID, provider: a.Provider,
			typ: a.Type, sentAt: toMillis(a.SentAt), latencyUS: a.Latency.Microseconds(), outcome: a.Outcome,
			reason: a.Reason, status: a.Status}},
		journalOp{stampDevice: &deviceStamp{deviceID: a.DeviceID, pushed: true, pushAt: toMillis(a.SentAt),
			lastError: a.DeviceError}})
}

// PushAttempts returns the push attempts of a call, oldest first.
func (s *Store) PushAttempts(ctx context.Context, callID string) ([]PushAttempt, error) {
	if err := s.Flush(ctx); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT call_id, device_id, provider, type, sent_at,
		latency_us, outcome, reason, status FROM push_attempts WHERE call_id = ? ORDER BY id`, callID)
	if err != nil {
		return nil, fmt.Errorf("listing push attempts of %s: %w", callID, err)
	}
	defer rows.Close()
	var out []PushAttempt
	for rows.Next() {
		var a PushAttempt
		var sent, latency int64
		if err := rows.Scan(&a.CallID, &a.DeviceID, &a.Provider, &a.Type, &sent, &latency,
			&a.Outcome, &a.Reason, &a.Status); err != nil {
			return nil, fmt.Errorf("listing push attempts of %s: %w", callID, err)
		}
		a.SentAt, a.Latency = fromMillis(sent), time.Duration(latency)*time.Microsecond
		out = append(out, a)
	}
	return out, rows.Err()
}
