package loadtest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callwake/callwake/push/pushtest"
)

// benchSentHeader is the INVITE header SIPp stamps with its clock
// ([timestamp]) and callwake forwards into the push payload.
const benchSentHeader = "X-Bench-Sent"

// pushEndpoint is the APNs callwake pushes to during a load run:
// pushtest's APNs mock, which checks each push as APNs would (provider JWT,
// headers, payload size) and answers it, and tells the endpoint of each
// push as it arrives, to time it and hand it to the phones.
type pushEndpoint struct {
	URL  string
	mock *pushtest.APNsMock
	key  pushtest.APNsKey

	// wake is called, on its own goroutine, with the callee of every
	// incoming_call push.
	wake func(ext string)

	inviteToPush sampler

	mu     sync.Mutex
	counts pushCounts
}

// pushCounts counts what arrived since the last take.
type pushCounts struct {
	Incoming  int // incoming_call pushes
	Cancelled int // call_cancelled pushes
	Untimed   int // incoming_call without a readable X-Bench-Sent
	Refused   int // pushes the mock did not answer 200
}

// newPushEndpoint starts the mock. callwake trusts its certificate through
// rootCAPEM.
func newPushEndpoint(tb testing.TB, dir string, wake func(ext string)) *pushEndpoint {
	tb.Helper()
	key := pushtest.WriteAPNsKey(tb, dir)
	e := &pushEndpoint{key: key, wake: wake}
	e.mock = pushtest.NewAPNsMock(tb, pushtest.APNsMockConfig{AuthKey: &key.Key.PublicKey, KeyID: key.KeyID,
		TeamID: key.TeamID, CountOnly: true, OnPush: e.arrived})
	e.URL = e.mock.URL
	return e
}

// rootCAPEM is what callwake's SSL_CERT_FILE points at.
func (e *pushEndpoint) rootCAPEM() []byte { return e.mock.RootCAPEM() }

// take returns the INVITE→push latencies and the counts since the last
// take, and starts afresh.
func (e *pushEndpoint) take() ([]time.Duration, pushCounts) {
	e.mu.Lock()
	c := e.counts
	e.counts = pushCounts{}
	e.mu.Unlock()
	return e.inviteToPush.take(), c
}

// arrived counts a push, times an incoming_call and wakes its phone.
func (e *pushEndpoint) arrived(req pushtest.APNsRequest, status int) {
	var p struct {
		Type    string            `json:"type"`
		Callee  string            `json:"callee"`
		Headers map[string]string `json:"headers"`
	}
	if status != http.StatusOK {
		e.mu.Lock()
		e.counts.Refused++
		e.mu.Unlock()
	}
	if err := json.Unmarshal(req.Body, &p); err != nil {
		return
	}
	switch p.Type {
	case "incoming_call":
		sent, err := parseSIPpTimestamp(p.Headers[benchSentHeader])
		e.mu.Lock()
		e.counts.Incoming++
		if err != nil {
			e.counts.Untimed++
		}
		e.mu.Unlock()
		if err == nil {
			e.inviteToPush.add(req.ReceivedAt.Sub(sent))
		}
		if e.wake != nil {
			go e.wake(p.Callee)
		}
	case "call_cancelled":
		e.mu.Lock()
		e.counts.Cancelled++
		e.mu.Unlock()
	}
}

// parseSIPpTimestamp reads SIPp's [timestamp]: "2026-11-21<TAB>05:11:17.653731<TAB>1795237877.653731",
// local date and time then Unix seconds with microseconds; only the last is
// used.
func parseSIPpTimestamp(v string) (time.Time, error) {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return time.Time{}, errors.New("no timestamp")
	}
	secs, frac, _ := strings.Cut(fields[len(fields)-1], ".")
	s, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	frac = (frac + "000000")[:6]
	us, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(s, us*1000), nil
}
