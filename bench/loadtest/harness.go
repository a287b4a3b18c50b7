// Package loadtest is callwake's load harness: SIPp as the PBX
// (bench/sipp), many phones behind one sipgo user agent that wake on the
// pushes of a local APNs, and the callwake binary in between. It steps the
// call rate of each flow up until a call fails, times INVITE→180, →push
// and →200, weighs ringing calls, checks that 100,000 calls leave nothing
// behind and profiles callwake at its highest rate. bench/run.sh runs it.
package loadtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

// Options choose what a run does. Zero values take the defaults of Full.
type Options struct {
	Flows        []int         // flows to step (1 ring timeout, 2 answer, 3 cancel)
	Rates        []int         // calls per second, stepped up in order
	StepDuration time.Duration // each rate, this long
	Extensions   int           // 20000, 20001, ...
	LatencyRate  int           // calls per second of the latency figure
	LatencyFor   time.Duration
	ConfirmFor   time.Duration // flow 2's confirmation run: past sipgo's 32 s of kept transactions
	Ringing      []int         // calls ringing at once for the memory figure
	RingingRate  int           // calls per second while filling them
	GrowthCalls  int           // calls of the growth figure
	Settle       time.Duration
	ProfileFor   time.Duration
	Phases       []string // steps, latency, profile, memory, growth

	Rev        string // build callwake from this git revision; empty: the working tree
	WorkDir    string // callwake's database and logs, SIPp's files; empty: a temporary directory
	Root       string // the module's root
	ResultsDir string // profiles and the report (bench/results)
	Log        func(format string, args ...any)
}

// Full is the run whose figures go into bench/README.md (about 15 minutes).
func Full() Options {
	return Options{
		Flows: []int{2, 3, 1}, Rates: []int{50, 100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000},
		StepDuration: 12 * time.Second, Extensions: 5000, LatencyRate: 500, LatencyFor: 20 * time.Second, ConfirmFor: time.Minute,
		Ringing: []int{10000, 20000}, RingingRate: 500, GrowthCalls: 100000, Settle: 40 * time.Second,
		ProfileFor: 20 * time.Second, Phases: []string{"steps", "confirm", "latency", "profile", "memory", "growth"},
	}
}

// Quick is a smoke check of every phase, small (under two minutes).
func Quick() Options {
	return Options{
		Flows: []int{2, 3, 1}, Rates: []int{50, 200}, StepDuration: 4 * time.Second, Extensions: 500,
		LatencyRate: 200, LatencyFor: 4 * time.Second, ConfirmFor: 4 * time.Second, Ringing: []int{1000, 2000}, RingingRate: 500,
		GrowthCalls: 2000, Settle: 5 * time.Second, ProfileFor: 5 * time.Second,
		Phases: []string{"steps", "confirm", "latency", "profile", "memory", "growth"},
	}
}

// harness is one run: callwake, the APNs endpoint, the phones.
type harness struct {
	tb       testing.TB
	opts     Options
	dir      string // scratch: callwake's database and logs, SIPp's files
	bin      string
	push     *pushEndpoint
	phones   *phones
	cw       *callwake
	cwConfig callwakeConfig
	extCSV   string
	sippRuns int
	report   *Report
}

// Run runs the phases of opts and returns the report.
// harnessGCPercent is the harness's GOGC.
const harnessGCPercent = 400

