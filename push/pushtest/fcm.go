package pushtest

import (
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

// FCMMaxData is what FCM accepts for a message's data, bytes.
const FCMMaxData = 4096

// FCMMockConfig says what the FCM mock accepts.
type FCMMockConfig struct {
	// ProjectID, when set, is the only project messages may be sent to;
	// others get 403 PERMISSION_DENIED.
	ProjectID string
	// ServiceAccountKey, when set, must have signed the JWT assertions
	// sent to the token endpoint (pushtest.ServiceAccount.Key);
	// WriteServiceAccount adds its key too. With none, any is accepted.
	ServiceAccountKey *rsa.PublicKey
	// StaticTokens are access tokens accepted without the token endpoint
	// (for push.FCMOptions.TokenSource).
	StaticTokens []string
	// CountOnly keeps counts but not the requests (benchmarks).
	CountOnly bool
}

// FCMRequest is one messages:send the mock received.
type FCMRequest struct {
	ProjectID  string
	Header     http.Header
	Body       []byte // the raw JSON request
	Message    FCMMessage
	ReceivedAt time.Time
}

// FCMMessage is the decoded v1 message.
type FCMMessage struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android *struct {
		Priority string `json:"priority"`
		TTL      string `json:"ttl"`
	} `json:"android"`
	// Keys lists every key of the message object, to check that nothing
	// else (no notification) was sent.
	Keys []string `json:"-"`
}

// FCMResponse is a scripted answer. The zero value is 200.
type FCMResponse struct {
	Code           int    // HTTP status, default 200
	Status         string // google.rpc status; default from Code
	ErrorCode      string // FcmError errorCode, e.g. "UNREGISTERED"
	Message        string
	FieldViolation string // adds a BadRequest detail on this field, e.g. "message.token"
	RetryAfter     string
	Delay          time.Duration
}

// FCMMock is a local FCM HTTP v1 endpoint with an OAuth2 token endpoint.
type FCMMock struct {
	tlsServer

	cfg FCMMockConfig

	mu            sync.Mutex
	script        script[FCMResponse]
	requests      []FCMRequest
	sends         int
	dryRuns       int
	tokenRequests int
	issued        map[string]bool
	tokenFailure  int
	accountKeys   []*rsa.PublicKey
}

var sendPath = regexp.MustCompile(`^/v1/projects/([^/]+)/messages:send$`)

// NewFCMMock starts an FCM mock that lives as long as the test.
func NewFCMMock(tb testing.TB, cfg FCMMockConfig) *FCMMock {
	tb.Helper()
	m := &FCMMock{cfg: cfg, issued: map[string]bool{}}
	if cfg.ServiceAccountKey != nil {
		m.accountKeys = append(m.accountKeys, cfg.ServiceAccountKey)
	}
	for _, t := range cfg.StaticTokens {
		m.issued[t] = true
	}
	m.start(tb, http.HandlerFunc(m.serve), nil)
	return m
}

// Endpoint is the value for push.FCMOptions.Endpoint.
func (m *FCMMock) Endpoint() string { return m.URL + "/v1" }

// TokenURL is the OAuth2 token endpoint, for WriteServiceAccount.
func (m *FCMMock) TokenURL() string { return m.URL + "/token" }

// WriteServiceAccount writes a service-account JSON whose token_uri is
// this mock, for its project (or "pushtest"), and makes the token endpoint
// check assertions against its key.
func (m *FCMMock) WriteServiceAccount(tb testing.TB, dir string) ServiceAccount {
	tb.Helper()
	project := m.cfg.ProjectID
	if project == "" {
		project = "pushtest"
	}
	sa := WriteServiceAccount(tb, dir, project, m.TokenURL())
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accountKeys = append(m.accountKeys, &sa.Key.PublicKey)
	return sa
}

// Respond scripts the answers for one registration token: in order, the
// last one repeating.
func (m *FCMMock) Respond(token string, answers ...FCMResponse) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.script.set(token, answers)
}

// RespondAll scripts the answers for tokens without their own.
func (m *FCMMock) RespondAll(answers ...FCMResponse) { m.Respond("", answers...) }

// FailTokens makes the token endpoint refuse with status (0: grant again),
// and forgets the access tokens it issued, as when a key is revoked.
func (m *FCMMock) FailTokens(status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokenFailure = status
	if status != 0 {
		m.issued = map[string]bool{}
	}
}

