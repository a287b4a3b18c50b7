package loadtest

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sippRun is one SIPp run as the PBX.
type sippRun struct {
	Scenario    string // path of the scenario
	Target      string // callwake's UDP host:port
	Extensions  string // the -inf CSV
	Rate        int    // new calls per second
	Calls       int    // -m
	Pause       time.Duration
	RecvTimeout time.Duration // a response not received by then fails the call
	Dir         string        // SIPp's files; created
}

// sippResult is what SIPp reports at the end of a run.
type sippResult struct {
	Created, Successful, Failed, Retransmissions int
	Elapsed                                      time.Duration
	ExitCode                                     int
	// From the -trace_logs line of each successful call, to the
	// microsecond; Calls in the order they were made.
	Invite180, Invite200 []time.Duration
	Calls                []callTiming
	// SIPp's rtd timers from -trace_rtt, in whole milliseconds.
	RTD180, RTD200 []time.Duration
	Errors         string // the start of SIPp's error log
}

type sippProc struct {
	run     sippRun
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	err     error
}

// expected is how long the run should take: the calls at the rate, then
// the last call.
func (r sippRun) expected(callLength time.Duration) time.Duration {
	return time.Duration(float64(r.Calls)/float64(r.Rate)*float64(time.Second)) + callLength
}

func startSIPp(r sippRun, globalTimeout time.Duration) (*sippProc, error) {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	media, err := freeMediaPort()
	if err != nil {
		return nil, err
	}
	limit := r.Rate * int(math.Ceil((r.Pause + r.RecvTimeout + 10*time.Second).Seconds()))
	args := []string{
		"-sf", r.Scenario, "-inf", r.Extensions, r.Target,
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-mp", strconv.Itoa(media),
		"-r", strconv.Itoa(r.Rate), "-rp", "1000", "-m", strconv.Itoa(r.Calls), "-l", strconv.Itoa(max(limit, r.Calls/4, 100)),
		"-d", strconv.FormatInt(r.Pause.Milliseconds(), 10),
		"-recv_timeout", strconv.FormatInt(r.RecvTimeout.Milliseconds(), 10),
		"-timeout", strconv.Itoa(int(globalTimeout.Seconds())) + "s", "-timeout_error",
		"-timer_resol", "1", "-buff_size", strconv.Itoa(4 << 20),
		"-max_recv_loops", "10000", "-max_sched_loops", "10000",
		"-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
		"-trace_rtt", "-rtt_freq", "1", "-trace_logs", "-log_file", "calls.log",
		"-trace_err", "-error_file", "errors.log",
	}
	screen, err := os.Create(filepath.Join(r.Dir, "screen.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("sipp", args...)
	cmd.Dir = r.Dir
	cmd.Stdout, cmd.Stderr = screen, screen
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		screen.Close()
		return nil, fmt.Errorf("starting sipp: %w", err)
	}
	p := &sippProc{run: r, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		screen.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *sippProc) pid() int { return p.cmd.Process.Pid }

// wait waits for SIPp to end (killing it after within) and reads its
// files.
func (p *sippProc) wait(within time.Duration) (sippResult, error) {
	select {
	case <-p.done:
	case <-time.After(within):
		p.kill()
	}
	res := sippResult{Elapsed: time.Since(p.started)}
	var exitErr *exec.ExitError
	if errors.As(p.err, &exitErr) {
		res.ExitCode = exitErr.ExitCode()
	}
	if err := res.readStats(filepath.Join(p.run.Dir, "stat.csv")); err != nil {
		return res, fmt.Errorf("%w (sipp: %s)", err, tail(filepath.Join(p.run.Dir, "screen.log"), 5))
	}
	res.readCallLog(filepath.Join(p.run.Dir, "calls.log"))
	if rtt, _ := filepath.Glob(filepath.Join(p.run.Dir, "*_rtt.csv")); len(rtt) > 0 {
		res.readRTT(rtt[0])
	}
	if b, err := os.ReadFile(filepath.Join(p.run.Dir, "errors.log")); err == nil && len(b) > 0 {
		res.Errors = string(b[:min(len(b), 2000)])
	}
	return res, nil
}

func (p *sippProc) kill() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// readStats reads the last line of SIPp's -trace_stat file.
func (r *sippResult) readStats(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading SIPp stats: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return fmt.Errorf("SIPp stats %s: no data", path)
	}
	header, last := strings.Split(lines[0], ";"), strings.Split(lines[len(lines)-1], ";")
	col := func(name string) int {
		for i, h := range header {
			if h == name && i < len(last) {
				n, _ := strconv.Atoi(last[i])
				return n
			}
		}
		return 0
	}
	r.Created, r.Successful, r.Failed = col("TotalCallCreated"), col("SuccessfulCall(C)"), col("FailedCall(C)")
	r.Retransmissions = col("Retransmissions(C)")
	return nil
}

// callTiming is one call's INVITE→180 and INVITE→200 (0 when none).
type callTiming struct {
	Invite       time.Time
	To180, To200 time.Duration
}

// readCallLog reads the scenarios' log lines:
// "bench <n> invite <s> <us> 180 <s> <us> [200|487 <s> <us>]".
func (r *sippResult) readCallLog(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		at := parseCallLog(sc.Text())
		invite, ok := at["invite"]
		if !ok {
			continue
		}
		c := callTiming{Invite: invite}
		if t, ok := at["180"]; ok {
			c.To180 = t.Sub(invite)
			r.Invite180 = append(r.Invite180, c.To180)
		}
		if t, ok := at["200"]; ok {
			c.To200 = t.Sub(invite)
			r.Invite200 = append(r.Invite200, c.To200)
		}
		r.Calls = append(r.Calls, c)
	}
	slices.SortFunc(r.Calls, func(a, b callTiming) int { return a.Invite.Compare(b.Invite) })
}

func parseCallLog(line string) map[string]time.Time {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "bench" {
		return nil
	}
	out := map[string]time.Time{}
	for i := 2; i+2 < len(fields); i += 3 {
		s, err1 := strconv.ParseFloat(fields[i+1], 64)
		us, err2 := strconv.ParseFloat(fields[i+2], 64)
		if err1 == nil && err2 == nil {
			out[fields[i]] = time.Unix(int64(s), int64(us)*1000)
		}
	}
	return out
}

// readRTT reads -trace_rtt: "Date_ms;response_time_ms;rtd_no" per timer.
func (r *sippResult) readRTT(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ";")
		if len(parts) != 3 {
			continue
		}
		v, err := strconv.ParseFloat(parts[1], 64)
		if err != nil {
			continue
		}
		d := time.Duration(v * float64(time.Millisecond))
		switch parts[2] {
		case "invite_180":
			r.RTD180 = append(r.RTD180, d)
		case "invite_200":
			r.RTD200 = append(r.RTD200, d)
		}
	}
}

// freeMediaPort is an even UDP port p with p+2 free too: SIPp binds its
// audio and video sockets there.
func freeMediaPort() (int, error) {
	for range 50 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		p &^= 1
		a, errA := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		b, errB := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+2))
		for _, c := range []net.PacketConn{a, b} {
			if c != nil {
				c.Close()
			}
		}
		if errA == nil && errB == nil {
			return p, nil
		}
	}
	return 0, errors.New("no free UDP port pair for SIPp's media")
}
