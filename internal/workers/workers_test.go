package workers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every function runs, concurrently when it has to: Go never waits for a
// busy goroutine.
func TestGoRunsEachFunctionWithoutWaiting(t *testing.T) {
	const n = 200
	var ran atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Add(n)
	for range n {
		Go(func() {
			defer wg.Done()
			ran.Add(1)
			<-release // all n must be running at once for any to finish
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for ran.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := ran.Load(); got != n {
		t.Fatalf("%d of %d ran", got, n)
	}
}

// A goroutine that finished its function runs the next one, and idle ones
// end.
func TestGoReusesAndLetsIdleGoroutinesEnd(t *testing.T) {
	base := settled()
	done := make(chan struct{})
	for range 100 {
		Go(func() { done <- struct{}{} })
		<-done
		time.Sleep(100 * time.Microsecond) // let it wait for the next
	}
	if extra := runtime.NumGoroutine() - base; extra > 10 {
		t.Errorf("%d goroutines for 100 functions run one after another", extra)
	}
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 50 {
		wg.Add(1)
		Go(func() { wg.Done(); <-release })
	}
	wg.Wait()
	close(release)
	if n := runtime.NumGoroutine(); n < base+50 {
		t.Fatalf("%d goroutines for 50 functions at once, %d before", n, base)
	}
	if n := settled(); n > base {
		t.Errorf("%d goroutines once idle ones had time to end, %d before", n, base)
	}
}

// settled returns the goroutine count once idle goroutines, of this test
// or an earlier one, have had time to end.
func settled() int {
	time.Sleep(idle + time.Second)
	return runtime.NumGoroutine()
}
