package sip

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Digest algorithms offered to phones (RFC 8760), most preferred first.
const (
	AlgorithmSHA256 = "SHA-256"
	AlgorithmMD5    = "MD5"
)

// DefaultNonceTTL is how long a nonce is accepted before the phone is told
// stale=true and has to answer a fresh challenge.
const DefaultNonceTTL = 5 * time.Minute

const (
	nonceTimeLen = 8  // big-endian Unix nanoseconds
	nonceMACLen  = 16 // truncated HMAC-SHA-256
	// nonceSkew tolerates a nonce minted slightly "in the future" when the
	// clock steps back.
	nonceSkew = 5 * time.Second
)

// Credentials are what the store keeps for an extension: hex HA1 hashes
// (see [HA1]) and the realm they were computed with (empty: the configured
// realm). A hash left empty refuses that algorithm.
type Credentials struct {
	HA1MD5, HA1SHA256, Realm string
}

// CredentialStore gives an extension's stored credentials; found is false
// for an unknown extension.
type CredentialStore interface {
	PhoneCredentials(ctx context.Context, ext string) (Credentials, bool, error)
}

// HA1 returns hex(H(user:realm:password)) for algorithm "MD5" or "SHA-256",
// the value a [CredentialStore] keeps; "" for any other algorithm.
func HA1(algorithm, user, realm, password string) string {
	h := hashOf(algorithm)
	if h == unsupportedHash {
		return ""
	}
	return h.join(user, realm, password)
}

// AuthResult is the outcome of checking a request's digest credentials.
type AuthResult int

const (
	// AuthOK: the credentials are valid for the user.
	AuthOK AuthResult = iota
	// AuthMissing: no credentials for our realm; challenge.
	AuthMissing
	// AuthInvalid: wrong password, unknown user, unusable or tampered
	// credentials; challenge again. Unknown users are not told apart, so
	// that extensions cannot be enumerated.
	AuthInvalid
	// AuthStale: the credentials are right but the nonce has expired;
	// challenge with stale=true so the phone retries without asking anyone.
	AuthStale
	// AuthForbidden: the credentials are for a username other than the
	// one the request is about (the To user of a REGISTER); answer 403.
	AuthForbidden
)

func (r AuthResult) String() string {
	switch r {
	case AuthOK:
		return "ok"
	case AuthMissing:
		return "missing"
	case AuthInvalid:
		return "invalid"
	case AuthStale:
		return "stale"
	case AuthForbidden:
		return "forbidden"
	}
	return fmt.Sprintf("AuthResult(%d)", int(r))
}

// DigestConfig configures a [DigestAuth].
type DigestConfig struct {
	// Realm is the digest realm: callwake's sip.domain.
	Realm string
	// Secret keys the nonce HMAC. Empty: 32 random bytes, so nonces do not
	// survive a restart (phones then get one more challenge).
	Secret []byte
	// NonceTTL defaults to DefaultNonceTTL.
	NonceTTL time.Duration
	// Algorithms are challenged in this order; default SHA-256 then MD5.
	// Some SIP stacks (libre 1.x, under older baresip) fail on any
	// SHA-256 challenge: for them an admin offers MD5 alone.
	Algorithms []string
	Store      CredentialStore
	Now        func() time.Time
	Logger     *slog.Logger
}

// DefaultAlgorithms are the digest algorithms challenged by default.
var DefaultAlgorithms = []string{AlgorithmSHA256, AlgorithmMD5}

// DigestAuth is server-side digest authentication (RFC 3261 22, RFC 8760)
// with stateless nonces: base64url(timestamp || HMAC(secret, timestamp ||
// realm)). A nonce can be replayed until it expires; for REGISTER the
// registrar's CSeq check (RFC 3261 10.3 step 7) refuses a replayed request.
type DigestAuth struct {
	realm      string
	algorithms []string
	secret     []byte
	nonceTTL   time.Duration
	store      CredentialStore
	now        func() time.Time
	log        *slog.Logger

	// A challenge is challengeHead + nonce + one of the tails (one per
	// algorithm), fixed at start rather than built as icholy/digest's
	// Challenge.String does, with a parameter list and each value quoted
	// anew: that was a sixth of a REGISTER round's allocations. The
	// output is the same (see TestChallengesAsIcholyFormats).
	challengeHead string
	freshTails    []string
	staleTails    []string

	// macs hold *nonceMACState keyed with secret, reset before each use:
	// hmac.New per nonce (two SHA-256 states and the key pads) was a tenth
	// of a REGISTER round's allocations. realmBytes is their input.
	macs       sync.Pool
	realmBytes []byte
}

