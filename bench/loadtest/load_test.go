package loadtest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	quickFlag      = flag.Bool("quick", false, "a small run of every phase, as a smoke check (under two minutes)")
	flowsFlag      = flag.String("flows", "", "flows to step, e.g. 1,2,3 (1 ring timeout, 2 answer, 3 cancel)")
	ratesFlag      = flag.String("rates", "", "calls per second to step through, e.g. 100,200,400")
	stepFlag       = flag.Duration("step", 0, "how long each rate runs")
	phasesFlag     = flag.String("phases", "", "phases to run, in order: steps,latency,profile,memory,growth")
	extensionsFlag = flag.Int("extensions", 0, "extensions to call (20000, 20001, ...)")
	growthFlag     = flag.Int("growth-calls", 0, "calls of the growth phase")
	revFlag        = flag.String("rev", "", "build callwake from this git revision (e.g. HEAD) instead of the working tree")
	workdirFlag    = flag.String("workdir", "", "keep callwake's database and log and SIPp's files here (default: a temporary directory)")
	readmeFlag     = flag.String("readme", "auto", "write the figures into bench/README.md: yes, no, or auto (full runs only)")
)

// requireLoad skips load runs unless CALLWAKE_LOAD=1: they take minutes and
// need SIPp.
func requireLoad(t *testing.T) {
	t.Helper()
	if os.Getenv("CALLWAKE_LOAD") != "1" {
		t.Skip("load harness: set CALLWAKE_LOAD=1 (bench/run.sh does)")
	}
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatal("sipp not found in PATH: apt-get install -y sip-tester")
	}
}

func paths(t *testing.T, opts *Options) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	opts.Root = root
	opts.Log = t.Logf
}

// resultsDir is this run's directory in bench/results: its profiles, heap
// profiles, goroutine dumps and report.
func resultsDir(opts Options, quick bool) string {
	name := time.Now().UTC().Format("20060102-150405")
	if quick {
		name += "-quick"
	}
	return filepath.Join(opts.Root, "bench", "results", name)
}

// TestLoad is the load run of bench/run.sh.
func TestLoad(t *testing.T) {
	requireLoad(t)
	opts := Full()
	if *quickFlag {
		opts = Quick()
	}
	if err := applyFlags(&opts); err != nil {
		t.Fatal(err)
	}
	paths(t, &opts)
	opts.ResultsDir = resultsDir(opts, *quickFlag)
	started := time.Now()
	report := Run(t, opts)
	md := report.Markdown()
	t.Logf("figures (%s):\n\n%s", time.Since(started).Round(time.Second), md)
	if err := os.WriteFile(filepath.Join(opts.ResultsDir, "report.md"), []byte(md), 0o644); err != nil {
		t.Error(err)
	}
	if *readmeFlag == "yes" || (*readmeFlag == "auto" && !*quickFlag) {
		readme := filepath.Join(opts.Root, "bench", "README.md")
		if err := report.WriteReadme(readme); err != nil {
			t.Fatal(err)
		}
		t.Logf("figures written into %s", readme)
	}
}

// TestSmoke runs 20 calls of flow 2 through every piece of the harness.
func TestSmoke(t *testing.T) {
	requireLoad(t)
	opts := Options{Flows: []int{2}, Rates: []int{10}, StepDuration: 2 * time.Second, Extensions: 20,
		Phases: []string{"steps"}}
	paths(t, &opts)
	opts.ResultsDir = t.TempDir()
	report := Run(t, opts)
	steps := report.Steps[2]
	if len(steps) != 1 {
		t.Fatalf("got %d steps, want 1", len(steps))
	}
	s := steps[0]
	if !s.Passed {
		t.Fatalf("20 calls of flow 2 did not pass: %s", s.Why)
	}
	if s.SIPp.Successful != 20 || s.Outcomes["completed"] != 20 {
		t.Errorf("SIPp: %d successful calls, callwake: %v; want 20 completed", s.SIPp.Successful, s.Outcomes)
	}
	if s.Invite180.N != 20 || s.Invite200.N != 20 || s.InvitePush.N != 20 || s.RTD200.N != 20 {
		t.Errorf("timed %d INVITE→180, %d INVITE→200, %d INVITE→push, %d rtd; want 20 each",
			s.Invite180.N, s.Invite200.N, s.InvitePush.N, s.RTD200.N)
	}
	if s.Phones.Answered != 20 || s.Phones.Byes != 20 {
		t.Errorf("phones answered %d calls and got %d BYEs, want 20", s.Phones.Answered, s.Phones.Byes)
	}
	if s.Invite200.P50 < s.Invite180.P50 {
		t.Errorf("INVITE→200 %s before INVITE→180 %s", s.Invite200, s.Invite180)
	}
}

func applyFlags(o *Options) error {
	if *flowsFlag != "" {
		ids, err := ints(*flowsFlag)
		if err != nil {
			return fmt.Errorf("-flows: %w", err)
		}
		for _, id := range ids {
			if _, ok := flows[id]; !ok {
				return fmt.Errorf("-flows: no flow %d (1 ring timeout, 2 answer, 3 cancel)", id)
			}
		}
		o.Flows = ids
	}
	if *ratesFlag != "" {
		rates, err := ints(*ratesFlag)
		if err != nil {
			return fmt.Errorf("-rates: %w", err)
		}
		o.Rates = rates
	}
	if *stepFlag > 0 {
		o.StepDuration = *stepFlag
	}
	if *phasesFlag != "" {
		o.Phases = strings.Split(*phasesFlag, ",")
	}
	if *extensionsFlag > 0 {
		o.Extensions = *extensionsFlag
	}
	if *growthFlag > 0 {
		o.GrowthCalls = *growthFlag
	}
	o.Rev = *revFlag
	if *workdirFlag != "" {
		dir, err := filepath.Abs(*workdirFlag)
		if err != nil {
			return err
		}
		o.WorkDir = dir
	}
	return nil
}

func ints(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", s)
		}
		out = append(out, n)
	}
	return out, nil
}
