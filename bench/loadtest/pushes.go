package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/callwake/callwake/push/pushtest"
)

// benchSentHeader is the INVITE header SIPp stamps with its clock
// ([timestamp]) and callwake forwards into the push payload.
const benchSentHeader = "X-Bench-Sent"

// pushEndpoint is the APNs callwake pushes to during a load run. It stands
// in front of pushtest's APNs mock: each push is timed and handed to the
// phones the moment it arrives, then relayed to the mock, which checks it
// as APNs would (provider JWT, headers, payload size) and gives the answer
// callwake gets. pushtest has no hook for "a push arrived", hence the relay.
type pushEndpoint struct {
	URL  string
	mock *pushtest.APNsMock
	key  pushtest.APNsKey
	srv  *httptest.Server
	to   *http.Client // HTTP/2 to the mock

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

// newPushEndpoint starts the mock and the endpoint in front of it. The
// endpoint uses httptest's certificate, as the mock does, so the mock's
// RootCAPEM makes callwake trust both.
func newPushEndpoint(tb testing.TB, dir string, wake func(ext string)) *pushEndpoint {
	tb.Helper()
	key := pushtest.WriteAPNsKey(tb, dir)
	mock := pushtest.NewAPNsMock(tb, pushtest.APNsMockConfig{AuthKey: &key.Key.PublicKey, KeyID: key.KeyID,
		TeamID: key.TeamID, CountOnly: true})
	e := &pushEndpoint{mock: mock, key: key, wake: wake,
		to: &http.Client{Transport: &http2.Transport{TLSClientConfig: mock.ClientTLS()}, Timeout: 10 * time.Second}}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	e.srv.EnableHTTP2 = true
	e.srv.StartTLS()
	e.URL = e.srv.URL
	tb.Cleanup(e.srv.Close)
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

func (e *pushEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	isPush := r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/3/device/")
	if isPush {
		e.arrived(body, arrived)
	}
	status := e.relay(w, r, body)
	if isPush && status != http.StatusOK {
		e.mu.Lock()
		e.counts.Refused++
		e.mu.Unlock()
	}
}

// arrived times an incoming_call push and wakes its phone.
func (e *pushEndpoint) arrived(body []byte, at time.Time) {
	var p struct {
		Type    string            `json:"type"`
		Callee  string            `json:"callee"`
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
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
			e.inviteToPush.add(at.Sub(sent))
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

// relay passes the request to the mock and its answer back to callwake.
func (e *pushEndpoint) relay(w http.ResponseWriter, r *http.Request, body []byte) int {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, e.mock.URL+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return http.StatusBadGateway
	}
	req.Header = r.Header.Clone()
	res, err := e.to.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return http.StatusBadGateway
	}
	defer res.Body.Close()
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
	return res.StatusCode
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