// Requests returns the messages received so far (not the validate-only ones).
func (m *FCMMock) Requests() []FCMRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]FCMRequest(nil), m.requests...)
}

// Sends counts the messages received (also with CountOnly).
func (m *FCMMock) Sends() int { return m.count(&m.sends) }

// DryRuns counts validate-only messages (connection warm-ups).
func (m *FCMMock) DryRuns() int { return m.count(&m.dryRuns) }

// TokenRequests counts access tokens asked for.
func (m *FCMMock) TokenRequests() int { return m.count(&m.tokenRequests) }

func (m *FCMMock) count(n *int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *n
}

// WaitRequests waits until n messages have arrived and returns them.
func (m *FCMMock) WaitRequests(tb testing.TB, n int) []FCMRequest {
	tb.Helper()
	if !m.notify.waitFor(WaitTimeout, func() bool { return m.Sends() >= n }) {
		tb.Fatalf("pushtest: FCM mock got %d messages, want %d", m.Sends(), n)
	}
	return m.Requests()
}

// WaitDryRuns waits until n validate-only messages have arrived.
func (m *FCMMock) WaitDryRuns(tb testing.TB, n int) {
	tb.Helper()
	if !m.notify.waitFor(WaitTimeout, func() bool { return m.DryRuns() >= n }) {
		tb.Fatalf("pushtest: FCM mock got %d validate-only messages, want %d", m.DryRuns(), n)
	}
}

// WaitTokenRequests waits until n access tokens have been asked for.
func (m *FCMMock) WaitTokenRequests(tb testing.TB, n int) {
	tb.Helper()
	if !m.notify.waitFor(WaitTimeout, func() bool { return m.TokenRequests() >= n }) {
		tb.Fatalf("pushtest: FCM mock got %d token requests, want %d", m.TokenRequests(), n)
	}
}

