// Package kamailio runs kamailio.cfg (next to this file) as the customer's
// PBX for tests: a registrar with digest auth and a proxy that relays
// INVITEs to registered contacts, on a free loopback port, stopped when the
// test ends.
//
//	pbx := kamailio.Start(t, kamailio.Options{MaxExpires: 10, Users: map[string]string{"1001": "pw"}})
//	// point pbx.registrar at pbx.URI(), then:
//	pbx.WaitContacts("1001", 3*time.Second, kamailio.Bound)
//
// Start skips the test when kamailio or kamcmd is not installed, unless
// CI=true, where it fails. See README.md.
package kamailio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callwake/callwake/test/testnet"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Options configure the Kamailio of a test.
type Options struct {
	Users          map[string]string // auth username (= AoR user) => password
	MinExpires     int               // registrar min_expires; 0 = 5
	MaxExpires     int               // registrar max_expires and default_expires; 0 = 3600
	MinExpiresMode int               // 1 = 423 below MinExpires; 0 = quietly grant MinExpires
	Algorithm      string            // digest algorithm: "MD5" (default) or "SHA-256"
}

// Server is a running Kamailio, listening on UDP and TCP on one
// 127.0.0.1 port, its runtime files, control socket and log in a temp dir.
type Server struct {
	tb      testing.TB
	opts    Options
	bin     string
	kamcmd  string
	dir     string
	port    int
	ctl     string // kamcmd -s argument
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start runs Kamailio for the test and stops it on cleanup (its log's tail
// is printed if the test failed). The test is skipped when kamailio or
// kamcmd is missing, unless CI=true.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := exec.LookPath("kamailio")
	var kamcmd string
	if err == nil {
		kamcmd, err = exec.LookPath("kamcmd")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("Kamailio is required in CI (apt-get install -y kamailio): %v", err)
		}
		tb.Skipf("Kamailio not installed (apt-get install -y kamailio): %v", err)
	}
	if opts.MinExpires == 0 {
		opts.MinExpires = 5
	}
	if opts.MaxExpires == 0 {
		opts.MaxExpires = 3600
	}
	if opts.Algorithm == "" {
		opts.Algorithm = "MD5"
	}
	s := &Server{tb: tb, opts: opts, bin: bin, kamcmd: kamcmd, dir: tb.TempDir()}
	s.ctl = filepath.Join(s.dir, "ctl")
	s.logPath = filepath.Join(s.dir, "kamailio.log")
	s.writeConfig()
	s.port = freePort(tb)
	s.start()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			s.dumpLog()
		}
	})
	return s
}

// Port is the UDP and TCP port Kamailio listens on, at 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Addr is Kamailio's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URI is Kamailio's SIP URI, sip:127.0.0.1:<port>: a registrar.
func (s *Server) URI() string { return "sip:" + s.Addr() }

// LogPath is the file Kamailio logs to.
func (s *Server) LogPath() string { return s.logPath }

// configDir is the directory of this file, which holds kamailio.cfg.
func configDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("runtime.Caller: no source path for the kamailio package")
	}
	return filepath.Dir(file), nil
}

// writeConfig copies kamailio.cfg into the temp dir next to a
// kamailio-users.cfg holding the test's users.
func (s *Server) writeConfig() {
	s.tb.Helper()
	dir, err := configDir()
	if err != nil {
		s.tb.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "kamailio.cfg"))
	if err != nil {
		s.tb.Fatalf("reading Kamailio's config: %v", err)
	}
	var users strings.Builder
	users.WriteString("event_route[htable:mod-init] {\n")
	for _, name := range slices.Sorted(maps.Keys(s.opts.Users)) {
		fmt.Fprintf(&users, "\t$sht(users=>%s) = %q;\n", name, s.opts.Users[name])
	}
	users.WriteString("}\n")
	for name, data := range map[string][]byte{"kamailio.cfg": cfg, "kamailio-users.cfg": []byte(users.String())} {
		if err := os.WriteFile(filepath.Join(s.dir, name), data, 0o644); err != nil {
			s.tb.Fatal(err)
		}
	}
}

