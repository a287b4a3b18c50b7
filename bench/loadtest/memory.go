package loadtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Sample is callwake's memory and goroutines at one moment.
type Sample struct {
	Calls      int   // calls ringing or talking (callwake_calls_active)
	RSS        int64 // VmRSS, bytes
	HeapAlloc  int64 // go_memstats_heap_alloc_bytes after a forced GC: live objects
	HeapInuse  int64 // go_memstats_heap_inuse_bytes after a forced GC: their spans
	StackInuse int64 // go_memstats_stack_inuse_bytes: goroutine stacks
	GoSys      int64 // go_memstats_sys_bytes minus what the runtime gave back (heap released)
	Goroutines int
}

// RingingResult is memory per ringing call at one number of calls.
type RingingResult struct {
	Target  int
	Sample  Sample
	Pushes  int // incoming_call pushes that arrived for them
	PerCall struct {
		RSS, Heap, Stack float64 // bytes per call above idle
		Goroutines       float64
	}
}

// MemoryResult is the ringing-calls figure.
type MemoryResult struct {
	Idle    Sample
	Ringing []RingingResult
	Why     string // set when a target was not reached
}

// GrowthResult compares callwake before, halfway through and after many
// calls, each time settled: a leak grows in both halves; a high-water mark
// (maps and pools sized for the peak, which Go does not shrink) only in the
// first.
type GrowthResult struct {
	Calls, Rate           int
	Before, Half, After   Sample
	FirstHalf, SecondHalf StepResult
	SettledIn             time.Duration // after the last call, until the sample
}

// Created is how many calls SIPp made in both halves.
func (g *GrowthResult) Created() int { return g.FirstHalf.SIPp.Created + g.SecondHalf.SIPp.Created }

// Failed is how many of them failed.
func (g *GrowthResult) Failed() int { return g.FirstHalf.SIPp.Failed + g.SecondHalf.SIPp.Failed }

// sample reads callwake's figures; the heap after a forced collection.
func (h *harness) sample(ctx context.Context) (Sample, error) {
	var s Sample
	var err error
	if s.RSS, err = h.cw.rssBytes(); err != nil {
		return s, err
	}
	if err := h.cw.gc(ctx); err != nil {
		return s, err
	}
	m, err := h.cw.metrics(ctx)
	if err != nil {
		return s, err
	}
	s.Calls, s.HeapInuse = int(m["callwake_calls_active"]), int64(m["go_memstats_heap_inuse_bytes"])
	s.StackInuse = int64(m["go_memstats_stack_inuse_bytes"])
	s.HeapAlloc = int64(m["go_memstats_heap_alloc_bytes"])
	s.GoSys = int64(m["go_memstats_sys_bytes"] - m["go_memstats_heap_released_bytes"])
	s.Goroutines, _, err = h.cw.goroutines(ctx)
	return s, err
}

// memory fills callwake with ringing calls (flow 1 with a ring timeout
// longer than the run) and weighs them at each of opts.Ringing.
func (h *harness) memory() {
	ctx := context.Background()
	f := flows[1]
	f.Callwake = callwakeConfig{RingTimeout: 150 * time.Second}
	f.Length = f.Callwake.RingTimeout
	h.restartCallwake(f.Callwake)
	h.phones.setMode(Silent)
	defer func() {
		// Its calls would ring on for minutes, and a drain waits for them.
		h.cw.kill()
		h.cw = nil
		h.restartCallwake(flows[2].Callwake)
	}()

	time.Sleep(2 * time.Second) // let the push connection warm up before the idle sample
	res := &MemoryResult{}
	h.report.Memory = res
	var err error
	if res.Idle, err = h.sample(ctx); err != nil {
		h.tb.Errorf("idle sample: %v", err)
		return
	}
	h.push.take()
	var procs []*sippProc
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()
	ringing := 0
	for _, target := range h.opts.Ringing {
		calls := target - ringing
		h.sippRuns++
		run := sippRun{Scenario: filepath.Join(h.opts.Root, "bench", "sipp", f.Scenario), Target: h.cw.sipAddr,
			Extensions: h.extCSV, Rate: h.opts.RingingRate, Calls: calls, RecvTimeout: f.Length + 10*time.Second,
			Dir: filepath.Join(h.dir, fmt.Sprintf("sipp-%02d-ringing-%d", h.sippRuns, target))}
		proc, err := startSIPp(run, f.Length+time.Minute)
		if err != nil {
			h.tb.Errorf("starting SIPp: %v", err)
			return
		}
		procs = append(procs, proc)
		fillWithin := run.expected(0) + 30*time.Second
		if !h.waitActive(ctx, target, fillWithin) {
			res.Why = fmt.Sprintf("callwake never had %d calls ringing within %s", target, fillWithin)
			h.tb.Errorf("memory: %s", res.Why)
			return
		}
		ringing = target
		time.Sleep(3 * time.Second) // the plateau: pushes answered, nothing in flight
		s, err := h.sample(ctx)
		if err != nil {
			h.tb.Errorf("sample at %d ringing: %v", target, err)
			return
		}
		_, pushes := h.push.take()
		r := RingingResult{Target: target, Sample: s, Pushes: pushes.Incoming}
		r.PerCall.RSS = float64(s.RSS-res.Idle.RSS) / float64(s.Calls)
		r.PerCall.Heap = float64(s.HeapInuse-res.Idle.HeapInuse) / float64(s.Calls)
		r.PerCall.Stack = float64(s.StackInuse-res.Idle.StackInuse) / float64(s.Calls)
		r.PerCall.Goroutines = float64(s.Goroutines-res.Idle.Goroutines) / float64(s.Calls)
		res.Ringing = append(res.Ringing, r)
		h.logf("%d calls ringing: RSS %s (%.0f B/call), heap %s (%.0f B/call), stacks %s (%.0f B/call), %d goroutines (%.2f/call), %d pushes",
			s.Calls, mib(s.RSS), r.PerCall.RSS, mib(s.HeapInuse), r.PerCall.Heap, mib(s.StackInuse), r.PerCall.Stack,
			s.Goroutines, r.PerCall.Goroutines, r.Pushes)
		if target == h.opts.Ringing[len(h.opts.Ringing)-1] {
			_, dump, err := h.cw.goroutines(ctx)
			if err == nil {
				_ = os.WriteFile(filepath.Join(h.opts.ResultsDir, fmt.Sprintf("goroutines-%d-ringing.txt", target)), dump, 0o644)
			}
			h.saveHeap(ctx, fmt.Sprintf("heap-%d-ringing.pb.gz", target))
		}
	}
}