// NewDigestAuth checks cfg and returns a DigestAuth.
func NewDigestAuth(cfg DigestConfig) (*DigestAuth, error) {
	if cfg.Realm == "" {
		return nil, errors.New("digest: empty realm")
	}
	if cfg.Store == nil {
		return nil, errors.New("digest: no credential store")
	}
	if cfg.NonceTTL < 0 {
		return nil, fmt.Errorf("digest: negative nonce lifetime %v", cfg.NonceTTL)
	}
	algorithms := cfg.Algorithms
	if len(algorithms) == 0 {
		algorithms = DefaultAlgorithms
	}
	for _, alg := range algorithms {
		if alg != AlgorithmSHA256 && alg != AlgorithmMD5 {
			return nil, fmt.Errorf("digest: algorithm %q is not %s or %s", alg, AlgorithmSHA256, AlgorithmMD5)
		}
	}
	a := &DigestAuth{
		realm:      cfg.Realm,
		algorithms: algorithms,
		secret:     cfg.Secret,
		nonceTTL:   cfg.NonceTTL,
		store:      cfg.Store,
		now:        cfg.Now,
		log:        cfg.Logger,
	}
	if len(a.secret) == 0 {
		a.secret = make([]byte, 32)
		if _, err := rand.Read(a.secret); err != nil {
			return nil, fmt.Errorf("digest: generating nonce secret: %w", err)
		}
	}
	a.challengeHead = "Digest realm=" + strconv.Quote(a.realm) + `, nonce="`
	for _, alg := range algorithms {
		a.freshTails = append(a.freshTails, `", algorithm=`+alg+`, qop="auth"`)
		a.staleTails = append(a.staleTails, `", stale=true, algorithm=`+alg+`, qop="auth"`)
	}
	a.realmBytes = []byte(a.realm)
	a.macs.New = func() any { return &nonceMACState{mac: hmac.New(sha256.New, a.secret)} }
	if a.nonceTTL == 0 {
		a.nonceTTL = DefaultNonceTTL
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default().With("component", "sip")
	}
	return a, nil
}

// Realm is the realm the challenges carry.
func (a *DigestAuth) Realm() string { return a.realm }

// Challenges returns the WWW-Authenticate (or Proxy-Authenticate) values
// to send, SHA-256 first as RFC 8760 asks, then MD5 for older phones. Both
// carry the same fresh nonce.
func (a *DigestAuth) Challenges(stale bool) []string {
	// The nonce is base64url: quoting leaves it as it is.
	nonce := a.newNonce()
	tails := a.freshTails
	if stale {
		tails = a.staleTails
	}
	values := make([]string, len(tails))
	for i, tail := range tails {
		values[i] = a.challengeHead + nonce + tail
	}
	return values
}

// Response is the answer to req for a result other than AuthOK: 403 for
// AuthForbidden, else 401 with fresh challenges (stale=true for AuthStale).
func (a *DigestAuth) Response(req *sip.Request, result AuthResult) *sip.Response {
	if result == AuthForbidden {
		return sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil)
	}
	res := sip.NewResponseFromRequest(req, sip.StatusUnauthorized, "Unauthorized", nil)
	for _, v := range a.Challenges(result == AuthStale) {
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", v))
	}
	return res
}

// Verify checks the Authorization header of req for user, the extension
// the request is about. A non-nil error means the store failed; answer 500.
func (a *DigestAuth) Verify(ctx context.Context, req *sip.Request, user string) (AuthResult, error) {
	cred, result := a.findCredentials(req)
	if result != AuthOK {
		return result, nil
	}
	if cred.Username != user {
		a.log.Info("digest username differs from the user it is for", "username", cred.Username, "ext", user)
		return AuthForbidden, nil
	}
	h := credentialHash(cred)

	issued, nonceOK := a.checkNonce(cred.Nonce)
	if !nonceOK {
		a.log.Debug("digest nonce not ours (tampered, or from before a restart)", "ext", user)
		return AuthInvalid, nil
	}

	stored, found, err := a.store.PhoneCredentials(ctx, user)
	if err != nil {
		return AuthInvalid, fmt.Errorf("looking up credentials of %q: %w", user, err)
	}
	ha1 := stored.HA1MD5
	if h == hashSHA256 {
		ha1 = stored.HA1SHA256
	}
	switch {
	case !found:
		// Same work as a known user, so the answer does not tell them apart.
		ha1 = h.join(user, a.realm, "")
	case stored.Realm != "" && stored.Realm != a.realm:
		a.log.Error("stored credentials are for another realm; reset the password", "ext", user, "stored_realm", stored.Realm, "realm", a.realm)
		return AuthInvalid, nil
	case ha1 == "":
		a.log.Warn("no stored hash for the digest algorithm", "ext", user, "algorithm", cred.Algorithm)
		return AuthInvalid, nil
	}

	want := a.response(h, strings.ToLower(ha1), req.Method.String(), cred)
	if !found || subtle.ConstantTimeCompare([]byte(want), []byte(cred.Response)) != 1 {
		return AuthInvalid, nil
	}
	if a.now().Sub(issued) > a.nonceTTL {
		return AuthStale, nil
	}
	return AuthOK, nil
}

