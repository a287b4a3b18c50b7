package sip

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

const testRealm = "callwake.test"

var quietLogger = slog.New(slog.DiscardHandler)

// fakeClock is a settable clock for nonce and binding expiry.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// passwordStore keeps passwords and serves their HA1s, as the db does.
type passwordStore struct {
	passwords map[string]string
	err       error
}

func (s *passwordStore) PhoneCredentials(_ context.Context, ext string) (Credentials, bool, error) {
	if s.err != nil {
		return Credentials{}, false, s.err
	}
	pw, ok := s.passwords[ext]
	if !ok {
		return Credentials{}, false, nil
	}
	return Credentials{
		HA1MD5:    HA1(AlgorithmMD5, ext, testRealm, pw),
		HA1SHA256: HA1(AlgorithmSHA256, ext, testRealm, pw),
		Realm:     testRealm,
	}, true, nil
}

func newTestAuth(t *testing.T, clock *fakeClock, store CredentialStore) *DigestAuth {
	t.Helper()
	a, err := NewDigestAuth(DigestConfig{Realm: testRealm, Store: store, Now: clock.Now, Secret: []byte("test secret"), Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func registerRequest1001() *sip.Request {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: testRealm})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1001", Host: testRealm}})
	return req
}

// challengeFor returns the challenge of algorithm among WWW-Authenticate values.
func challengeFor(t testing.TB, values []string, algorithm string) *digest.Challenge {
	t.Helper()
	for _, v := range values {
		chal, err := digest.ParseChallenge(v)
		if err != nil {
			t.Fatalf("parsing challenge %q: %v", v, err)
		}
		if chal.Algorithm == algorithm {
			return chal
		}
	}
	t.Fatalf("no %s challenge in %q", algorithm, values)
	return nil
}

// authorize adds an Authorization answering chal to req.
func authorize(t testing.TB, req *sip.Request, chal *digest.Challenge, user, password string) {
	t.Helper()
	cred, err := digest.Digest(chal, digest.Options{
		Method:   req.Method.String(),
		URI:      req.Recipient.Addr(),
		Username: user,
		Password: password,
	})
	if err != nil {
		t.Fatal(err)
	}
	req.RemoveHeader("Authorization")
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
}

func TestHA1KnownVectors(t *testing.T) {
	// RFC 2617 3.5 and RFC 7616 3.9.1.
	if got := HA1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life"); got != "939e7578ed9e3c518a452acee763bce9" {
		t.Errorf("MD5 HA1 = %s", got)
	}
	a := &DigestAuth{}
	cred := credentials{
		URI: "/dir/index.html", Nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
		Cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", Nc: "00000001", QOP: "auth",
	}
	for alg, want := range map[string]string{
		"MD5":     "8ca523f5e9506fed4657c9700eebdbec",
		"SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
	} {
		ha1 := HA1(alg, "Mufasa", "http-auth@example.org", "Circle of Life")
		if got := a.response(hashOf(alg), ha1, "GET", cred); got != want {
			t.Errorf("%s response = %s, want %s", alg, got, want)
		}
	}
	if HA1("SHA-512", "u", "r", "p") != "" {
		t.Error("HA1 of an unsupported algorithm is not empty")
	}
}

func TestDigestChallenges(t *testing.T) {
	a := newTestAuth(t, newFakeClock(), &passwordStore{})
	values := a.Challenges(false)
	if len(values) != 2 {
		t.Fatalf("got %d challenges, want 2", len(values))
	}
	for i, alg := range []string{"SHA-256", "MD5"} {
		chal, err := digest.ParseChallenge(values[i])
		if err != nil {
			t.Fatal(err)
		}
		if chal.Algorithm != alg || chal.Realm != testRealm || !chal.SupportsQOP("auth") || chal.Stale || chal.Nonce == "" {
			t.Errorf("challenge %d = %q", i, values[i])
		}
	}
	stale := challengeFor(t, a.Challenges(true), "MD5")
	if !stale.Stale {
		t.Error("stale challenge lacks stale=true")
	}
}

