package push

import (
	"crypto/tls"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"golang.org/x/oauth2"
)

// Provider values as they appear in the contract and in the device store.
const (
	ProviderAPNs        = "apns"
	ProviderAPNsSandbox = "apns.dev"
	ProviderFCM         = "fcm"
)

// Default endpoints. Tests and egress proxies override them.
const (
	DefaultAPNsEndpoint        = apns2.HostProduction
	DefaultAPNsSandboxEndpoint = apns2.HostDevelopment
	DefaultFCMEndpoint         = "https://fcm.googleapis.com/v1"
)

// Defaults for the Options timing knobs.
const (
	DefaultAttemptTimeout  = 10 * time.Second
	DefaultRetryBackoff    = 250 * time.Millisecond
	DefaultMaxRetryBackoff = 4 * time.Second
)

// Options configures a Pusher. The zero value is valid: every provider is
// disabled and pushes are only logged.
type Options struct {
	APNs APNsOptions
	FCM  FCMOptions

	// Now is the wall clock used for deadlines, apns-expiration and the FCM
	// TTL. Default time.Now.
	Now func() time.Time

	// AttemptTimeout bounds one request to a provider, so that a stuck
	// request is retried while the ring window lasts. No attempt ever
	// outlives the ring deadline. Default DefaultAttemptTimeout.
	AttemptTimeout time.Duration

	// RetryBackoff is the first wait before retrying a retryable error; it
	// doubles up to MaxRetryBackoff, with jitter. Defaults
	// DefaultRetryBackoff and DefaultMaxRetryBackoff.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
}

// APNsOptions holds the APNs credentials, token (.p8) or certificate, and
// endpoints. With neither KeyFile nor CertFile set APNs is disabled.
type APNsOptions struct {
	KeyFile string // .p8 auth key (token auth); needs KeyID and TeamID
	KeyID   string
	TeamID  string

	CertFile     string // certificate auth: PEM (cert and key) or .p12/.pfx
	CertPassword string

	Endpoint        string // "apns" targets; default DefaultAPNsEndpoint
	SandboxEndpoint string // "apns.dev" targets; default DefaultAPNsSandboxEndpoint

	// TLSConfig is the base TLS configuration of the APNs connections, for
	// example RootCAs that trust a mock server or an egress proxy. With
	// certificate auth the client certificate is added to a clone of it.
	TLSConfig *tls.Config
}

// FCMOptions holds the FCM (HTTP v1) credentials and endpoint. With neither
// CredentialsFile nor TokenSource set FCM is disabled.
type FCMOptions struct {
	CredentialsFile string // service-account JSON
	ProjectID       string // default project; else the credentials' project_id
	Endpoint        string // default DefaultFCMEndpoint, full URL including /v1

	// TLSConfig is the base TLS configuration for the FCM endpoint and the
	// service account's token_uri (tests: RootCAs trusting the mock).
	TLSConfig *tls.Config

	// TokenSource, when set, supplies the OAuth2 access tokens instead of
	// the service account (tests: oauth2.StaticTokenSource).
	TokenSource oauth2.TokenSource
}

func (o *Options) setDefaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.MaxRetryBackoff <= 0 {
		o.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if o.MaxRetryBackoff < o.RetryBackoff {
		o.MaxRetryBackoff = o.RetryBackoff
	}
	if o.APNs.Endpoint == "" {
		o.APNs.Endpoint = DefaultAPNsEndpoint
	}
	if o.APNs.SandboxEndpoint == "" {
		o.APNs.SandboxEndpoint = DefaultAPNsSandboxEndpoint
	}
	if o.FCM.Endpoint == "" {
		o.FCM.Endpoint = DefaultFCMEndpoint
	}
	o.APNs.Endpoint = strings.TrimRight(o.APNs.Endpoint, "/")
	o.APNs.SandboxEndpoint = strings.TrimRight(o.APNs.SandboxEndpoint, "/")
	o.FCM.Endpoint = strings.TrimRight(o.FCM.Endpoint, "/")
}
