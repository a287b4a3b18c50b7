package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
	"google.golang.org/api/option"
)

const (
	fcmScope = "https://www.googleapis.com/auth/firebase.messaging"
	// fcmTokenEarlyRefresh makes the keep-warm loop fetch a new access
	// token this long before the current one expires, off a call's path.
	fcmTokenEarlyRefresh = 10 * time.Minute
	// fcmWarmupToken is the registration token of the validate-only
	// message that keeps the connection warm; FCM answers it with
	// INVALID_ARGUMENT, which proves both reachability and our credentials.
	fcmWarmupToken = "callwake-warmup"
)

// fcmSender pushes through FCM HTTP v1 with firebase-admin's messaging
// client, one per project, all sharing one HTTP client.
type fcmSender struct {
	defaultProject string
	endpoint       string
	transport      *http.Transport
	httpClient     *http.Client
	tokens         oauth2.TokenSource
	now            func() time.Time

	mu      sync.Mutex
	clients map[string]*messaging.Client // by project id
}

// newFCMSender returns nil when no FCM credentials are configured.
func newFCMSender(o FCMOptions, now func() time.Time, log *slog.Logger) (*fcmSender, error) {
	if o.CredentialsFile == "" && o.TokenSource == nil {
		return nil, nil
	}
	transport := newFCMTransport(o.TLSConfig)
	project, source := o.ProjectID, o.TokenSource
	if o.CredentialsFile != "" {
		cfg, credProject, err := loadServiceAccount(o.CredentialsFile)
		if err != nil {
			return nil, err
		}
		if project == "" {
			project = credProject
		}
		if source == nil {
			tokenClient := &http.Client{Transport: transport, Timeout: 30 * time.Second}
			source = freshTokens{cfg: cfg, ctx: context.WithValue(context.Background(), oauth2.HTTPClient, tokenClient)}
		}
	}
	if project == "" {
		return nil, errors.New("push: fcm: no project id: set push.fcm.project_id or use credentials with a project_id")
	}
	tokens := oauth2.ReuseTokenSourceWithExpiry(nil, source, fcmTokenEarlyRefresh)
	s := &fcmSender{
		defaultProject: project,
		endpoint:       o.Endpoint,
		transport:      transport,
		httpClient:     &http.Client{Transport: &fcmAuthTransport{tokens: tokens, base: transport, now: now}},
		tokens:         tokens,
		now:            now,
		clients:        map[string]*messaging.Client{},
	}
	if _, err := s.client(context.Background(), project); err != nil {
		return nil, err
	}
	log.Info("FCM enabled", "project_id", project, "endpoint", o.Endpoint)
	return s, nil
}

