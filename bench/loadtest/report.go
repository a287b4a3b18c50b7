package loadtest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is everything a run measured.
type Report struct {
	Opts      Options
	Machine   Machine
	Callwake  string               // what was measured: a commit, or the working tree
	Steps     map[int][]StepResult // by flow
	Sustained map[int]int          // highest rate held with no failed call, by flow
	SIPpFloor Latencies            // INVITE→180 SIPp reports against a stateless responder
	Latency   *StepResult
	// Longer runs of flow 2 (the latency run) that did not hold at a rate
	// its step had held.
	Unconfirmed []StepResult
	Confirmed   *StepResult // flow 2's longer run at its highest held step that held
	Profile     *ProfileResult
	Memory      *MemoryResult
	Growth      *GrowthResult
}

// ProfileResult is the CPU profile taken under load.
type ProfileResult struct {
	Rate, Seconds int
	Path, Top     string
	Step          StepResult
}

// Machine is where the figures were taken.
type Machine struct {
	CPUs                 int
	Model, Memory        string
	Go, SIPp, Kernel     string
	Date                 time.Time
	OtherLoadAtStartAvg1 string // /proc/loadavg when the run began
}

func newReport(opts Options) *Report {
	return &Report{Opts: opts, Machine: thisMachine(), Steps: map[int][]StepResult{}, Sustained: map[int]int{}}
}

func (r *Report) addStep(s StepResult) {
	r.Steps[s.Flow] = append(r.Steps[s.Flow], s)
	if s.Passed && s.Rate > r.Sustained[s.Flow] {
		r.Sustained[s.Flow] = s.Rate
	}
}

func thisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC()}
	if out, err := exec.Command("lscpu").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "Model name:"); ok {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	// sipp -v exits 99 after printing its version.
	if out, _ := exec.Command("sipp", "-v").CombinedOutput(); len(out) > 0 {
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(line); strings.HasPrefix(line, "SIPp ") {
				m.SIPp = strings.TrimSuffix(line, ".")
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.Memory = fmt.Sprintf("%d GiB", (kb+(1<<19))>>20)
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.OtherLoadAtStartAvg1, _, _ = strings.Cut(string(b), " ")
	}
	return m
}

func (s StepResult) summary() string {
	status := "ok"
	if !s.Passed {
		status = "NOT HELD: " + s.Why
	}
	return fmt.Sprintf("%d calls, %d failed, %d retrans; INVITE→180 %s, →push %s, →200 %s; CPU: callwake %.2f, SIPp %.2f, harness %.2f, others %.2f cores; UDP drops: callwake %d, phones %d; callwake peak: %d calls, RSS %s, heap %s, %d goroutines; %s",
		s.SIPp.Created, s.SIPp.Failed, s.SIPp.Retransmissions, s.Invite180, s.InvitePush, s.Invite200,
		s.CallwakeCores, s.SIPpCores, s.HarnessCores, s.OtherCores, s.CallwakeDrops, s.PhoneDrops,
		s.Peak.Calls, mib(s.Peak.RSS), mib(s.Peak.HeapInuse), s.Peak.Goroutines, status)
}

// Readme markers: bench/run.sh rewrites what is between them.
const (
	figuresBegin = "<!-- figures: written by bench/run.sh; edits between these markers are overwritten -->"
	figuresEnd   = "<!-- end of figures -->"
)

// WriteReadme puts the figures into the "Calls under load" section of the
// README at path: between the markers, or as the whole section when they
// are missing.
func (r *Report) WriteReadme(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	updated, err := replaceFigures(string(b), r.Markdown())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(updated), 0o644)
}

func replaceFigures(readme, figures string) (string, error) {
	block := figuresBegin + "\n\n" + strings.TrimSpace(figures) + "\n\n" + figuresEnd
	if i := strings.Index(readme, figuresBegin); i >= 0 {
		j := strings.Index(readme[i:], figuresEnd)
		if j < 0 {
			return "", fmt.Errorf("%q without %q", figuresBegin, figuresEnd)
		}
		return readme[:i] + block + readme[i+j+len(figuresEnd):], nil
	}
	const heading = "## Calls under load"
	i := strings.Index(readme, heading)
	if i < 0 {
		return strings.TrimRight(readme, "\n") + "\n\n" + heading + "\n\n" + block + "\n", nil
	}
	rest := readme[i+len(heading):]
	end := len(rest)
	if j := strings.Index(rest, "\n## "); j >= 0 {
		end = j + 1
	}
	return readme[:i] + heading + "\n\n" + block + "\n" + strings.TrimLeft(rest[end:], "\n"), nil
}