func Run(tb testing.TB, opts Options) *Report {
	tb.Helper()
	// The phones and the APNs mock share the machine with callwake: their
	// garbage collector runs less often, so that they take less of the CPU
	// callwake is measured on (callwake runs with Go's defaults).
	defer debug.SetGCPercent(debug.SetGCPercent(harnessGCPercent))
	h := &harness{tb: tb, opts: opts, dir: opts.WorkDir, report: newReport(opts)}
	if h.dir == "" {
		h.dir = tb.TempDir()
	}
	for _, dir := range []string{opts.ResultsDir, h.dir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	defer h.tearDown() // also when setUp fails: nothing it started is left running
	h.setUp()
	for _, phase := range opts.Phases {
		started := time.Now()
		switch phase {
		case "steps":
			for _, id := range opts.Flows {
				h.stepFlow(flows[id])
			}
		case "confirm":
			h.confirm()
		case "latency":
			h.latency()
		case "profile":
			h.profile()
		case "memory":
			h.memory()
		case "growth":
			h.growth()
		default:
			tb.Fatalf("unknown phase %q", phase)
		}
		h.logf("phase %s done in %s", phase, time.Since(started).Round(time.Second))
	}
	return h.report
}

func (h *harness) logf(format string, args ...any) {
	if h.opts.Log != nil {
		h.opts.Log(format, args...)
	}
}

func (h *harness) setUp() {
	started := time.Now()
	var err error
	if h.bin, h.report.Callwake, err = buildCallwake(h.opts.Root, h.dir, h.opts.Rev); err != nil {
		h.tb.Fatal(err)
	}
	h.push = newPushEndpoint(h.tb, h.dir, func(ext string) { h.phones.wake(ext) })
	if h.extCSV, err = writeExtensionsCSV(h.dir, h.opts.Extensions); err != nil {
		h.tb.Fatal(err)
	}
	h.useCallwake(flows[2].Callwake)
	if err := provision(context.Background(), h.cw, h.opts.Extensions, 8); err != nil {
		h.tb.Fatalf("provisioning: %v", err)
	}
	h.logf("built callwake (%s) and provisioned %d extensions with one APNs device each in %s",
		h.report.Callwake, h.opts.Extensions, time.Since(started).Round(time.Second))
	if h.phones, err = startPhones(h.cw.sipAddr, benchDomain, deviceOf); err != nil {
		h.tb.Fatal(err)
	}
	if h.report.SIPpFloor, err = h.calibrate(); err != nil {
		h.tb.Fatalf("calibrating SIPp: %v", err)
	}
	h.logf("SIPp's own INVITE→180 against a stateless responder: %s", h.report.SIPpFloor)
}

func (h *harness) tearDown() {
	if h.cw != nil {
		h.cw.stop(10 * time.Second)
	}
	if h.phones != nil {
		h.phones.close()
	}
}

// useCallwake (re)starts callwake with cfg unless it already runs with it.
// The phones follow callwake to its new SIP port.
func (h *harness) useCallwake(cfg callwakeConfig) {
	if h.cw != nil && h.cwConfig == cfg {
		return
	}
	h.restartCallwake(cfg)
}

func (h *harness) restartCallwake(cfg callwakeConfig) {
	if h.cw != nil {
		h.cw.stop(h.cwConfig.RingTimeout + 10*time.Second)
	}
	cw, err := startCallwake(h.bin, h.dir, h.push, cfg)
	if err != nil {
		h.tb.Fatal(err)
	}
	h.cw, h.cwConfig = cw, cfg
	if h.phones != nil {
		h.phones.close()
		if h.phones, err = startPhones(cw.sipAddr, benchDomain, deviceOf); err != nil {
			h.tb.Fatal(err)
		}
	}
}

// stepFlow steps f's rate up until a step fails.
func (h *harness) stepFlow(f flow) {
	h.useCallwake(f.Callwake)
	h.phones.setMode(f.Phone)
	for _, rate := range h.opts.Rates {
		calls := rate * int(h.opts.StepDuration/time.Second)
		r := h.runStep(f, rate, calls, nil)
		h.report.addStep(r)
		h.logf("flow %d (%s) %5d cps: %s", f.ID, f.Name, rate, r.summary())
		if !r.Passed {
			// What it left behind must not weigh on the next flow.
			h.restartCallwake(f.Callwake)
			return
		}
	}
}

// latency times flow 2 at LatencyRate, or at its highest held rate when
// that is lower. The run is longer than a step, so it also confirms the
// rate: on a shared machine a 12 s step can pass by luck. When it does not
// hold, the rate is marked unconfirmed and the next lower step is tried
// (twice at most).
func (h *harness) latency() {
	rate := h.opts.LatencyRate
	if best := h.confirmedRate(); best > 0 && best < rate {
		rate = best
	}
	if r, ok := h.longRun(rate, h.opts.LatencyFor); ok {
		h.report.Latency = &r
	}
}

// confirm runs flow 2 at its highest held step for a minute: a 12 s step
// can pass on the edge of what the machine holds, before the heap holds
// its steady state (sipgo keeps each finished transaction 32 s), and a
// longer run says whether it does. On failure, the next lower step is
// tried, up to three times.
func (h *harness) confirm() {
	if r, ok := h.longRun(h.report.Sustained[2], h.opts.ConfirmFor); ok {
		h.report.Confirmed = &r
	}
}

// longRun runs flow 2 at rate for d, trying lower steps (three runs at
// most) until one holds; the runs that did not are noted.
func (h *harness) longRun(rate int, d time.Duration) (StepResult, bool) {
	f := flows[2]
	for try := 0; try < 3 && rate > 0; try++ {
		// A fresh callwake: not the heap an overloaded step left behind.
		h.restartCallwake(f.Callwake)
		h.phones.setMode(f.Phone)
		// Steady state, not a cold start: connections, pools and the
		// directory fill on the first calls.
		if warm := h.runStep(f, rate, 3*rate, nil); !warm.Passed {
			h.logf("warm-up at %d cps: %s", rate, warm.Why)
		}
		r := h.runStep(f, rate, rate*int(d/time.Second), nil)
		h.logf("%s run, flow 2 at %d cps: %s", d, rate, r.summary())
		if r.Passed {
			return r, true
		}
		h.report.Unconfirmed = append(h.report.Unconfirmed, r)
		rate = h.lowerRate(rate)
	}
	return StepResult{}, false
}

// confirmedRate is flow 2's highest held step that no longer run
// disproved; 0 before the steps.
func (h *harness) confirmedRate() int {
	if c := h.report.Confirmed; c != nil {
		return c.Rate
	}
	rate := h.report.Sustained[2]
	for _, u := range h.report.Unconfirmed {
		if u.Rate <= rate {
			rate = h.lowerRate(u.Rate)
		}
	}
	return rate
}

// lowerRate is the step rate below rate, or 0.
func (h *harness) lowerRate(rate int) int {
	lower := 0
	for _, r := range h.opts.Rates {
		if r < rate && r > lower {
			lower = r
		}
	}
	return lower
}

// profileRate is flow 2's confirmed rate, else the lowest step.
func (h *harness) profileRate() int {
	if rate := h.confirmedRate(); rate > 0 {
		return rate
	}
	return h.opts.Rates[0]
}

// profile takes a CPU profile of callwake during flow 2 at its highest
// sustained rate.
func (h *harness) profile() {
	f := flows[2]
	rate := h.profileRate()
	h.useCallwake(f.Callwake)
	h.phones.setMode(f.Phone)
	secs := int(h.opts.ProfileFor / time.Second)
	path := filepath.Join(h.opts.ResultsDir, fmt.Sprintf("cpu-flow2-%dcps.pb.gz", rate))
	allocsPath := filepath.Join(h.opts.ResultsDir, fmt.Sprintf("allocs-flow2-%dcps.pb.gz", rate))
	heapPath := filepath.Join(h.opts.ResultsDir, fmt.Sprintf("heap-flow2-%dcps.pb.gz", rate))
	var profileErr, allocsErr, heapErr error
	var wg sync.WaitGroup
	// fetch saves a profile of callwake, asked for after a delay.
	fetch := func(after time.Duration, url, path string, errp *error) {
		defer wg.Done()
		time.Sleep(after)
		body, err := h.cw.get(context.Background(), url)
		if err == nil {
			err = os.WriteFile(path, body, 0o644)
		}
		*errp = err
	}
	start := 3 * time.Second // past SIPp's start, into the steady rate
	r := h.runStep(f, rate, rate*(secs+6), func() {
		wg.Add(3)
		go fetch(start, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), path, &profileErr)
		// The allocations of the same seconds: what the collector works for.
		go fetch(start, fmt.Sprintf("/debug/pprof/allocs?seconds=%d", secs), allocsPath, &allocsErr)
		// What is live at the end of them: mostly what the SIP stack keeps.
		go fetch(start+time.Duration(secs)*time.Second, "/debug/pprof/heap", heapPath, &heapErr)
	})
	wg.Wait()
	if allocsErr != nil {
		h.tb.Errorf("allocation profile: %v", allocsErr)
	}
	if heapErr != nil {
		h.tb.Errorf("heap profile: %v", heapErr)
	}
	if profileErr != nil {
		h.tb.Errorf("CPU profile: %v", profileErr)
		return
	}
	top, err := pprofTop(h.bin, path, 25)
	if err != nil {
		h.tb.Errorf("go tool pprof: %v", err)
	}
	h.report.Profile = &ProfileResult{Rate: rate, Seconds: secs, Path: path, Top: top, Step: r}
	_ = os.WriteFile(path+".top.txt", []byte(top), 0o644)
	h.logf("profiled callwake for %ds during flow 2 at %d cps (%s): %s", secs, rate, path, r.summary())
}
