package interop

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callwake/callwake/test/testnet"
)

// process is a peer or callwake running as a child process, its output in a
// file of the test's temp dir.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, once done is closed
}

// startProcess runs bin with args in dir; stdout and stderr go to
// <name>.log in the test's temp dir. The process is stopped (SIGTERM, then
// SIGKILL) when the test ends, and its log's tail is printed if the test
// failed.
func startProcess(t *testing.T, name, dir string, env []string, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, logFile, logFile
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Logf("%s started (pid %d): %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop(3 * time.Second)
		if t.Failed() {
			p.printTail(t, 60)
		}
	})
	return p
}

// pid is the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit and returns its exit code
// (-1 when a signal ended it); ok is false if it was still running.
func (p *process) wait(d time.Duration) (code int, ok bool) {
	if !p.exited() {
		select {
		case <-p.done:
		case <-time.After(d):
			return 0, false
		}
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0, true
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode(), true
	}
	return -1, true
}

// signal sends sig to the process if it still runs.
func (p *process) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop ends the process: SIGTERM, and SIGKILL if it is not gone within
// grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	if _, ok := p.wait(grace); !ok {
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// output is everything the process printed so far.
func (p *process) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *process) printTail(t *testing.T, lines int) {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Logf("%s: no output: %v", p.name, err)
		return
	}
	all := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	t.Logf("---- last %d lines of %s (%s) ----\n%s", len(all), p.name, p.logPath, bytes.Join(all, []byte("\n")))
}

// cleanEnv is the environment for child processes without callwake's own
// variables: a developer's CALLWAKE_APNS_KEY_FILE must not make a test push
// for real.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CALLWAKE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// freePort is a loopback port free for both UDP and TCP.
func freePort(t *testing.T) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// freePorts is n distinct loopback ports free for both UDP and TCP.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := testnet.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// freePortPair returns an even UDP port p with p+2 also free: SIPp binds
// its audio and video media sockets there.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		p := freePort(t) &^ 1
		a, errA := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		b, errB := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+2))
		for _, c := range []net.PacketConn{a, b} {
			if c != nil {
				c.Close()
			}
		}
		if errA == nil && errB == nil {
			return p
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}
