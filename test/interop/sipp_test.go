package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sipp is one SIPp run of a scenario: the PBX placing one call to callwake.
type sipp struct {
	t       *testing.T
	proc    *process
	localIP string
}

// startSIPp runs a scenario of test/sipp against callwake, for one call to
// the extension, on free loopback ports, over transport ("udp" or "tcp").
// -timeout bounds the whole run. extra are more SIPp options.
func startSIPp(t *testing.T, cw *callwake, scenario, transport string, extra ...string) *sipp {
	t.Helper()
	return startSIPpAt(t, "127.0.0.1", cw.sipAddr, scenario, transport, extra...)
}

// startSIPpAt is startSIPp from the loopback address localIP (any of
// 127.0.0.0/8) to remote (host:port): callwake, or a proxy in front of it.
func startSIPpAt(t *testing.T, localIP, remote, scenario, transport string, extra ...string) *sipp {
	t.Helper()
	bin := requirePeer(t, "sipp", "sip-tester")
	dir := t.TempDir()
	args := []string{
		"-sf", sippScenario(t, scenario),
		"-s", extension,
		remote,
		"-i", localIP,
		"-p", strconv.Itoa(freePort(t)),
		"-mp", strconv.Itoa(freePortPair(t)),
		"-cp", strconv.Itoa(freePort(t)),
		"-m", "1",
		"-nostdin",
		"-timeout", "30s", "-timeout_error",
		// No message trace; unexpected messages only, for the failure report.
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
	}
	switch transport {
	case "udp":
		args = append(args, "-t", "u1") // one socket for the call
	case "tcp":
		args = append(args, "-t", "t1")
	default:
		t.Fatalf("SIPp transport %q", transport)
	}
	args = append(args, extra...)
	proc := startProcess(t, "sipp-"+strings.TrimSuffix(scenario, ".xml"), dir, cleanEnv(), bin, args...)
	return &sipp{t: t, proc: proc, localIP: localIP}
}

// callID is the Call-ID of the run's call: SIPp's [call_id] is
// <call_number>-<pid>@<local ip>.
func (s *sipp) callID() string {
	return fmt.Sprintf("1-%d@%s", s.proc.pid(), s.localIP)
}

// expectSuccess waits for SIPp to end and requires exit code 0: the
// scenario ran to its end with every expected message. A peer in peers
// that exits first fails the test at once.
func (s *sipp) expectSuccess(within time.Duration, peers ...*process) {
	s.t.Helper()
	peerExited := make(chan *process, len(peers))
	for _, p := range peers {
		go func() {
			<-p.done
			peerExited <- p
		}()
	}
	select {
	case <-s.proc.done:
	case p := <-peerExited:
		code, _ := p.wait(0)
		s.t.Fatalf("%s exited with %d while SIPp's call was still going", p.name, code)
	case <-time.After(within):
		s.t.Fatalf("SIPp still running after %s", within)
	}
	if code, _ := s.proc.wait(0); code != 0 {
		s.t.Fatalf("SIPp exited with %d, want 0 (scenario failed)", code)
	}
}

// The phone never wakes: callwake rings, pushes, and answers 487 once
// calls.wake_timeout has passed.
func TestSIPpWakeTimeout(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	cw := startCallwake(t)
	cw.provision("")

	start := time.Now()
	pbx := startSIPp(t, cw, "uac_timeout.xml", "udp")
	pbx.expectSuccess(wakeTimeout + 10*time.Second)
	if took := time.Since(start); took < wakeTimeout {
		t.Errorf("487 after %s, before the wake timeout (%s)", took.Round(time.Millisecond), wakeTimeout)
	}

	c := cw.waitCall(pbx.callID(), "timeout", 2*time.Second)
	if c.Status != 487 || c.Extension != extension || c.CallerNumber != "+15550100" || c.PushAt == nil {
		t.Errorf("call log: %+v", c)
	}
	if c.AnswerAt != nil || c.FirstRegisterAt != nil {
		t.Errorf("call log has an answer or a REGISTER for a phone that never woke: %+v", c)
	}
	if cli := cw.cliCall(pbx.callID()); cli.Outcome != "timeout" || cli.Status != 487 || cli.ID != c.ID {
		t.Errorf("callwake calls --json: %+v, want the API's %+v", cli, c)
	}
	// Disabled pushes are logged, not sent: one incoming_call, then the
	// call_cancelled that dismisses the call screen.
	var kinds []string
	for _, e := range cw.logEntries("push not sent: provider disabled (no credentials)") {
		if e["call_id"] == c.ID {
			kinds = append(kinds, fmt.Sprint(e["push_type"]))
		}
	}
	if strings.Join(kinds, ",") != "incoming_call,call_cancelled" {
		t.Errorf("pushes logged for the call: %v, want incoming_call then call_cancelled", kinds)
	}
}