// saveHeap saves callwake's heap profile into the results.
func (h *harness) saveHeap(ctx context.Context, name string) {
	heap, err := h.cw.get(ctx, "/debug/pprof/heap")
	if err == nil {
		err = os.WriteFile(filepath.Join(h.opts.ResultsDir, name), heap, 0o644)
	}
	if err != nil {
		h.tb.Errorf("saving heap profile: %v", err)
	}
}

// waitActive waits until callwake has at least n calls ringing or talking.
func (h *harness) waitActive(ctx context.Context, n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m, err := h.cw.metrics(ctx); err == nil && int(m["callwake_calls_active"]) >= n {
			return true
		}
		time.Sleep(500 * time.Millisecond) // polling callwake's metrics
	}
	return false
}

// growth runs GrowthCalls calls of flow 2 and compares callwake before and
// after, each time once the calls are over and goroutines have settled.
func (h *harness) growth() {
	ctx := context.Background()
	f := flows[2]
	rate := min(h.profileRate(), 1000)
	h.restartCallwake(f.Callwake)
	h.phones.setMode(f.Phone)
	res := &GrowthResult{Calls: h.opts.GrowthCalls, Rate: rate}
	h.report.Growth = res

	// Warm up: pools, connections and caches fill on the first calls, and
	// every extension's phone registers once (its binding is kept for the
	// registration's 600 s, which is state, not growth).
	if r := h.runStep(f, rate, max(h.opts.Extensions, rate), nil); !r.Passed {
		h.logf("growth warm-up (not a figure): %s", r.Why)
	}
	var err error
	h.settle(ctx)
	if res.Before, err = h.sample(ctx); err != nil {
		h.tb.Errorf("sample before: %v", err)
		return
	}
	h.logf("growth: before %d calls at %d cps: %s", res.Calls, rate, res.Before)
	h.saveHeap(ctx, "heap-before-growth.pb.gz")
	res.FirstHalf = h.runStep(f, rate, res.Calls/2, nil)
	h.logf("growth: first half: %s", res.FirstHalf.summary())
	h.settle(ctx)
	if res.Half, err = h.sample(ctx); err != nil {
		h.tb.Errorf("sample halfway: %v", err)
		return
	}
	h.logf("growth: halfway: %s", res.Half)
	h.saveHeap(ctx, "heap-halfway-growth.pb.gz")
	res.SecondHalf = h.runStep(f, rate, res.Calls-res.Calls/2, nil)
	h.logf("growth: second half: %s", res.SecondHalf.summary())
	res.SettledIn = h.settle(ctx)
	if res.After, err = h.sample(ctx); err != nil {
		h.tb.Errorf("sample after: %v", err)
		return
	}
	h.logf("growth: after (settled in %s): %s", res.SettledIn.Round(time.Second), res.After)
	h.saveHeap(ctx, "heap-after-growth.pb.gz")
	if _, dump, err := h.cw.goroutines(ctx); err == nil {
		_ = os.WriteFile(filepath.Join(h.opts.ResultsDir, "goroutines-after-growth.txt"), dump, 0o644)
	}
}

// settle waits until no call is active, then opts.Settle more: SIP
// transactions and ended calls keep their goroutines up to 32 s after the
// last message (RFC 3261 timers J and D, the bridge's lingerAfterEnd). It
// returns how long that took.
func (h *harness) settle(ctx context.Context) time.Duration {
	started := time.Now()
	h.waitIdle(ctx, time.Minute)
	time.Sleep(h.opts.Settle)
	return time.Since(started)
}

// waitIdle waits until callwake has no call ringing or talking.
func (h *harness) waitIdle(ctx context.Context, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m, err := h.cw.metrics(ctx); err == nil && m["callwake_calls_active"] == 0 {
			return true
		}
		time.Sleep(250 * time.Millisecond) // polling callwake's metrics
	}
	return false
}

func (s Sample) String() string {
	return fmt.Sprintf("%d calls, RSS %s (Go runtime holds %s of it), live heap %s in %s of spans, stacks %s, %d goroutines",
		s.Calls, mib(s.RSS), mib(s.GoSys), mib(s.HeapAlloc), mib(s.HeapInuse), mib(s.StackInuse), s.Goroutines)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// pprofTop is `go tool pprof -top` of a profile.
func pprofTop(bin, profile string, n int) (string, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", fmt.Sprintf("-nodecount=%d", n), bin, profile).CombinedOutput()
	return string(out), err
}