func loadServiceAccount(file string) (*jwt.Config, string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("push: fcm: read credentials: %w", err)
	}
	var head struct {
		Type      string `json:"type"`
		ProjectID string `json:"project_id"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, "", fmt.Errorf("push: fcm: parse credentials %s: %w", file, err)
	}
	if head.Type != "service_account" {
		return nil, "", fmt.Errorf("push: fcm: credentials %s: type %q, want a service_account key", file, head.Type)
	}
	cfg, err := google.JWTConfigFromJSON(data, fcmScope)
	if err != nil {
		return nil, "", fmt.Errorf("push: fcm: parse credentials %s: %w", file, err)
	}
	return cfg, head.ProjectID, nil
}

// client returns the messaging client of a project, made on first use.
func (s *fcmSender) client(ctx context.Context, project string) (*messaging.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clients[project]; c != nil {
		return c, nil
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: project},
		option.WithHTTPClient(s.httpClient), option.WithEndpoint(s.endpoint))
	if err != nil {
		return nil, fmt.Errorf("push: fcm: firebase app for project %s: %w", project, err)
	}
	c, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: fcm: messaging client for project %s: %w", project, err)
	}
	s.clients[project] = c
	return c, nil
}

func (s *fcmSender) send(ctx context.Context, t Target, p Payload, deadline time.Time) attemptResult {
	project := t.ProjectID
	if project == "" {
		project = s.defaultProject
	}
	client, err := s.client(ctx, project)
	if err != nil {
		return attemptResult{class: classPermanent, reason: "client", err: err}
	}
	// Token first: firebase-admin would retry a failed fetch as a network
	// error, for seconds.
	if r, ok := s.fetchToken(ctx); !ok {
		return r
	}
	ttl := max(deadline.Sub(s.now()).Truncate(time.Second), 0)
	trace := &sendTrace{}
	_, err = client.Send(withTrace(ctx, trace), &messaging.Message{
		Token:   t.Token,
		Data:    FCMData(p),
		Android: &messaging.AndroidConfig{Priority: "high", TTL: &ttl},
	})
	return trace.result(classifyFCM(err, trace))
}

// fetchToken makes sure an access token is at hand (normally cached, and
// refreshed ahead of expiry by the keep-warm loop), waiting no longer than
// ctx; a fetch that outlives ctx completes in the background.
func (s *fcmSender) fetchToken(ctx context.Context) (attemptResult, bool) {
	fetched := make(chan error, 1)
	go func() {
		_, err := s.tokens.Token()
		fetched <- err
	}()
	select {
	case err := <-fetched:
		if err != nil {
			return attemptResult{class: classCredential, reason: "token_fetch", err: fmt.Errorf("fcm: fetch access token: %w", err)}, false
		}
		return attemptResult{}, true
	case <-ctx.Done():
		return transportError(ctx.Err()), false
	}
}

// classifyFCM reads firebase-admin's error. Its messaging.Is* helpers see
// only the unwrapped *FirebaseError, so err must be Send's own.
func classifyFCM(err error, trace *sendTrace) attemptResult {
	if err == nil {
		return attemptResult{class: classDelivered, status: http.StatusOK}
	}
	if authErr := trace.authError(); authErr != nil {
		return attemptResult{class: classCredential, reason: "token_fetch", err: fmt.Errorf("fcm: fetch access token: %w", authErr)}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Cut short while firebase-admin waited to retry.
		r := transportError(err)
		r.err = fmt.Errorf("fcm: %w", err)
		return r
	}
	resp := errorutils.HTTPResponse(err)
	if resp == nil {
		// No HTTP answer: firebase-admin keeps only the message of the
		// transport error; the trace has the error itself.
		if last := trace.lastError(); last != nil {
			r := transportError(last)
			r.err = fmt.Errorf("fcm: %w", last)
			return r
		}
		return attemptResult{class: classPermanent, reason: "invalid_message", err: fmt.Errorf("fcm: %w", err)}
	}
	body := readFCMError(resp)
	reason := body.reason(resp.StatusCode)
	r := attemptResult{status: resp.StatusCode, reason: reason, err: fmt.Errorf("fcm: %d %s: %w", resp.StatusCode, reason, err)}
	switch {
	case messaging.IsUnregistered(err), messaging.IsSenderIDMismatch(err):
		r.class = classDeadToken
	case messaging.IsInvalidArgument(err) || errorutils.IsInvalidArgument(err):
		r.class = classPermanent
		if body.aboutToken() {
			r.class = classDeadToken
		}
	case messaging.IsThirdPartyAuthError(err), errorutils.IsUnauthenticated(err), errorutils.IsPermissionDenied(err):
		r.class = classCredential
	case messaging.IsQuotaExceeded(err), messaging.IsUnavailable(err), messaging.IsInternal(err),
		resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		r.class = classRetryable
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	default:
		r.class = classPermanent
	}
	return r
}

// fcmError is the FCM v1 error body.
type fcmError struct {
	Error struct {
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

func readFCMError(resp *http.Response) fcmError {
	var e fcmError
	if resp.Body != nil {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(data, &e) // a body that is not FCM JSON leaves e empty
	}
	return e
}

// reason is FCM's errorCode, else the error status, else the HTTP status.
func (e fcmError) reason(status int) string {
	for _, d := range e.Error.Details {
		if d.Type == "type.googleapis.com/google.firebase.fcm.v1.FcmError" && d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	if e.Error.Status != "" {
		return e.Error.Status
	}
	return strconv.Itoa(status)
}

// aboutToken tells an INVALID_ARGUMENT about the registration token (a dead
// device) from one about the rest of the message (our bug).
func (e fcmError) aboutToken() bool {
	for _, d := range e.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return strings.Contains(strings.ToLower(e.Error.Message), "registration token")
}

// warm refreshes an ageing access token and sends a validate-only message,
// which opens the connection and checks our credentials.
func (s *fcmSender) warm(ctx context.Context) attemptResult {
	if r, ok := s.fetchToken(ctx); !ok {
		return r
	}
	client, err := s.client(ctx, s.defaultProject)
	if err != nil {
		return attemptResult{class: classPermanent, reason: "client", err: err}
	}
	trace := &sendTrace{}
	_, err = client.SendDryRun(withTrace(ctx, trace), &messaging.Message{
		Token: fcmWarmupToken,
		Data:  map[string]string{"type": "warmup"},
	})
	r := classifyFCM(err, trace)
	if r.class == classDeadToken || (r.class == classPermanent && r.status != 0) {
		// The made-up token was refused: FCM is reachable and took our
		// credentials.
		r.class = classDelivered
	}
	r.provedCredentials = r.class == classDelivered
	return r
}

func (s *fcmSender) close() { s.transport.CloseIdleConnections() }
