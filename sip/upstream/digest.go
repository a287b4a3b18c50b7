package upstream

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// errCredentialsRejected means the PBX challenged again the credentials it
// had just been sent: a wrong username or password.
var errCredentialsRejected = errors.New("credentials rejected (wrong username or password?)")

// credentials are the answers to the challenges of one exchange, keyed by
// header name and realm, so that a proxy's 407 and the registrar's 401 can
// both be answered in the same request.
type credentials struct {
	answers []answer
}

type answer struct {
	header string // Authorization or Proxy-Authorization
	realm  string
	value  string
}

func (c *credentials) headers() []sip.Header {
	hs := make([]sip.Header, 0, len(c.answers))
	for _, a := range c.answers {
		hs = append(hs, sip.NewHeader(a.header, a.value))
	}
	return hs
}

// answer computes credentials for the challenge in res (a 401 or 407) to
// req. A challenge for a realm that was already answered means the
// credentials were wrong, unless it says the nonce was merely stale.
func (c *credentials) answer(req *sip.Request, res *sip.Response, t target) error {
	challengeHeader, answerHeader := "WWW-Authenticate", "Authorization"
	if res.StatusCode == sip.StatusProxyAuthRequired {
		challengeHeader, answerHeader = "Proxy-Authenticate", "Proxy-Authorization"
	}
	chal, err := bestChallenge(res.GetHeaders(challengeHeader))
	if err != nil {
		return fmt.Errorf("%d %s: %w", res.StatusCode, res.Reason, err)
	}
	i := c.find(answerHeader, chal.Realm)
	if i >= 0 && !chal.Stale {
		return fmt.Errorf("%d %s for realm %q: %w", res.StatusCode, res.Reason, chal.Realm, errCredentialsRejected)
	}
	cred, err := digest.Digest(chal, digest.Options{
		Method:   req.Method.String(),
		URI:      req.Recipient.String(),
		Username: t.username,
		Password: t.password,
		Count:    1,
	})
	if err != nil {
		return fmt.Errorf("answering the %s challenge: %w", challengeHeader, err)
	}
	a := answer{header: answerHeader, realm: chal.Realm, value: cred.String()}
	if i >= 0 {
		c.answers[i] = a
	} else {
		c.answers = append(c.answers, a)
	}
	return nil
}

func (c *credentials) find(header, realm string) int {
	for i, a := range c.answers {
		if a.header == header && a.realm == realm {
			return i
		}
	}
	return -1
}

// bestChallenge picks, among the digest challenges offered, the strongest
// one that can be answered (RFC 8760: SHA-256 over MD5).
func bestChallenge(hs []sip.Header) (*digest.Challenge, error) {
	var best *digest.Challenge
	var lastErr error
	for _, h := range hs {
		chal, err := digest.ParseChallenge(h.Value())
		if err != nil {
			lastErr = fmt.Errorf("parsing challenge %q: %w", h.Value(), err)
			continue
		}
		chal.Algorithm = strings.ToUpper(chal.Algorithm)
		if !digest.CanDigest(chal) {
			lastErr = fmt.Errorf("unsupported digest algorithm %q or qop %q", chal.Algorithm, strings.Join(chal.QOP, ","))
			continue
		}
		if best == nil || strength(chal.Algorithm) > strength(best.Algorithm) {
			best = chal
		}
	}
	if best != nil {
		return best, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no digest challenge")
	}
	return nil, lastErr
}

func strength(algorithm string) int {
	switch algorithm {
	case "SHA-512-256":
		return 3
	case "SHA-256":
		return 2
	default:
		return 1
	}
}
