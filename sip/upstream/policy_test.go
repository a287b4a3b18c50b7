package upstream

import (
	"testing"
	"time"
)

func TestRefreshDelay(t *testing.T) {
	cfg := Config{Jitter: DefaultJitter}
	for _, tc := range []struct{ granted, lo, hi time.Duration }{
		{10 * time.Second, 4 * time.Second, 5 * time.Second},         // half of a short grant
		{120 * time.Second, 48 * time.Second, 60 * time.Second},      // a minute ahead
		{300 * time.Second, 192 * time.Second, 240 * time.Second},    // the default expiry
		{3600 * time.Second, 2832 * time.Second, 3540 * time.Second}, // a minute ahead of an hour
	} {
		for range 100 {
			if d := cfg.refreshDelay(tc.granted); !in(d, tc.lo, tc.hi) {
				t.Fatalf("granted %v: refresh after %v, want %v..%v", tc.granted, d, tc.lo, tc.hi)
			}
		}
	}
	cfg.Jitter = 0
	if d := cfg.refreshDelay(300 * time.Second); d != 240*time.Second {
		t.Errorf("without jitter: %v", d)
	}
}

func TestRetryDelay(t *testing.T) {
	cfg := Config{RetryInitial: time.Second, RetryMax: 30 * time.Second}
	for n, want := range map[int]time.Duration{1: 1, 2: 2, 3: 4, 5: 16, 6: 30, 50: 30} {
		if d := cfg.retryDelay(n, 0); d != want*time.Second {
			t.Errorf("failure %d: %v, want %vs", n, d, int(want))
		}
	}
	if d := cfg.retryDelay(1, 20*time.Second); d != 20*time.Second {
		t.Errorf("Retry-After 20: %v", d)
	}
	if d := cfg.retryDelay(1, time.Hour); d != 30*time.Second {
		t.Errorf("Retry-After past RetryMax: %v", d)
	}
}