// The caller hangs up while the extension rings: 200 to the CANCEL, 487 to
// the INVITE, and the call log says cancelled.
func TestSIPpCallerCancels(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	cw := startCallwake(t)
	cw.provision("")

	pbx := startSIPp(t, cw, "uac_cancel.xml", "udp")
	pbx.expectSuccess(10 * time.Second)

	c := cw.waitCall(pbx.callID(), "cancelled", 2*time.Second)
	if c.Status != 487 || c.EndAt == nil || c.AnswerAt != nil {
		t.Errorf("call log: %+v", c)
	}
	if cli := cw.cliCall(pbx.callID()); cli.Outcome != "cancelled" || cli.Status != 487 {
		t.Errorf("callwake calls --json: %+v", cli)
	}
	if c.EndAt != nil && c.PushAt != nil {
		if rang := c.EndAt.Sub(*c.PushAt); rang < 900*time.Millisecond || rang > wakeTimeout {
			t.Errorf("call rang %s; the scenario cancels after ~1s", rang)
		}
	}
}

// SIGTERM while a call rings: callwake refuses new calls with 503 and a
// Retry-After, lets the ringing call run to its end (487 at the wake
// timeout), then exits 0 with the call logged.
func TestSIPpDrainOnSIGTERM(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	cw := startCallwake(t)
	cw.provision("")

	ringing := startSIPp(t, cw, "uac_timeout.xml", "udp")
	cw.waitCall(ringing.callID(), "ringing", 3*time.Second)
	cw.terminate()
	if !cw.waitLog("shutting down: waiting for calls to end", 3*time.Second) {
		t.Fatal("callwake did not start draining on SIGTERM")
	}

	late := startSIPp(t, cw, "uac_draining.xml", "udp")
	late.expectSuccess(10 * time.Second)
	ringing.expectSuccess(wakeTimeout + 10*time.Second)

	code, ok := cw.proc.wait(drainTime)
	if !ok || code != 0 {
		t.Fatalf("callwake after the drain: exited %v, code %d; want exit 0", ok, code)
	}
	// The database is closed; the CLI reads the call log from the file.
	if c := cw.cliCall(ringing.callID()); c.Outcome != "timeout" || c.Status != 487 {
		t.Errorf("ringing call logged as %+v, want timeout 487", c)
	}
}

// callwake answers a PBX's INVITE as one UAS: its 180 and its final answer
// carry the same To tag (RFC 3261 8.2.6.2), so that the PBX sees one dialog,
// not a fork whose early dialog never ends. The 487 comes from callwake's
// call logic at the wake timeout, and from the SIP stack on a CANCEL.
func TestSIPpToTagStable(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	for _, flow := range []struct{ name, scenario string }{
		{"caller cancels", "uac_cancel.xml"},
		{"wake timeout", "uac_timeout.xml"},
	} {
		t.Run(flow.name, func(t *testing.T) {
			cw := startCallwake(t)
			cw.provision("")
			messages := filepath.Join(t.TempDir(), "messages.log")
			pbx := startSIPp(t, cw, flow.scenario, "udp", "-trace_msg", "-message_file", messages)
			pbx.expectSuccess(wakeTimeout + 10*time.Second)

			tags := map[string][]string{} // To tag -> statuses that carried it
			for _, res := range sippReceived(t, messages) {
				status, _, _ := strings.Cut(strings.TrimPrefix(res.startLine, "SIP/2.0 "), " ")
				if res.cseq == "1 INVITE" && status != "100" {
					tags[res.toTag] = append(tags[res.toTag], status)
				}
			}
			if len(tags) != 1 {
				t.Errorf("callwake's responses to one INVITE carry %d To tags, want 1: %v", len(tags), tags)
			}
		})
	}
}

// sippMessage is a SIP message from SIPp's -trace_msg file.
type sippMessage struct {
	startLine, cseq, toTag string
	recordRoute            string // the first Record-Route, if any
	topVia                 string // the first Via: who sent it
}

// sippReceived parses the messages SIPp received from its -trace_msg file.
func sippReceived(t *testing.T, path string) []sippMessage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("SIPp message trace: %v", err)
	}
	var out []sippMessage
	for _, block := range strings.Split(string(data), "\n-----") {
		// A block: the date line, "UDP message received [n] bytes :", the message.
		_, msg, ok := strings.Cut(block, "\n")
		if !ok || !strings.Contains(msg, "message received") {
			continue
		}
		lines := strings.Split(strings.ReplaceAll(msg, "\r", ""), "\n")
		var m sippMessage
		for _, line := range lines[1:] {
			if line == "" {
				if m.startLine != "" {
					break // end of the headers
				}
				continue
			}
			if m.startLine == "" {
				m.startLine = line
				continue
			}
			name, value, _ := strings.Cut(line, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "cseq":
				m.cseq = strings.TrimSpace(value)
			case "via", "v":
				if m.topVia == "" {
					m.topVia, _, _ = strings.Cut(strings.TrimSpace(value), ",")
				}
			case "record-route":
				if m.recordRoute == "" {
					m.recordRoute = strings.TrimSpace(value)
				}
			case "to", "t":
				if _, tag, ok := strings.Cut(value, ";tag="); ok {
					m.toTag, _, _ = strings.Cut(tag, ";")
				}
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		t.Fatalf("no received message in SIPp's trace %s", path)
	}
	return out
}
