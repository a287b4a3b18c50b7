package loadtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// flow is one call flow the PBX drives through callwake.
type flow struct {
	ID       int
	Name     string
	Scenario string // in bench/sipp
	Phone    PhoneMode
	Callwake callwakeConfig
	Pause    time.Duration // SIPp's -d: talk time (2), ringback before CANCEL (3)
	Length   time.Duration // how long one call lasts from the INVITE
	Outcome  string        // how callwake logs every call of the flow
}

var flows = map[int]flow{
	1: {ID: 1, Name: "ring timeout", Scenario: "ring_timeout.xml", Phone: Silent,
		Callwake: callwakeConfig{RingTimeout: 3 * time.Second}, Length: 3 * time.Second, Outcome: "timeout"},
	2: {ID: 2, Name: "answer", Scenario: "answer.xml", Phone: Answer,
		Callwake: callwakeConfig{RingTimeout: 30 * time.Second, WakeTimeout: 10 * time.Second},
		Pause:    time.Second, Length: 1200 * time.Millisecond, Outcome: "completed"},
	3: {ID: 3, Name: "cancel", Scenario: "cancel.xml", Phone: Ring,
		Callwake: callwakeConfig{RingTimeout: 30 * time.Second, WakeTimeout: 10 * time.Second},
		Pause:    time.Second, Length: 1100 * time.Millisecond, Outcome: "cancelled"},
}

// StepResult is one SIPp run at one rate.
type StepResult struct {
	Flow, Rate, Calls int
	SIPp              sippResult
	Invite180         Latencies
	Invite200         Latencies
	InvitePush        Latencies
	RTD180, RTD200    Latencies
	Pushes            pushCounts
	Phones            PhoneCounts
	Outcomes          map[string]int // callwake_calls_total by outcome, this step
	CallwakeCores     float64        // CPU callwake used, in cores, while SIPp ran
	SIPpCores         float64        // CPU SIPp used, in cores
	HarnessCores      float64        // CPU the phones and the APNs endpoint used, in cores
	OtherCores        float64        // CPU everything else on the machine used, in cores
	CallwakeDrops     int64          // datagrams dropped on callwake's full SIP socket
	PhoneDrops        int64          // datagrams dropped on the phones' full socket
	Peak              Peak           // callwake's highest figures while SIPp ran
	Passed            bool
	Why               string // why it did not pass
}

// Peak is the highest of callwake's figures sampled once a second.
type Peak struct {
	RSS, HeapInuse int64
	Goroutines     int
	Calls          int // calls ringing or talking
}