// Markdown is the figures as README text.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "callwake built from %s. Taken %s on %d cores (%s, %s), %s, Linux %s, %s; load average %s when the run began. ",
		r.Callwake, m.Date.Format("2006-01-02"), m.CPUs, m.Model, m.Memory, m.Go, m.Kernel, m.SIPp, m.OtherLoadAtStartAvg1)
	fmt.Fprintf(&b, "The machine is a shared VM, and callwake, SIPp, the load phones and the APNs endpoint all ran on it over loopback: "+
		"they split those %d cores between them (the CPU columns say how), so these figures are a floor for a host of callwake's own.\n\n", m.CPUs)

	b.WriteString("| figure | target | measured |\n|---|---|---|\n")
	for _, id := range []int{2, 3, 1} {
		steps := r.Steps[id]
		if len(steps) == 0 {
			continue
		}
		target := "—"
		if id == 2 {
			target = "≥ 1,000"
		}
		fmt.Fprintf(&b, "| calls/s held with no failed call, flow %d (%s) | %s | %s |\n", id, flows[id].Name, target, r.sustainedText(id))
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(&b, "| INVITE→180 p50 / p99, flow 2 at %d cps (SIPp's own share: %s) | p99 < 10 ms | %s %s |\n", l.Rate, r.SIPpFloor, l.Invite180, mark(l.Invite180.N > 0 && l.Invite180.P99 < 10*time.Millisecond))
		fmt.Fprintf(&b, "| INVITE→push received p50 / p99, same run | p99 < 15 ms | %s %s |\n", l.InvitePush, mark(l.InvitePush.N > 0 && l.InvitePush.P99 < 15*time.Millisecond))
		fmt.Fprintf(&b, "| INVITE→200 p50 / p99, same run (push, REGISTER with digest, INVITE, answer) | — | %s |\n", l.Invite200)
	}
	if mem := r.Memory; mem != nil && len(mem.Ringing) > 0 {
		var rss, heap, stack, gor []string
		for _, x := range mem.Ringing {
			rss = append(rss, fmt.Sprintf("%.1f KiB at %s", x.PerCall.RSS/1024, thousands(x.Target)))
			heap = append(heap, fmt.Sprintf("%.1f KiB", x.PerCall.Heap/1024))
			stack = append(stack, fmt.Sprintf("%.1f KiB", x.PerCall.Stack/1024))
			gor = append(gor, fmt.Sprintf("%.2f", x.PerCall.Goroutines))
		}
		// The target is for the largest plateau (20,000 calls). Between two
		// plateaus, what is idle's or warm-up's (the directory of
		// extensions, push connections) cancels out: the marginal cost.
		last := mem.Ringing[len(mem.Ringing)-1]
		if n := len(mem.Ringing); n > 1 {
			prev := mem.Ringing[n-2]
			marginal := float64(last.Sample.RSS-prev.Sample.RSS) / float64(last.Sample.Calls-prev.Sample.Calls)
			rss = append(rss, fmt.Sprintf("%.1f KiB each from %s to %s", marginal/1024, thousands(prev.Target), thousands(last.Target)))
		}
		fmt.Fprintf(&b, "| resident memory per ringing call (VmRSS above idle) | < 10 KiB at 20,000 | %s %s |\n", strings.Join(rss, ", "),
			mark(last.PerCall.RSS < 10*1024 && mem.Why == ""))
		fmt.Fprintf(&b, "| Go heap in use per ringing call | — | %s |\n", strings.Join(heap, ", "))
		fmt.Fprintf(&b, "| goroutine stacks per ringing call | — | %s |\n", strings.Join(stack, ", "))
		fmt.Fprintf(&b, "| goroutines per ringing call | — | %s |\n", strings.Join(gor, ", "))
	}
	if g := r.Growth; g != nil && g.After.RSS > 0 {
		first, second := g.Half.HeapAlloc-g.Before.HeapAlloc, g.After.HeapAlloc-g.Half.HeapAlloc
		// A leak grows in the second half as in the first; a high-water
		// mark (a pool's worker, a map's buckets) only in the first. The
		// second half's live heap moved by -6.4, -1.1 and +2.5 MiB in three
		// runs (buffers, pools): allow 64 bytes per call of the half, 3 MiB
		// for 50,000 calls. A leak of one small object per call is several
		// times that.
		noise := int64(64 * max(g.SecondHalf.SIPp.Created, 1))
		grew := g.After.Goroutines > g.Half.Goroutines || second > noise
		fmt.Fprintf(&b, "| growth over %s calls (flow 2 at %d cps, %d failed), each half then %s of settling: live heap; goroutines | none | %s → %s → %s (first half %+.1f MiB, second %+.1f MiB); %d → %d → %d %s |\n",
			thousands(g.Created()), g.Rate, g.Failed(), g.SettledIn.Round(time.Second),
			mib(g.Before.HeapAlloc), mib(g.Half.HeapAlloc), mib(g.After.HeapAlloc), float64(first)/(1<<20), float64(second)/(1<<20),
			g.Before.Goroutines, g.Half.Goroutines, g.After.Goroutines, mark(!grew))
		peak := g.FirstHalf.Peak
		if g.SecondHalf.Peak.RSS > peak.RSS {
			peak = g.SecondHalf.Peak
		}
		fmt.Fprintf(&b, "| same: heap spans in use; RSS (Go runtime's share); peak during the calls | — | %s → %s → %s; %s (%s) → %s (%s) → %s (%s); peak RSS %s, heap %s, %d goroutines |\n",
			mib(g.Before.HeapInuse), mib(g.Half.HeapInuse), mib(g.After.HeapInuse),
			mib(g.Before.RSS), mib(g.Before.GoSys), mib(g.Half.RSS), mib(g.Half.GoSys), mib(g.After.RSS), mib(g.After.GoSys),
			mib(peak.RSS), mib(peak.HeapInuse), peak.Goroutines)
	}

	for _, id := range []int{2, 3, 1} {
		steps := r.Steps[id]
		if len(steps) == 0 {
			continue
		}
		f := flows[id]
		fmt.Fprintf(&b, "\nFlow %d (%s), %s steps:\n\n", id, f.Name, r.Opts.StepDuration)
		b.WriteString("| cps | calls | failed | retrans | INVITE→180 p50 / p99 | INVITE→push p50 / p99 | INVITE→200 p50 / p99 | CPU cores: callwake / SIPp / harness / others | UDP drops at callwake | callwake peak RSS / goroutines | held |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range steps {
			held := "yes"
			if !s.Passed {
				held = "no: " + s.Why
			}
			fmt.Fprintf(&b, "| %d | %d | %d | %d | %s | %s | %s | %.2f / %.2f / %.2f / %.2f | %d | %s / %d | %s |\n", s.Rate, s.SIPp.Created, s.SIPp.Failed,
				s.SIPp.Retransmissions, s.Invite180, s.InvitePush, s.Invite200, s.CallwakeCores, s.SIPpCores, s.HarnessCores, s.OtherCores,
				s.CallwakeDrops, mib(s.Peak.RSS), s.Peak.Goroutines, held)
		}
	}
	if p := r.Profile; p != nil {
		fmt.Fprintf(&b, "\nCPU profile of callwake, %d s during flow 2 at %d cps (%s), `go tool pprof -top`, first entries:\n\n```\n%s```\n",
			p.Seconds, p.Rate, p.Step.summary(), topLines(p.Top, 22))
	}
	return b.String()
}

