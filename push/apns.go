package push

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
	gopkcs12 "software.sslmate.com/src/go-pkcs12"
)

const (
	// tokenRefreshAge is when the keep-warm loop re-signs the APNs JWT:
	// before apns2 would do it on a call's path (50 min) and well after
	// the 20 min Apple requires between two tokens.
	tokenRefreshAge = 40 * time.Minute
	// minTokenAge is the shortest interval Apple allows between two tokens
	// (else 429 TooManyProviderTokenUpdates).
	minTokenAge = 20 * time.Minute
)

// apnsSender pushes to one APNs endpoint (production or sandbox) over one
// long-lived HTTP/2 client.
type apnsSender struct {
	client *apns2.Client
	token  *token.Token // nil with certificate auth; shared by both endpoints
	log    *slog.Logger
}

// newAPNsSenders returns the production and sandbox senders, or nils when
// no APNs credentials are configured.
func newAPNsSenders(o APNsOptions, now func() time.Time, log *slog.Logger) (prod, sandbox *apnsSender, err error) {
	tok, cert, err := loadAPNsCredentials(o, now, log)
	if err != nil || (tok == nil && cert == nil) {
		return nil, nil, err
	}
	newSender := func(provider, endpoint string) *apnsSender {
		var c *apns2.Client
		if tok != nil {
			c = apns2.NewTokenClient(tok)
		} else {
			c = apns2.NewClient(*cert)
		}
		c.Host = endpoint
		c.HTTPClient = newAPNsHTTPClient(o.TLSConfig, cert)
		return &apnsSender{client: c, token: tok, log: log.With("provider", provider)}
	}
	return newSender(ProviderAPNs, o.Endpoint), newSender(ProviderAPNsSandbox, o.SandboxEndpoint), nil
}

func loadAPNsCredentials(o APNsOptions, now func() time.Time, log *slog.Logger) (*token.Token, *tls.Certificate, error) {
	switch {
	case o.KeyFile != "" && o.CertFile != "":
		return nil, nil, errors.New("push: apns: set key_file (token auth) or cert_file (certificate auth), not both")
	case o.KeyFile != "":
		if o.KeyID == "" || o.TeamID == "" {
			return nil, nil, errors.New("push: apns: key_file needs key_id and team_id")
		}
		key, err := token.AuthKeyFromFile(o.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("push: apns: load auth key %s: %w", o.KeyFile, err)
		}
		tok := &token.Token{AuthKey: key, KeyID: o.KeyID, TeamID: o.TeamID}
		// Sign the bearer now rather than on the first call's path.
		if _, err := tok.Generate(); err != nil {
			return nil, nil, fmt.Errorf("push: apns: sign provider token: %w", err)
		}
		log.Info("APNs token auth", "key_id", o.KeyID, "team_id", o.TeamID)
		return tok, nil, nil
	case o.CertFile != "":
		cert, err := loadAPNsCertificate(o.CertFile, o.CertPassword)
		if err != nil {
			return nil, nil, fmt.Errorf("push: apns: load certificate %s: %w", o.CertFile, err)
		}
		attrs := []any{"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter}
		switch left := cert.Leaf.NotAfter.Sub(now()); {
		case left <= 0:
			log.Error("APNs certificate has expired: APNs will refuse every push", attrs...)
		case left < 30*24*time.Hour:
			log.Warn("APNs certificate expires soon", attrs...)
		default:
			log.Info("APNs certificate auth", attrs...)
		}
		return nil, &cert, nil
	}
	return nil, nil, nil
}

// loadAPNsCertificate reads a PEM (certificate and key) or PKCS#12 file.
func loadAPNsCertificate(file, password string) (tls.Certificate, error) {
	var cert tls.Certificate
	var err error
	switch strings.ToLower(filepath.Ext(file)) {
	case ".p12", ".pfx":
		cert, err = certificate.FromP12File(file, password)
		if err != nil {
			// apns2 reads only the legacy 3DES/RC2 encodings; newer
			// exports (PBES2/AES) need go-pkcs12.
			cert, err = decodeP12(file, password, err)
		}
	default:
		cert, err = certificate.FromPemFile(file, password)
	}
	if err != nil {
		return tls.Certificate{}, err
	}
	if cert.Leaf == nil {
		return tls.Certificate{}, errors.New("unparsable certificate")
	}
	pub, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, errors.New("private key cannot sign")
	}
	if leafKey, ok := cert.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !leafKey.Equal(pub.Public()) {
		return tls.Certificate{}, errors.New("private key does not match the certificate")
	}
	return cert, nil
}