func (m *FCMMock) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		m.serveToken(w, r)
		return
	}
	match := sendPath.FindStringSubmatch(r.URL.Path)
	if match == nil || r.Method != http.MethodPost {
		fcmError(w, FCMResponse{Code: http.StatusNotFound, Message: "Not found: " + r.Method + " " + r.URL.Path})
		return
	}
	project := match[1]
	m.mu.Lock()
	authorized := m.issued[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	m.mu.Unlock()
	if !authorized {
		fcmError(w, FCMResponse{Code: http.StatusUnauthorized, Message: "Request had invalid authentication credentials. Expected OAuth 2 access token."})
		return
	}
	if m.cfg.ProjectID != "" && project != m.cfg.ProjectID {
		fcmError(w, FCMResponse{Code: http.StatusForbidden, Message: "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/" + project + "'"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	var envelope struct {
		ValidateOnly bool            `json:"validate_only"`
		Message      json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		fcmError(w, FCMResponse{Code: http.StatusBadRequest, Message: "Invalid JSON payload received. " + err.Error()})
		return
	}
	msg, problem := decodeFCMMessage(envelope.Message)
	if problem != "" {
		fcmError(w, FCMResponse{Code: http.StatusBadRequest, Message: problem})
		return
	}
	if envelope.ValidateOnly {
		m.mu.Lock()
		m.dryRuns++
		m.mu.Unlock()
		m.notify.wake()
		writeJSON(w, http.StatusOK, map[string]string{"name": "projects/" + project + "/messages/fake_message_id"})
		return
	}
	answer, _ := m.record(FCMRequest{ProjectID: project, Header: r.Header.Clone(), Body: body, Message: msg, ReceivedAt: time.Now()})
	sleep(answer.Delay, r.Context().Done(), m.closed)
	if answer.Code != 0 && answer.Code != http.StatusOK {
		fcmError(w, answer)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": fmt.Sprintf("projects/%s/messages/0:%d", project, time.Now().UnixNano())})
}

func (m *FCMMock) record(req FCMRequest) (FCMResponse, bool) {
	m.mu.Lock()
	defer m.notify.wake()
	defer m.mu.Unlock()
	m.sends++
	if !m.cfg.CountOnly {
		m.requests = append(m.requests, req)
	}
	return m.script.next(req.Message.Token)
}

// decodeFCMMessage checks the v1 message shape as FCM does and returns a
// problem for an invalid one.
func decodeFCMMessage(raw json.RawMessage) (FCMMessage, string) {
	var msg FCMMessage
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil || keys == nil {
		return msg, "Invalid JSON payload: missing message"
	}
	for k := range keys {
		msg.Keys = append(msg.Keys, k)
	}
	var data map[string]any
	if d, ok := keys["data"]; ok {
		if err := json.Unmarshal(d, &data); err != nil {
			return msg, "Invalid value at 'message.data'"
		}
		for k, v := range data {
			if _, ok := v.(string); !ok {
				return msg, fmt.Sprintf("Invalid value at 'message.data[%s].value' (TYPE_STRING)", k)
			}
		}
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return msg, "Invalid JSON payload received. " + err.Error()
	}
	if msg.Token == "" {
		return msg, "Recipient of the message is not set."
	}
	if a := msg.Android; a != nil {
		if p := strings.ToLower(a.Priority); p != "" && p != "high" && p != "normal" {
			return msg, "Invalid value at 'message.android.priority'"
		}
		if a.TTL != "" && !ttlPattern.MatchString(a.TTL) {
			return msg, "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)"
		}
	}
	size := 0
	for k, v := range msg.Data {
		size += len(k) + len(v)
	}
	if size > FCMMaxData {
		return msg, "Message is too big"
	}
	return msg, ""
}

var ttlPattern = regexp.MustCompile(`^\d+(\.\d{1,9})?s$`)

// serveToken is the OAuth2 JWT-bearer grant a service account uses.
func (m *FCMMock) serveToken(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.tokenRequests++
	failure := m.tokenFailure
	m.mu.Unlock()
	m.notify.wake()
	if failure != 0 {
		writeJSON(w, failure, map[string]string{"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	m.mu.Lock()
	keys := m.accountKeys
	m.mu.Unlock()
	if len(keys) > 0 && !validAssertion(r.PostForm.Get("assertion"), keys, m.TokenURL()) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
		return
	}
	m.mu.Lock()
	token := "ya29.pushtest-" + strconv.Itoa(m.tokenRequests)
	m.issued[token] = true
	m.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 3600})
}

// validAssertion checks a service account's JWT: RS256 by one of keys,
// addressed to the token endpoint, asking for the FCM scope.
func validAssertion(assertion string, keys []*rsa.PublicKey, audience string) bool {
	for _, key := range keys {
		tok, err := jwt.Parse(assertion, func(t *jwt.Token) (any, error) {
			if t.Method != jwt.SigningMethodRS256 {
				return nil, fmt.Errorf("alg %v, want RS256", t.Header["alg"])
			}
			return key, nil
		})
		if err != nil {
			continue
		}
		claims, _ := tok.Claims.(jwt.MapClaims)
		scope, _ := claims["scope"].(string)
		return claims.VerifyAudience(audience, true) &&
			strings.Contains(scope, "https://www.googleapis.com/auth/firebase.messaging")
	}
	return false
}

var rpcStatus = map[int]string{
	http.StatusBadRequest:          "INVALID_ARGUMENT",
	http.StatusUnauthorized:        "UNAUTHENTICATED",
	http.StatusForbidden:           "PERMISSION_DENIED",
	http.StatusNotFound:            "NOT_FOUND",
	http.StatusTooManyRequests:     "RESOURCE_EXHAUSTED",
	http.StatusInternalServerError: "INTERNAL",
	http.StatusServiceUnavailable:  "UNAVAILABLE",
}

// fcmError writes FCM's v1 error JSON.
func fcmError(w http.ResponseWriter, a FCMResponse) {
	status := a.Status
	if status == "" {
		status = rpcStatus[a.Code]
		if status == "" {
			status = "UNKNOWN"
		}
	}
	details := []map[string]any{}
	if a.ErrorCode != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": a.ErrorCode})
	}
	if a.FieldViolation != "" {
		details = append(details, map[string]any{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []map[string]string{{"field": a.FieldViolation, "description": "Invalid registration token"}},
		})
	}
	if a.RetryAfter != "" {
		w.Header().Set("Retry-After", a.RetryAfter)
	}
	writeJSON(w, a.Code, map[string]any{"error": map[string]any{
		"code": a.Code, "message": a.Message, "status": status, "details": details,
	}})
}