// findCredentials picks the Authorization header meant for our realm.
func (a *DigestAuth) findCredentials(req *sip.Request) (credentials, AuthResult) {
	result := AuthMissing
	for _, hdr := range req.GetHeaders("Authorization") {
		cred, err := parseCredentials(hdr.Value())
		if err != nil {
			a.log.Info("unparsable Authorization header", "error", err)
			result = AuthInvalid
			continue
		}
		if cred.Realm != a.realm {
			continue
		}
		if cred.QOP != "" && cred.QOP != "auth" {
			// We offer qop=auth only; no qop at all is RFC 2069 and tolerated.
			result = AuthInvalid
			continue
		}
		if credentialHash(cred) == unsupportedHash || !a.offered(cred.Algorithm) {
			result = AuthInvalid
			continue
		}
		return cred, AuthOK
	}
	return credentials{}, result
}

// offered reports whether an answer's algorithm is one we challenge with
// (no algorithm means MD5).
func (a *DigestAuth) offered(alg string) bool {
	if alg == "" {
		alg = AlgorithmMD5
	}
	for _, o := range a.algorithms {
		if strings.EqualFold(o, alg) {
			return true
		}
	}
	return false
}

// response computes the expected request-digest (RFC 2617 3.2.2.1). The uri
// is the one the phone hashed, as RFC 3261 22.4 lets servers use.
func (a *DigestAuth) response(h digestHash, ha1, method string, cred credentials) string {
	ha2 := h.join(method, cred.URI)
	if cred.QOP == "" {
		return h.join(ha1, cred.Nonce, ha2)
	}
	return h.join(ha1, cred.Nonce, cred.Nc, cred.Cnonce, cred.QOP, ha2)
}

func (a *DigestAuth) newNonce() string {
	var buf [nonceTimeLen + nonceMACLen]byte
	binary.BigEndian.PutUint64(buf[:nonceTimeLen], uint64(a.now().UnixNano()))
	mac := a.nonceMAC(buf[:nonceTimeLen])
	copy(buf[nonceTimeLen:], mac[:])
	return base64.RawURLEncoding.EncodeToString(buf[:])
}

// checkNonce returns when nonce was issued; ok is false unless we minted it.
func (a *DigestAuth) checkNonce(nonce string) (issued time.Time, ok bool) {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != nonceTimeLen+nonceMACLen {
		return time.Time{}, false
	}
	mac := a.nonceMAC(raw[:nonceTimeLen])
	if !hmac.Equal(raw[nonceTimeLen:], mac[:]) {
		return time.Time{}, false
	}
	issued = time.Unix(0, int64(binary.BigEndian.Uint64(raw[:nonceTimeLen])))
	if issued.After(a.now().Add(nonceSkew)) {
		return time.Time{}, false
	}
	return issued, true
}

// nonceMACState is a nonce HMAC with room for its input and output: what
// goes through the hash.Hash interface escapes, and here it is already on
// the heap.
type nonceMACState struct {
	mac hash.Hash
	buf [sha256.Size]byte
}

// nonceMAC is HMAC-SHA-256(secret, stamp || realm), truncated.
func (a *DigestAuth) nonceMAC(stamp []byte) (out [nonceMACLen]byte) {
	s := a.macs.Get().(*nonceMACState)
	defer a.macs.Put(s)
	s.mac.Reset()
	s.mac.Write(s.buf[:copy(s.buf[:nonceTimeLen], stamp)])
	s.mac.Write(a.realmBytes)
	copy(out[:], s.mac.Sum(s.buf[:0]))
	return out
}

// digestHash is the hash function of a digest algorithm.
type digestHash int

const (
	unsupportedHash digestHash = iota // MD5-sess, SHA-512...
	hashMD5
	hashSHA256
)

// hashOf returns the hash of an algorithm name, compared case-insensitively.
func hashOf(algorithm string) digestHash {
	switch {
	case strings.EqualFold(algorithm, AlgorithmMD5):
		return hashMD5
	case strings.EqualFold(algorithm, AlgorithmSHA256):
		return hashSHA256
	}
	return unsupportedHash
}

// credentialHash is the hash of an Authorization header: no algorithm
// parameter means MD5 (RFC 2617).
func credentialHash(cred credentials) digestHash {
	if cred.Algorithm == "" {
		return hashMD5
	}
	return hashOf(cred.Algorithm)
}

// join returns hex(H(parts joined by ':')), the form of every value digest
// authentication hashes. The parts are joined on the stack and hashed with
// md5.Sum or sha256.Sum256: through a hash.Hash every part was copied to
// the heap, a fifth of what Verify allocated.
func (h digestHash) join(parts ...string) string {
	var buf [256]byte
	joined := buf[:0]
	for i, p := range parts {
		if i > 0 {
			joined = append(joined, ':')
		}
		joined = append(joined, p...)
	}
	if h == hashSHA256 {
		sum := sha256.Sum256(joined)
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum(joined)
	return hex.EncodeToString(sum[:])
}
