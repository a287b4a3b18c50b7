// Package workers runs functions as a go statement does, on goroutines
// that are kept for a while to run the next ones.
//
// A goroutine starts with a small stack and grows it by copying, frame by
// frame, each time it runs out. callwake's work goes deep — the registrar's
// digest check, a call's fork into sipgo's dialogs, a push's JSON and
// HTTP/2 — and ran on a fresh goroutine per SIP request and per call event,
// whose stack grew two or three times: about half of the 6-7% of CPU that
// stack growth took at 1,000-1,200 calls/s (the rest is in sipgo's and
// net/http2's own goroutines). A kept goroutine has grown already (the
// collector may halve an idle one's stack, once per cycle).
package workers

import "time"

// idle is how long a goroutine waits for more work before it ends: long
// enough to bridge the gaps of a busy service, short enough that a quiet
// one keeps none.
const idle = 2 * time.Second

// handoff is taken only by a goroutine waiting for work: a send succeeds at
// once or not at all.
var handoff = make(chan func())

// Go runs f on a waiting goroutine, or on a new one if none waits. Like a
// go statement, it never blocks, and a panic in f ends the program.
func Go(f func()) {
	select {
	case handoff <- f:
	default:
		go run(f)
	}
}

func run(f func()) {
	f()
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case f := <-handoff:
			f()
			t.Reset(idle)
		case <-t.C:
			return
		}
	}
}