func (s *Server) start() {
	s.tb.Helper()
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.tb.Fatal(err)
	}
	listen := s.Addr()
	s.cmd = exec.Command(s.bin, "-f", filepath.Join(s.dir, "kamailio.cfg"), "-DD", "-E", "-m", "32", "-M", "8",
		"-Y", s.dir, "-w", s.dir, "-l", "udp:"+listen, "-l", "tcp:"+listen,
		"-A", fmt.Sprintf(`CTL_SOCKET="unix:%s"`, s.ctl),
		"-A", fmt.Sprintf("MIN_EXPIRES=%d", s.opts.MinExpires),
		"-A", fmt.Sprintf("MAX_EXPIRES=%d", s.opts.MaxExpires),
		"-A", fmt.Sprintf("MIN_EXPIRES_MODE=%d", s.opts.MinExpiresMode),
		"-A", fmt.Sprintf(`AUTH_ALGORITHM="%s"`, s.opts.Algorithm))
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Its own process group: Kamailio forks workers, and Stop signals them
	// all.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		s.tb.Fatalf("starting kamailio: %v", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	cmd := s.cmd
	go func() {
		cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	if err := s.waitReady(10 * time.Second); err != nil {
		s.dumpLog()
		s.tb.Fatalf("kamailio on %s: %v", listen, err)
	}
}

// waitReady sends OPTIONS until Kamailio answers 200.
func (s *Server) waitReady(limit time.Duration) error {
	ua, err := sipgo.NewUA()
	if err != nil {
		return err
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-s.exited:
			return errors.New("kamailio exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: s.port})
		res, err := client.Do(ctx, req)
		cancel()
		if err == nil && res.StatusCode == sip.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 to OPTIONS within %v (last: %v %v)", limit, res, err)
		}
		select {
		case <-s.exited:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends Kamailio (SIGTERM to its process group, SIGKILL after 5s);
// every binding in its in-memory location table is lost. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Restart stops Kamailio and starts it again on the same port: the PBX
// rebooted, and every binding is lost.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

func (s *Server) dumpLog() {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	s.tb.Logf("kamailio log (last lines of %s):\n%s", s.logPath, strings.Join(lines, "\n"))
}

// RPC runs kamcmd against the control socket. Arguments are passed as
// strings ("s:" prefix): kamcmd would send "1001" as a number, and
// ul.lookup would then fail.
func (s *Server) RPC(method string, args ...string) (string, error) {
	argv := []string{"-s", s.ctl, method}
	for _, a := range args {
		argv = append(argv, "s:"+a)
	}
	out, err := exec.Command(s.kamcmd, argv...).CombinedOutput()
	if err == nil && strings.HasPrefix(string(out), "error:") {
		err = errors.New("RPC error")
	}
	if err != nil {
		return string(out), fmt.Errorf("kamcmd %s %s: %w: %s", method, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Contacts are the Contact URIs bound to an AoR (its user: the auth
// username) in Kamailio's location table.
func (s *Server) Contacts(aor string) []string {
	s.tb.Helper()
	out, err := s.RPC("ul.lookup", "location", aor)
	if err != nil {
		if strings.Contains(out, "not found") {
			return nil
		}
		s.tb.Fatal(err)
	}
	var contacts []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Address:"); ok {
			contacts = append(contacts, strings.TrimSpace(v))
		}
	}
	return contacts
}

// Bound and Unbound are conditions for WaitContacts: one contact, none.
func Bound(c []string) bool   { return len(c) == 1 }
func Unbound(c []string) bool { return len(c) == 0 }

// WaitContacts polls the location table until want(contacts of aor) holds,
// and returns those contacts; the test fails when it does not within limit.
func (s *Server) WaitContacts(aor string, limit time.Duration, want func([]string) bool) []string {
	s.tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		c := s.Contacts(aor)
		if want(c) {
			return c
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("Kamailio location of %s: contacts %v never matched within %v", aor, c, limit)
		}
		time.Sleep(100 * time.Millisecond) // polling another process: nothing to wait on
	}
}

// Registers counts the REGISTERs Kamailio received for an AoR user since
// it (re)started.
func (s *Server) Registers(user string) int {
	s.tb.Helper()
	out, err := s.RPC("htable.get", "regcount", user)
	if err != nil {
		if strings.Contains(out, "not found") {
			return 0
		}
		s.tb.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "value:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				s.tb.Fatalf("htable.get regcount %s: %q", user, out)
			}
			return n
		}
	}
	s.tb.Fatalf("htable.get regcount %s: %q", user, out)
	return 0
}

// freePort is a port free on 127.0.0.1 for both UDP and TCP.
func freePort(tb testing.TB) int {
	tb.Helper()
	port, err := testnet.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}
