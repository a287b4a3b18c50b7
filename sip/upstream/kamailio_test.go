package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// kamailio is test/kamailio/kamailio.cfg running as the customer's PBX on a
// free 127.0.0.1 port (UDP and TCP), with its runtime files, control socket
// and log in a temp dir.
type kamailio struct {
	t       *testing.T
	opts    kamailioOptions
	dir     string
	port    int
	uri     string // sip:127.0.0.1:<port>
	ctl     string // kamcmd -s argument
	cmd     *exec.Cmd
	exited  chan struct{}
	kamcmd  string
	logPath string
}

type kamailioOptions struct {
	Users          map[string]string // auth username => password
	MinExpires     int               // 0 = 5
	MaxExpires     int               // 0 = 3600
	MinExpiresMode int               // 1 = 423 below MinExpires; 0 = grant MinExpires
	Algorithm      string            // "" = MD5
}

// startKamailio runs Kamailio for the test and stops it on cleanup. The test
// is skipped when Kamailio is not installed, unless CI=true.
func startKamailio(t *testing.T, opts kamailioOptions) *kamailio {
	t.Helper()
	bin, err := exec.LookPath("kamailio")
	if err == nil {
		_, err = exec.LookPath("kamcmd")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Kamailio is required in CI (apt-get install kamailio): %v", err)
		}
		t.Skipf("Kamailio not installed: %v", err)
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
	k := &kamailio{t: t, opts: opts, dir: t.TempDir(), kamcmd: "kamcmd"}
	k.ctl = filepath.Join(k.dir, "ctl")
	k.logPath = filepath.Join(k.dir, "kamailio.log")
	k.writeConfig()
	k.port = freePort(t)
	k.uri = fmt.Sprintf("sip:127.0.0.1:%d", k.port)
	k.start(bin)
	t.Cleanup(k.stop)
	return k
}

// writeConfig copies kamailio.cfg next to a kamailio-users.cfg holding the
// test's users.
func (k *kamailio) writeConfig() {
	cfg, err := os.ReadFile(filepath.Join("..", "..", "test", "kamailio", "kamailio.cfg"))
	if err != nil {
		k.t.Fatal(err)
	}
	var users strings.Builder
	users.WriteString("event_route[htable:mod-init] {\n")
	for _, name := range slices.Sorted(maps.Keys(k.opts.Users)) {
		fmt.Fprintf(&users, "\t$sht(users=>%s) = %q;\n", name, k.opts.Users[name])
	}
	users.WriteString("}\n")
	for name, data := range map[string][]byte{"kamailio.cfg": cfg, "kamailio-users.cfg": []byte(users.String())} {
		if err := os.WriteFile(filepath.Join(k.dir, name), data, 0o644); err != nil {
			k.t.Fatal(err)
		}
	}
}

func (k *kamailio) start(bin string) {
	k.t.Helper()
	logFile, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", k.port)
	k.cmd = exec.Command(bin, "-f", filepath.Join(k.dir, "kamailio.cfg"), "-DD", "-E", "-m", "32", "-M", "8",
		"-Y", k.dir, "-w", k.dir, "-l", "udp:"+listen, "-l", "tcp:"+listen,
		"-A", fmt.Sprintf(`CTL_SOCKET="unix:%s"`, k.ctl),
		"-A", fmt.Sprintf("MIN_EXPIRES=%d", k.opts.MinExpires),
		"-A", fmt.Sprintf("MAX_EXPIRES=%d", k.opts.MaxExpires),
		"-A", fmt.Sprintf("MIN_EXPIRES_MODE=%d", k.opts.MinExpiresMode),
		"-A", fmt.Sprintf(`AUTH_ALGORITHM="%s"`, k.opts.Algorithm))
	k.cmd.Stdout, k.cmd.Stderr = logFile, logFile
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		logFile.Close()
		k.t.Fatalf("starting kamailio: %v", err)
	}
	k.exited = make(chan struct{})
	go func() {
		k.cmd.Wait()
		logFile.Close()
		close(k.exited)
	}()
	if err := k.waitReady(10 * time.Second); err != nil {
		k.dumpLog()
		k.t.Fatalf("kamailio on %s: %v", listen, err)
	}
}

// waitReady sends OPTIONS until Kamailio answers 200.
func (k *kamailio) waitReady(limit time.Duration) error {
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
		case <-k.exited:
			return errors.New("kamailio exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: k.port})
		res, err := client.Do(ctx, req)
		cancel()
		if err == nil && res.StatusCode == sip.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 to OPTIONS within %v (last: %v %v)", limit, res, err)
		}
		select {
		case <-k.exited:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop ends Kamailio: SIGTERM, then SIGKILL after 5s.
func (k *kamailio) stop() {
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	select {
	case <-k.exited:
		return
	default:
	}
	syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.exited
	}
	if k.t.Failed() {
		k.dumpLog()
	}
}

// restart stops Kamailio and starts it again on the same port: every
// binding in its in-memory location table is lost.
func (k *kamailio) restart() {
	k.t.Helper()
	k.stop()
	k.start(k.cmd.Path)
}

func (k *kamailio) dumpLog() {
	data, err := os.ReadFile(k.logPath)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	k.t.Logf("kamailio log (last lines):\n%s", strings.Join(lines, "\n"))
}

// rpc runs kamcmd against the control socket. Arguments are passed as
// strings ("s:" prefix): kamcmd would send "1001" as a number.
func (k *kamailio) rpc(method string, args ...string) (string, error) {
	argv := []string{"-s", k.ctl, method}
	for _, a := range args {
		argv = append(argv, "s:"+a)
	}
	out, err := exec.Command(k.kamcmd, argv...).CombinedOutput()
	if err == nil && strings.HasPrefix(string(out), "error:") {
		err = errors.New("RPC error")
	}
	if err != nil {
		return string(out), fmt.Errorf("kamcmd %s %s: %w: %s", method, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// contacts are the Contact URIs bound to an AoR (the auth username) in
// Kamailio's location table.
func (k *kamailio) contacts(aor string) []string {
	k.t.Helper()
	out, err := k.rpc("ul.lookup", "location", aor)
	if err != nil {
		if strings.Contains(out, "not found") {
			return nil
		}
		k.t.Fatal(err)
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

// waitContacts polls the location table until want(contacts) holds.
func (k *kamailio) waitContacts(aor string, limit time.Duration, want func([]string) bool) []string {
	k.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c := k.contacts(aor)
		if want(c) {
			return c
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: contacts %v never matched within %v", aor, c, limit)
		}
		time.Sleep(100 * time.Millisecond) // polling another process: nothing to wait on
	}
}

// registers counts the REGISTERs Kamailio received for an AoR user.
func (k *kamailio) registers(user string) int {
	k.t.Helper()
	out, err := k.rpc("htable.get", "regcount", user)
	if err != nil {
		if strings.Contains(out, "not found") {
			return 0
		}
		k.t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "value:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	k.t.Fatalf("htable.get regcount %s: %q", user, out)
	return 0
}

// freePort is a port free on 127.0.0.1 for both UDP and TCP.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port for UDP and TCP")
	return 0
}
