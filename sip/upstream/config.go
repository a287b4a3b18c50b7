package upstream

import (
	"errors"
	"log/slog"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Account is one extension that callwake registers to the PBX.
type Account struct {
	Ext       string // the extension; also the Contact user, so the PBX's INVITE maps back to it
	Username  string // auth username and AoR user at the PBX; "" = Ext
	Password  string
	Registrar string // sip:host[:port][;transport=x]; "" = Config.DefaultRegistrar
}

// Defaults for the zero fields of Config.
const (
	DefaultExpires         = 300 * time.Second
	DefaultRequestTimeout  = 15 * time.Second
	DefaultRetryInitial    = 2 * time.Second
	DefaultRetryMax        = 5 * time.Minute
	DefaultRejectedBackoff = 30 * time.Minute
	DefaultJitter          = 0.2
	DefaultStartInterval   = 20 * time.Millisecond
	DefaultShutdownTimeout = 5 * time.Second
)

// Config configures a Manager. Zero durations take the defaults above.
type Config struct {
	Client           *sipgo.Client            // shared client of callwake's SIP UA
	DefaultRegistrar string                   // pbx.registrar
	Contact          func(ext string) sip.Uri // callwake's Contact for ext: its listener, user = ext
	Expires          time.Duration            // requested expiry (pbx.register_expires)

	// RequestTimeout bounds one REGISTER transaction, auth round included.
	RequestTimeout time.Duration
	// RetryInitial and RetryMax bound the exponential back-off after
	// errors and timeouts.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// RejectedBackoff is the wait after a 403, a 404 or a wrong password:
	// retrying those sooner only gets callwake's address banned.
	RejectedBackoff time.Duration
	// Jitter is the fraction (below 1) by which refresh and retry waits are
	// shortened at random, so that accounts drift apart; negative for none.
	Jitter float64
	// StartInterval spaces the first REGISTER of each account (at start-up
	// and after a Sync) so that many accounts do not arrive as one burst.
	StartInterval time.Duration
	// ShutdownTimeout bounds the un-REGISTERs when Run's context ends and
	// when an account is removed.
	ShutdownTimeout time.Duration

	Clock      Clock                 // nil = the real clock
	Logger     *slog.Logger          // nil = slog.Default()
	Registerer prometheus.Registerer // nil = no metrics
}

func (c *Config) setDefaults() error {
	if c.Client == nil {
		return errors.New("upstream: Config.Client is required")
	}
	if c.Contact == nil {
		return errors.New("upstream: Config.Contact is required")
	}
	if c.Jitter >= 1 {
		return errors.New("upstream: Config.Jitter must be below 1")
	}
	switch {
	case c.Jitter == 0:
		c.Jitter = DefaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	}
	if c.Expires < 0 || c.RequestTimeout < 0 || c.RetryInitial < 0 || c.RetryMax < 0 ||
		c.RejectedBackoff < 0 || c.StartInterval < 0 || c.ShutdownTimeout < 0 {
		return errors.New("upstream: durations in Config must not be negative")
	}
	setDuration(&c.Expires, DefaultExpires)
	setDuration(&c.RequestTimeout, DefaultRequestTimeout)
	setDuration(&c.RetryInitial, DefaultRetryInitial)
	setDuration(&c.RetryMax, DefaultRetryMax)
	setDuration(&c.RejectedBackoff, DefaultRejectedBackoff)
	setDuration(&c.StartInterval, DefaultStartInterval)
	setDuration(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.Expires < time.Second {
		return errors.New("upstream: Config.Expires must be at least 1s")
	}
	if c.RetryMax < c.RetryInitial {
		c.RetryMax = c.RetryInitial
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Clock is the time source of a Manager; tests inject a fake one.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Manager uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }
