package upstream

import (
	"math/rand/v2"
	"time"
)

// maxRefreshMargin is the most a refresh is sent ahead of the granted
// expiry: enough for a UDP transaction's full retransmission run (32s) and
// one quick retry.
const maxRefreshMargin = time.Minute

// refreshDelay is the wait from a successful REGISTER to its refresh: half
// of a short grant, a minute before the end of a long one, less jitter.
func (c *Config) refreshDelay(granted time.Duration) time.Duration {
	d := granted - min(granted/2, maxRefreshMargin)
	return c.jitter(d)
}

// retryDelay is the wait after the n-th failure in a row (n >= 1):
// exponential from RetryInitial, capped at RetryMax, less jitter, and at
// least what the PBX asked for in Retry-After (capped too).
func (c *Config) retryDelay(n int, retryAfter time.Duration) time.Duration {
	d := c.RetryInitial
	for i := 1; i < n && d < c.RetryMax; i++ {
		d *= 2
	}
	d = c.jitter(min(d, c.RetryMax))
	return max(d, min(retryAfter, c.RetryMax))
}

// rejectedDelay is the wait after a 403, a 404 or a wrong password.
func (c *Config) rejectedDelay() time.Duration { return c.jitter(c.RejectedBackoff) }

// jitter shortens d by a random fraction up to c.Jitter.
func (c *Config) jitter(d time.Duration) time.Duration {
	if c.Jitter == 0 || d <= 0 {
		return d
	}
	return d - time.Duration(rand.Float64()*c.Jitter*float64(d))
}
