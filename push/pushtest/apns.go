package pushtest

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/google/uuid"
)

// APNsMaxPayload is what APNs accepts for a VoIP push body.
const APNsMaxPayload = 5120

// APNsMockConfig says which credentials the mock accepts. Set the token
// fields, ClientCAs, or both.
type APNsMockConfig struct {
	// Token auth: the JWT must be ES256-signed by AuthKey's private half
	// and carry kid KeyID and iss TeamID.
	AuthKey *ecdsa.PublicKey
	KeyID   string
	TeamID  string

	// Certificate auth: client certificates must chain to ClientCAs.
	ClientCAs *x509.CertPool

	// CountOnly keeps counts but not the requests (benchmarks).
	CountOnly bool

	// OnPush, when set, is called with each push as it arrives and the
	// status its checks gave (200 when it passed them; a scripted answer
	// comes after), on the request's goroutine, before the answer is sent.
	OnPush func(req APNsRequest, status int)
}

// APNsRequest is one push the mock received.
type APNsRequest struct {
	Token      string
	Header     http.Header
	Body       []byte
	Auth       string // "token" or "certificate"
	KeyID      string // token auth: the JWT's kid
	TeamID     string // token auth: the JWT's iss
	CertName   string // certificate auth: the client certificate's CN
	ReceivedAt time.Time
}

// APNsResponse is a scripted answer. The zero value is 200.
type APNsResponse struct {
	Status    int           // default 200
	Reason    string        // e.g. "BadDeviceToken", "Unregistered"
	Delay     time.Duration // wait before answering (cut short if the client gives up)
	Timestamp int64         // with 410: when the token stopped being valid, Unix ms
}

// APNsMock is a local APNs: HTTP/2 over TLS.
type APNsMock struct {
	tlsServer

	cfg APNsMockConfig

	mu       sync.Mutex
	verified map[string]jwtClaims // bearer → claims: APNs, too, checks a token once
	script   script[APNsResponse]
	requests []APNsRequest
	pushes   int
	warmups  int
}

// NewAPNsMock starts an APNs mock that lives as long as the test.
func NewAPNsMock(tb testing.TB, cfg APNsMockConfig) *APNsMock {
	tb.Helper()
	m := &APNsMock{cfg: cfg, verified: map[string]jwtClaims{}}
	var serverTLS *tls.Config
	if cfg.ClientCAs != nil {
		serverTLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: cfg.ClientCAs}
	}
	m.start(tb, http.HandlerFunc(m.serve), serverTLS)
	return m
}

// Respond scripts the answers for one device token: in order, the last one
// repeating.
func (m *APNsMock) Respond(token string, answers ...APNsResponse) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.script.set(token, answers)
}

// RespondAll scripts the answers for tokens without their own.
func (m *APNsMock) RespondAll(answers ...APNsResponse) { m.Respond("", answers...) }

// Requests returns the pushes received so far.
func (m *APNsMock) Requests() []APNsRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]APNsRequest(nil), m.requests...)
}

// Pushes counts the pushes received (also with CountOnly).
func (m *APNsMock) Pushes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pushes
}

// Warmups counts the connection warm-ups (requests that are not pushes).
func (m *APNsMock) Warmups() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.warmups
}

// WaitRequests waits until n pushes have arrived and returns them.
func (m *APNsMock) WaitRequests(tb testing.TB, n int) []APNsRequest {
	tb.Helper()
	if !m.notify.waitFor(WaitTimeout, func() bool { return m.Pushes() >= n }) {
		tb.Fatalf("pushtest: APNs mock got %d pushes, want %d", m.Pushes(), n)
	}
	return m.Requests()
}

// WaitWarmups waits until n warm-up requests have arrived.
func (m *APNsMock) WaitWarmups(tb testing.TB, n int) {
	tb.Helper()
	if !m.notify.waitFor(WaitTimeout, func() bool { return m.Warmups() >= n }) {
		tb.Fatalf("pushtest: APNs mock got %d warm-ups, want %d", m.Warmups(), n)
	}
}

func (m *APNsMock) serve(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		http.Error(w, "APNs speaks HTTP/2 only", http.StatusHTTPVersionNotSupported)
		return
	}
	token, isPush := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !isPush {
		apnsError(w, http.StatusNotFound, "BadPath")
		return
	}
	if r.Method != http.MethodPost {
		// Anything else reaching a device path is a connection warm-up.
		m.mu.Lock()
		m.warmups++
		m.mu.Unlock()
		m.notify.wake()
		apnsError(w, http.StatusMethodNotAllowed, "MethodNotAllowed")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	req := APNsRequest{Token: token, Header: r.Header.Clone(), Body: body, ReceivedAt: time.Now()}
	status, reason := m.authenticate(r, &req)
	if status == 0 {
		status, reason = checkAPNsRequest(r, token, body)
	}
	answer, scripted := m.record(req, status == 0)
	if m.cfg.OnPush != nil {
		m.cfg.OnPush(req, cmp.Or(status, http.StatusOK))
	}
	if status != 0 {
		apnsError(w, status, reason)
		return
	}
	if scripted {
		sleep(answer.Delay, r.Context().Done(), m.closed)
		if answer.Status != 0 && answer.Status != http.StatusOK {
			w.Header().Set("apns-id", uuid.NewString())
			if answer.Status == http.StatusGone {
				ts := answer.Timestamp
				if ts == 0 {
					ts = time.Now().UnixMilli()
				}
				writeJSON(w, answer.Status, map[string]any{"reason": answer.Reason, "timestamp": ts})
				return
			}
			apnsError(w, answer.Status, answer.Reason)
			return
		}
	}
	id := r.Header.Get("apns-id")
	if id == "" {
		id = uuid.NewString()
	}
	w.Header().Set("apns-id", id)
	w.WriteHeader(http.StatusOK)
}

// record keeps the push and, for a push that passed the checks, takes its
// scripted answer.
func (m *APNsMock) record(req APNsRequest, valid bool) (APNsResponse, bool) {
	m.mu.Lock()
	defer m.notify.wake()
	defer m.mu.Unlock()
	m.pushes++
	if !m.cfg.CountOnly {
		m.requests = append(m.requests, req)
	}
	if !valid {
		return APNsResponse{}, false
	}
	return m.script.next(req.Token)
}

// authenticate checks the provider JWT or the client certificate, as APNs
// does, and returns 0 when they are good.
func (m *APNsMock) authenticate(r *http.Request, req *APNsRequest) (int, string) {
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "bearer "); ok && m.cfg.AuthKey != nil {
		req.Auth = "token"
		claims, err := m.verifyJWT(bearer)
		if err != nil {
			return http.StatusForbidden, "InvalidProviderToken"
		}
		req.KeyID, req.TeamID = claims.keyID, claims.teamID
		switch {
		case claims.keyID != m.cfg.KeyID || claims.teamID != m.cfg.TeamID:
			return http.StatusForbidden, "InvalidProviderToken"
		case time.Since(claims.issuedAt) > time.Hour:
			return http.StatusForbidden, "ExpiredProviderToken"
		}
		return 0, ""
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && m.cfg.ClientCAs != nil {
		req.Auth = "certificate"
		req.CertName = r.TLS.VerifiedChains[0][0].Subject.CommonName
		return 0, ""
	}
	if m.cfg.ClientCAs != nil && m.cfg.AuthKey == nil {
		return http.StatusForbidden, "BadCertificate"
	}
	return http.StatusForbidden, "MissingProviderToken"
}

type jwtClaims struct {
	keyID, teamID string
	issuedAt      time.Time
}

// verifyJWT checks the ES256 signature of a provider token, once per token.
func (m *APNsMock) verifyJWT(bearer string) (jwtClaims, error) {
	m.mu.Lock()
	claims, ok := m.verified[bearer]
	m.mu.Unlock()
	if ok {
		return claims, nil
	}
	tok, err := jwt.Parse(bearer, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodES256 {
			return nil, fmt.Errorf("alg %v, want ES256", t.Header["alg"])
		}
		return m.cfg.AuthKey, nil
	})
	if err != nil {
		return jwtClaims{}, err
	}
	mc, _ := tok.Claims.(jwt.MapClaims)
	claims.keyID, _ = tok.Header["kid"].(string)
	claims.teamID, _ = mc["iss"].(string)
	iat, ok := mc["iat"].(float64)
	if !ok {
		return jwtClaims{}, errors.New("no iat")
	}
	claims.issuedAt = time.Unix(int64(iat), 0)
	m.mu.Lock()
	m.verified[bearer] = claims
	m.mu.Unlock()
	return claims, nil
}

// checkAPNsRequest checks the headers and body as APNs does for a VoIP push.
func checkAPNsRequest(r *http.Request, token string, body []byte) (int, string) {
	topic := r.Header.Get("apns-topic")
	pushType := r.Header.Get("apns-push-type")
	switch {
	case token == "":
		return http.StatusBadRequest, "MissingDeviceToken"
	case !isHex(token):
		return http.StatusBadRequest, "BadDeviceToken"
	case topic == "":
		return http.StatusBadRequest, "MissingTopic"
	case pushType != "voip" || !strings.HasSuffix(topic, ".voip"):
		return http.StatusBadRequest, "InvalidPushType"
	case r.Header.Get("apns-priority") != "" && r.Header.Get("apns-priority") != "10" && r.Header.Get("apns-priority") != "5":
		return http.StatusBadRequest, "BadPriority"
	case !isInt(r.Header.Get("apns-expiration")):
		return http.StatusBadRequest, "BadExpirationDate"
	case len(body) == 0:
		return http.StatusBadRequest, "PayloadEmpty"
	case len(body) > APNsMaxPayload:
		return http.StatusRequestEntityTooLarge, "PayloadTooLarge"
	}
	return 0, ""
}

func apnsError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, map[string]string{"reason": reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

func isInt(s string) bool {
	if s == "" {
		return true
	}
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}
