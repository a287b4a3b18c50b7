package sip

import "testing"

// OnDone's function runs once, whether registered before Done closes or
// after.
func TestInboundCallOnDone(t *testing.T) {
	for _, before := range []bool{true, false} {
		c := &InboundCall{done: make(chan struct{})}
		calls := 0
		if before {
			c.OnDone(func() { calls++ })
		}
		c.finish()
		c.finish()
		if !before {
			c.OnDone(func() { calls++ })
		}
		if calls != 1 {
			t.Errorf("registered before Done closed: %v; called %d times, want 1", before, calls)
		}
	}
}