// The challenges are formatted in place; phones must get exactly what
// icholy/digest's Challenge.String wrote, realm quoting included.
func TestChallengesAsIcholyFormats(t *testing.T) {
	for _, realm := range []string{testRealm, `pbx "main" \ east`, "café.example", "tab\there"} {
		a, err := NewDigestAuth(DigestConfig{Realm: realm, Store: &passwordStore{}, Now: newFakeClock().Now, Logger: quietLogger,
			Algorithms: []string{AlgorithmMD5, AlgorithmSHA256}})
		if err != nil {
			t.Fatal(err)
		}
		for _, stale := range []bool{false, true} {
			values := a.Challenges(stale)
			for i, alg := range []string{AlgorithmMD5, AlgorithmSHA256} {
				chal, err := digest.ParseChallenge(values[i])
				if err != nil {
					t.Fatalf("parsing %q: %v", values[i], err)
				}
				want := (&digest.Challenge{Realm: realm, Nonce: chal.Nonce, Algorithm: alg, QOP: []string{"auth"}, Stale: stale}).String()
				if values[i] != want {
					t.Errorf("challenge %q, icholy/digest writes %q", values[i], want)
				}
			}
		}
	}
}

func TestDigestVerify(t *testing.T) {
	store := &passwordStore{passwords: map[string]string{"1001": "secret1001", "1002": "secret1002"}}
	tests := []struct {
		name      string
		algorithm string
		user      string // Authorization username
		password  string
		setup     func(clock *fakeClock, chal *digest.Challenge)
		want      AuthResult
	}{
		{name: "MD5", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthOK},
		{name: "SHA-256", algorithm: "SHA-256", user: "1001", password: "secret1001", want: AuthOK},
		{name: "wrong password", algorithm: "SHA-256", user: "1001", password: "guess", want: AuthInvalid},
		{name: "wrong password MD5", algorithm: "MD5", user: "1001", password: "guess", want: AuthInvalid},
		{name: "username is not the To user", algorithm: "MD5", user: "1002", password: "secret1002", want: AuthForbidden},
		{
			name: "expired nonce", algorithm: "SHA-256", user: "1001", password: "secret1001", want: AuthStale,
			setup: func(clock *fakeClock, _ *digest.Challenge) { clock.Advance(DefaultNonceTTL + time.Second) },
		},
		{
			name: "expired nonce and wrong password", algorithm: "MD5", user: "1001", password: "guess", want: AuthInvalid,
			setup: func(clock *fakeClock, _ *digest.Challenge) { clock.Advance(DefaultNonceTTL + time.Second) },
		},
		{
			name: "nonce just inside its lifetime", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthOK,
			setup: func(clock *fakeClock, _ *digest.Challenge) { clock.Advance(DefaultNonceTTL) },
		},
		{
			name: "tampered nonce", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthInvalid,
			setup: func(_ *fakeClock, chal *digest.Challenge) {
				b := []byte(chal.Nonce)
				b[3] ^= 1
				chal.Nonce = string(b)
			},
		},
		{
			name: "nonce from the future", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthInvalid,
			setup: func(clock *fakeClock, _ *digest.Challenge) { clock.Advance(-time.Minute) },
		},
		{
			name: "foreign nonce", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthInvalid,
			setup: func(_ *fakeClock, chal *digest.Challenge) { chal.Nonce = "970a1b42-d8a7-4fce-91a1-4767e9ed561b" },
		},
		{
			name: "unsupported algorithm", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthInvalid,
			setup: func(_ *fakeClock, chal *digest.Challenge) { chal.Algorithm = "SHA-512" },
		},
		{
			name: "other realm", algorithm: "MD5", user: "1001", password: "secret1001", want: AuthMissing,
			setup: func(_ *fakeClock, chal *digest.Challenge) { chal.Realm = "pbx.example.com" },
		},
		{name: "unknown user", algorithm: "MD5", user: "1009", password: "x", want: AuthForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			a := newTestAuth(t, clock, store)
			chal := challengeFor(t, a.Challenges(false), tt.algorithm)
			if tt.setup != nil {
				tt.setup(clock, chal)
			}
			req := registerRequest1001()
			authorize(t, req, chal, tt.user, tt.password)
			got, err := a.Verify(context.Background(), req, "1001")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDigestUnknownUserLooksLikeWrongPassword(t *testing.T) {
	a := newTestAuth(t, newFakeClock(), &passwordStore{passwords: map[string]string{"1001": "pw"}})
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: testRealm})
	authorize(t, req, challengeFor(t, a.Challenges(false), "MD5"), "1009", "pw")
	got, err := a.Verify(context.Background(), req, "1009")
	if err != nil || got != AuthInvalid {
		t.Fatalf("Verify for an unknown extension = %v, %v; want %v like a wrong password", got, err, AuthInvalid)
	}
}

func TestDigestMissingAndMalformed(t *testing.T) {
	a := newTestAuth(t, newFakeClock(), &passwordStore{})
	req := registerRequest1001()
	if got, _ := a.Verify(context.Background(), req, "1001"); got != AuthMissing {
		t.Errorf("no Authorization: %v, want %v", got, AuthMissing)
	}
	req.AppendHeader(sip.NewHeader("Authorization", `Digest username="1001" realm="callwake.test"`))
	if got, _ := a.Verify(context.Background(), req, "1001"); got != AuthInvalid {
		t.Errorf("malformed Authorization: %v, want %v", got, AuthInvalid)
	}
}

func TestDigestStoreError(t *testing.T) {
	storeErr := errors.New("database is locked")
	a := newTestAuth(t, newFakeClock(), &passwordStore{err: storeErr})
	req := registerRequest1001()
	authorize(t, req, challengeFor(t, a.Challenges(false), "MD5"), "1001", "pw")
	if _, err := a.Verify(context.Background(), req, "1001"); !errors.Is(err, storeErr) {
		t.Fatalf("error = %v, want it to wrap the store's", err)
	}
}

func TestDigestNoQOPTolerated(t *testing.T) {
	store := &passwordStore{passwords: map[string]string{"1001": "pw"}}
	a := newTestAuth(t, newFakeClock(), store)
	chal := challengeFor(t, a.Challenges(false), "MD5")
	chal.QOP = nil // RFC 2069 style answer
	req := registerRequest1001()
	authorize(t, req, chal, "1001", "pw")
	if !strings.Contains(req.GetHeader("Authorization").Value(), "response=") {
		t.Fatal("no response in Authorization")
	}
	if got, _ := a.Verify(context.Background(), req, "1001"); got != AuthOK {
		t.Fatalf("Verify = %v, want %v", got, AuthOK)
	}
}

// An admin may offer MD5 alone for phones whose stack fails on SHA-256; an
// answer with an algorithm not offered is refused.
func TestDigestAlgorithmsAreConfigurable(t *testing.T) {
	store := &passwordStore{passwords: testPasswords}
	a, err := NewDigestAuth(DigestConfig{Realm: testRealm, Store: store, Algorithms: []string{AlgorithmMD5}, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	chals := a.Challenges(false)
	if len(chals) != 1 || !strings.Contains(chals[0], "MD5") {
		t.Fatalf("challenges = %v", chals)
	}
	if _, err := NewDigestAuth(DigestConfig{Realm: testRealm, Store: store, Algorithms: []string{"SHA-512"}}); err == nil {
		t.Error("unknown algorithm accepted")
	}
	if a.offered(AlgorithmSHA256) || !a.offered("") || !a.offered("md5") {
		t.Error("offered() disagrees with the configured algorithms")
	}
}
