package push

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/callwake/callwake/push/pushtest"
)

func newTestTokenSender(t *testing.T) *apnsSender {
	key := pushtest.WriteAPNsKey(t, t.TempDir())
	tok := &token.Token{AuthKey: key.Key, KeyID: key.KeyID, TeamID: key.TeamID}
	if _, err := tok.Generate(); err != nil {
		t.Fatal(err)
	}
	return &apnsSender{token: tok, log: slog.New(slog.DiscardHandler)}
}

func TestAPNsTokenRefreshRespectsAppleMinimum(t *testing.T) {
	s := newTestTokenSender(t)
	bearer := s.token.Bearer
	if s.refreshToken(minTokenAge) || s.token.Bearer != bearer {
		t.Fatalf("a fresh token was re-signed: Apple refuses tokens more often than every 20 min")
	}
	s.token.IssuedAt = time.Now().Add(-41 * time.Minute).Unix()
	if !s.refreshToken(tokenRefreshAge) || s.token.Bearer == bearer {
		t.Fatalf("a 41 min old token was not re-signed by the keep-warm refresh")
	}
	if age := time.Since(time.Unix(s.token.IssuedAt, 0)); age > time.Minute {
		t.Errorf("re-signed token is %v old", age)
	}
}

func TestAPNsExpiredProviderTokenRetriedOnlyWithNewToken(t *testing.T) {
	s := newTestTokenSender(t)
	expired := &apns2.Response{StatusCode: http.StatusForbidden, Reason: apns2.ReasonExpiredProviderToken}
	if r := s.classify(expired); r.class != classCredential || r.retry {
		t.Errorf("fresh token: %+v, want a credential error, not retried", r)
	}
	s.token.IssuedAt = time.Now().Add(-25 * time.Minute).Unix()
	if r := s.classify(expired); r.class != classCredential || !r.retry {
		t.Errorf("old token: %+v, want a credential error retried with a new token", r)
	}
	invalid := &apns2.Response{StatusCode: http.StatusForbidden, Reason: apns2.ReasonInvalidProviderToken}
	s.token.IssuedAt = time.Now().Add(-25 * time.Minute).Unix()
	if r := s.classify(invalid); r.retry {
		t.Errorf("InvalidProviderToken retried: a new token from the same key cannot help")
	}
}

func TestBackoffJitterAndCap(t *testing.T) {
	b := backoff{next: 100 * time.Millisecond, max: 400 * time.Millisecond}
	for _, step := range []time.Duration{100, 200, 400, 400} {
		step *= time.Millisecond
		d := b.delay(0)
		if d < step/2 || d > step {
			t.Errorf("delay %v outside [%v, %v]", d, step/2, step)
		}
	}
	if d := b.delay(3 * time.Second); d != 3*time.Second {
		t.Errorf("delay with Retry-After 3s = %v, want 3s", d)
	}
}
