package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
)

type callJSON struct {
	ID              string     `json:"id"`
	SIPCallID       string     `json:"sip_call_id"`
	Extension       string     `json:"extension"`
	CallerName      string     `json:"caller_name,omitempty"`
	CallerNumber    string     `json:"caller_number,omitempty"`
	Outcome         string     `json:"outcome"`
	Status          int        `json:"status,omitempty"`
	AnsweredBy      int64      `json:"answered_by,omitempty"`
	InviteAt        time.Time  `json:"invite_at"`
	PushAt          *time.Time `json:"push_at,omitempty"`
	FirstRegisterAt *time.Time `json:"first_register_at,omitempty"`
	AnswerAt        *time.Time `json:"answer_at,omitempty"`
	EndAt           *time.Time `json:"end_at,omitempty"`
	// Timings in milliseconds from the INVITE, when the event happened.
	PushMS     *int64 `json:"push_ms,omitempty"`
	RegisterMS *int64 `json:"register_ms,omitempty"`
	AnswerMS   *int64 `json:"answer_ms,omitempty"`
	DurationMS *int64 `json:"duration_ms,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func sinceMS(from, to time.Time) *int64 {
	if to.IsZero() || from.IsZero() {
		return nil
	}
	ms := to.Sub(from).Milliseconds()
	return &ms
}

// CallView is a call-log row as the API and the CLI show it.
func CallView(c db.Call) any {
	out := callJSON{
		ID: c.ID, SIPCallID: c.SIPCallID, Extension: c.Extension, CallerName: c.CallerName,
		CallerNumber: c.CallerNumber, Outcome: c.Outcome, Status: c.Status, AnsweredBy: c.AnsweredBy,
		InviteAt: c.InviteAt, PushAt: optTime(c.PushAt), FirstRegisterAt: optTime(c.FirstRegisterAt),
		AnswerAt: optTime(c.AnswerAt), EndAt: optTime(c.EndAt),
		PushMS: sinceMS(c.InviteAt, c.PushAt), RegisterMS: sinceMS(c.InviteAt, c.FirstRegisterAt),
		AnswerMS: sinceMS(c.InviteAt, c.AnswerAt), DurationMS: sinceMS(c.AnswerAt, c.EndAt),
	}
	return out
}

// listCalls answers the call log, newest first. Query: limit (1-1000, default
// 50), before (the next_before of the previous page), extension.
func (s *Server) listCalls(w http.ResponseWriter, r *http.Request) {
	q := db.CallQuery{Limit: 50, Extension: r.URL.Query().Get("extension")}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit %q: want a number from 1 to 1000", v)
			return
		}
		q.Limit = n
	}
	if v := r.URL.Query().Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "before %q: want the next_before of the previous page", v)
			return
		}
		q.BeforeSeq = n
	}
	calls, err := s.opts.Store.ListCalls(r.Context(), q)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]any, 0, len(calls))
	for _, c := range calls {
		out = append(out, CallView(c))
	}
	resp := map[string]any{"calls": out}
	if len(calls) == q.Limit {
		resp["next_before"] = calls[len(calls)-1].Seq
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) testPush(w http.ResponseWriter, r *http.Request) {
	ext := r.PathValue("ext")
	if _, err := s.opts.Store.GetExtension(r.Context(), ext); err != nil {
		s.storeError(w, r, err)
		return
	}
	if s.opts.PushTester == nil {
		writeError(w, http.StatusServiceUnavailable, "push sending is not running")
		return
	}
	results, err := s.opts.PushTester.TestPush(r.Context(), ext, false)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"extension": ext, "results": TestPushView(results)})
}

// TestPushResult is what one device's provider said to a test push.
type TestPushResult struct {
	DeviceID int64  `json:"device_id"`
	Provider string `json:"provider"`
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason,omitempty"`
	Status   int    `json:"status,omitempty"`
	Attempts int    `json:"attempts"`
	Latency  string `json:"latency"`
	Error    string `json:"error,omitempty"`
}

// TestPushView is the API's and the CLI's view of push results.
func TestPushView(results []push.Result) []TestPushResult {
	out := make([]TestPushResult, 0, len(results))
	for _, r := range results {
		v := TestPushResult{DeviceID: r.Target.DeviceID, Provider: r.Target.Provider, Outcome: r.Outcome,
			Reason: r.Reason, Status: r.Status, Attempts: r.Attempts, Latency: r.Latency.Round(time.Microsecond).String()}
		if r.Err != nil {
			v.Error = r.Err.Error()
		}
		out = append(out, v)
	}
	return out
}