// watchPeak samples callwake every second until stop is closed.
func (h *harness) watchPeak(stop <-chan struct{}) <-chan Peak {
	out := make(chan Peak, 1)
	go func() {
		var p Peak
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if rss, err := h.cw.rssBytes(); err == nil {
				p.RSS = max(p.RSS, rss)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if m, err := h.cw.metrics(ctx); err == nil {
				p.HeapInuse = max(p.HeapInuse, int64(m["go_memstats_heap_inuse_bytes"]))
				p.Goroutines = max(p.Goroutines, int(m["go_goroutines"]))
				p.Calls = max(p.Calls, int(m["callwake_calls_active"]))
			}
			cancel()
			select {
			case <-stop:
				out <- p
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// runStep drives calls calls of f at rate through callwake and checks
// every one ended as it should. during, if not nil, runs while SIPp does.
func (h *harness) runStep(f flow, rate, calls int, during func()) StepResult {
	ctx := context.Background()
	res := StepResult{Flow: f.ID, Rate: rate, Calls: calls}
	h.push.take()
	h.phones.take()
	before, _ := h.cw.metrics(ctx)
	cwCPU0, _ := cpuTime(h.cw.pid())
	selfCPU0, _ := cpuTime(os.Getpid())
	busy0 := busyCPU()
	cwDrops0, phoneDrops0 := udpDrops(h.cw.sipPort), udpDrops(h.phones.port)

	h.sippRuns++
	run := sippRun{
		Scenario: filepath.Join(h.opts.Root, "bench", "sipp", f.Scenario), Target: h.cw.sipAddr,
		Extensions: h.extCSV, Rate: rate, Calls: calls, Pause: f.Pause, RecvTimeout: f.Length + 10*time.Second,
		Dir: filepath.Join(h.dir, fmt.Sprintf("sipp-%02d-flow%d-%dcps", h.sippRuns, f.ID, rate)),
	}
	within := run.expected(f.Length) + run.RecvTimeout + 30*time.Second
	proc, err := startSIPp(run, within)
	if err != nil {
		res.Why = err.Error()
		return res
	}
	if during != nil {
		during()
	}
	stopPeak := make(chan struct{})
	peak := h.watchPeak(stopPeak)
	sres, err := proc.wait(within)
	close(stopPeak)
	res.Peak = <-peak
	res.SIPp = sres
	if err != nil {
		res.Why = err.Error()
		return res
	}
	elapsed := sres.Elapsed
	cwCPU1, _ := cpuTime(h.cw.pid())
	selfCPU1, _ := cpuTime(os.Getpid())
	sippCPU := time.Duration(0)
	if st := proc.cmd.ProcessState; st != nil {
		sippCPU = st.UserTime() + st.SystemTime()
	}
	res.CallwakeCores = (cwCPU1 - cwCPU0).Seconds() / elapsed.Seconds()
	res.SIPpCores = sippCPU.Seconds() / elapsed.Seconds()
	res.HarnessCores = (selfCPU1 - selfCPU0).Seconds() / elapsed.Seconds()
	res.OtherCores = max(0, (busyCPU()-busy0).Seconds()/elapsed.Seconds()-res.CallwakeCores-res.SIPpCores-res.HarnessCores)

	// Every call is over for the PBX; give callwake a moment to log the
	// last ones and send their last pushes.
	after := h.waitOutcomes(ctx, before, sres.Created, 30*time.Second)
	res.CallwakeDrops, res.PhoneDrops = udpDrops(h.cw.sipPort)-cwDrops0, udpDrops(h.phones.port)-phoneDrops0
	res.Outcomes = outcomeDelta(before, after)
	toPush, pushes := h.push.take()
	res.Pushes = pushes
	res.Phones = h.phones.take()
	res.Invite180, res.Invite200 = summarise(sres.Invite180), summarise(sres.Invite200)
	res.RTD180, res.RTD200 = summarise(sres.RTD180), summarise(sres.RTD200)
	res.InvitePush = summarise(toPush)
	res.Passed, res.Why = verdict(f, res, run.expected(f.Length))
	return res
}

// waitOutcomes waits until callwake has logged want more calls than in
// before, or within passes, and returns the metrics then.
func (h *harness) waitOutcomes(ctx context.Context, before map[string]float64, want int, within time.Duration) map[string]float64 {
	deadline := time.Now().Add(within)
	for {
		after, err := h.cw.metrics(ctx)
		if err == nil {
			total := 0
			for _, n := range outcomeDelta(before, after) {
				total += n
			}
			if (total >= want && after["callwake_calls_active"] == 0) || time.Now().After(deadline) {
				return after
			}
		} else if time.Now().After(deadline) {
			return before
		}
		time.Sleep(250 * time.Millisecond) // polling callwake's metrics
	}
}

// keyLatency is the latency that shows a flow's queue: INVITE→200 when
// the phone answers (it waits for the REGISTER path), else INVITE→180.
func (f flow) keyLatency() string {
	if f.Phone == Answer {
		return "INVITE→200"
	}
	return "INVITE→180"
}

// queueGrowth compares the median key latency of the first and the last
// quarter of the calls; a queue that grows through the step makes the last
// much slower.
func queueGrowth(f flow, calls []callTiming) (first, last time.Duration, grew bool) {
	if len(calls) < 40 {
		return 0, 0, false
	}
	key := func(part []callTiming) time.Duration {
		var d []time.Duration
		for _, c := range part {
			if f.Phone == Answer {
				d = append(d, c.To200)
			} else {
				d = append(d, c.To180)
			}
		}
		return summarise(d).P50
	}
	q := len(calls) / 4
	first, last = key(calls[:q]), key(calls[len(calls)-q:])
	return first, last, last > 2*first+20*time.Millisecond
}

func outcomeDelta(before, after map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		outcome, ok := strings.CutPrefix(k, `callwake_calls_total{outcome="`)
		if !ok {
			continue
		}
		outcome = strings.TrimSuffix(outcome, `"}`)
		if d := int(v - before[k]); d > 0 {
			out[outcome] = d
		}
	}
	return out
}

// verdict says whether a step held its rate: no failed call, every call
// made and ended as the flow ends, no push refused, and no unbounded
// queueing: the PBX retransmitted for at most 1 call in 1,000 (a response
// later than T1 = 500 ms, or a datagram dropped), p99 INVITE→180 stayed
// under T1, and the calls at the end of the step were not slower than
// those at its start (a queue that grows with time).
func verdict(f flow, r StepResult, expected time.Duration) (bool, string) {
	var why []string
	s := r.SIPp
	if s.Failed > 0 {
		why = append(why, fmt.Sprintf("%d failed calls", s.Failed))
	}
	if s.Created < r.Calls {
		why = append(why, fmt.Sprintf("SIPp made %d of %d calls", s.Created, r.Calls))
	}
	if n := r.Outcomes[f.Outcome]; n < s.Created {
		why = append(why, fmt.Sprintf("callwake logged %d of %d calls as %s (%v)", n, s.Created, f.Outcome, r.Outcomes))
	}
	if r.Pushes.Refused > 0 {
		why = append(why, fmt.Sprintf("%d pushes refused by the APNs mock", r.Pushes.Refused))
	}
	if r.Invite180.N > 0 && r.Invite180.P99 > 500*time.Millisecond {
		why = append(why, fmt.Sprintf("queueing: p99 INVITE→180 %s", ms(r.Invite180.P99)))
	}
	if s.Retransmissions*1000 > max(s.Created, 1) {
		why = append(why, fmt.Sprintf("queueing: %d retransmissions for %d calls", s.Retransmissions, s.Created))
	}
	if first, last, grew := queueGrowth(f, s.Calls); grew {
		why = append(why, fmt.Sprintf("queue growing: p50 %s went from %s (first quarter of the calls) to %s (last quarter)",
			f.keyLatency(), ms(first), ms(last)))
	}
	if s.Elapsed > expected*3/2+5*time.Second {
		why = append(why, fmt.Sprintf("queueing: the run took %s, %s expected", s.Elapsed.Round(time.Second), expected.Round(time.Second)))
	}
	if r.Phones.RegisterFailed > 0 {
		why = append(why, fmt.Sprintf("%d phone REGISTERs failed (%s)", r.Phones.RegisterFailed, r.Phones.LastError))
	}
	return len(why) == 0, strings.Join(why, "; ")
}