func (r *Report) sustainedText(flow int) string {
	steps := r.Steps[flow]
	best := r.Sustained[flow]
	text := fmt.Sprintf("**%s**", thousands(best))
	if best == 0 {
		text = "**none of the steps**"
	}
	if last := steps[len(steps)-1]; !last.Passed {
		text += fmt.Sprintf(" (%s: %s)", thousands(last.Rate), last.Why)
	} else {
		text += " (the highest step tried)"
	}
	if flow == 2 {
		for _, u := range r.Unconfirmed {
			text += fmt.Sprintf("; a %s run at %s did not hold (%s)", runLength(u), thousands(u.Rate), u.Why)
		}
		confirmed := 0
		if c := r.Confirmed; c != nil {
			confirmed = c.Rate
			text += fmt.Sprintf("; a %s run at %s held", runLength(*c), thousands(c.Rate))
		}
		text += " " + mark(confirmed >= 1000)
	}
	return text
}

// runLength is how long SIPp made the calls of a run.
func runLength(r StepResult) time.Duration {
	return time.Duration(r.Calls/max(r.Rate, 1)) * time.Second
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// topLines keeps pprof's header and its first n rows.
func topLines(top string, n int) string {
	var out []string
	rows := 0
	for _, line := range strings.Split(top, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		out = append(out, line)
		if strings.Contains(line, "%") && !strings.Contains(line, "flat%") && !strings.HasPrefix(line, "Showing") &&
			!strings.HasPrefix(line, "Duration") && !strings.HasPrefix(line, "Dropped") {
			rows++
			if rows == n {
				break
			}
		}
	}
	return strings.Join(slices.DeleteFunc(out, func(l string) bool {
		return strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:")
	}), "\n") + "\n"
}