func decodeP12(file, password string, legacyErr error) (tls.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, leaf, chain, err := gopkcs12.DecodeChain(data, password)
	if err != nil {
		return tls.Certificate{}, errors.Join(legacyErr, err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

func newAPNsHTTPClient(base *tls.Config, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	// No client-wide timeout: every request carries the ring deadline.
	return &http.Client{Transport: &http2.Transport{
		TLSClientConfig: cfg,
		ReadIdleTimeout: 15 * time.Second, // ping a quiet connection to find it dead before a call does
		PingTimeout:     5 * time.Second,
	}}
}

func (s *apnsSender) send(ctx context.Context, t Target, p Payload, deadline time.Time) attemptResult {
	resp, err := s.client.PushWithContext(ctx, &apns2.Notification{
		DeviceToken: t.Token,
		Topic:       t.Topic,
		Expiration:  deadline,
		Priority:    apns2.PriorityHigh,
		PushType:    apns2.PushTypeVOIP,
		Payload:     APNsBody(p),
	})
	if err != nil {
		r := transportError(err)
		r.err = fmt.Errorf("apns: %w", err)
		return r
	}
	return s.classify(resp)
}

func (s *apnsSender) classify(resp *apns2.Response) attemptResult {
	r := attemptResult{status: resp.StatusCode, reason: resp.Reason}
	if resp.StatusCode == http.StatusOK {
		r.class = classDelivered
		return r
	}
	switch {
	case resp.StatusCode == http.StatusGone,
		resp.Reason == apns2.ReasonBadDeviceToken,
		resp.Reason == apns2.ReasonDeviceTokenNotForTopic:
		r.class = classDeadToken
	case resp.StatusCode == http.StatusForbidden:
		r.class = classCredential
		// A token Apple finds too old is re-signed and tried once more.
		r.retry = resp.Reason == apns2.ReasonExpiredProviderToken && s.refreshToken(minTokenAge)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		r.class = classRetryable
	default:
		r.class = classPermanent
	}
	if r.reason == "" {
		r.reason = strconv.Itoa(resp.StatusCode)
	}
	r.err = fmt.Errorf("apns: %d %s", resp.StatusCode, r.reason)
	return r
}

// refreshToken re-signs the JWT if it is at least minAge old and reports
// whether it did.
func (s *apnsSender) refreshToken(minAge time.Duration) bool {
	if s.token == nil {
		return false
	}
	s.token.Lock()
	defer s.token.Unlock()
	if time.Since(time.Unix(s.token.IssuedAt, 0)) < minAge {
		return false
	}
	if _, err := s.token.Generate(); err != nil {
		s.log.Error("re-signing APNs provider token", "err", err)
		return false
	}
	return true
}

// warm re-signs an ageing JWT and opens (or keeps open) the HTTP/2
// connection with a request that sends no notification.
func (s *apnsSender) warm(ctx context.Context) attemptResult {
	s.refreshToken(tokenRefreshAge)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.client.Host+"/3/device/", nil)
	if err != nil {
		return attemptResult{class: classPermanent, reason: "bad_endpoint", err: fmt.Errorf("apns: warm-up request: %w", err)}
	}
	resp, err := s.client.HTTPClient.Do(req)
	if err != nil {
		r := transportError(err)
		r.err = fmt.Errorf("apns: connect %s: %w", s.client.Host, err)
		return r
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return attemptResult{class: classDelivered, status: resp.StatusCode}
}

func (s *apnsSender) close() { s.client.CloseIdleConnections() }
