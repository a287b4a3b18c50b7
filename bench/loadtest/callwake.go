package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/callwake/callwake/test/testnet"
)

const (
	benchDomain     = "bench.callwake"
	benchAdminToken = "bench-admin-token"
	startWithin     = 15 * time.Second
)

// buildCallwake builds ./cmd/callwake into dir: from the working tree at
// root, or, when rev is set, from that git revision (exported with git
// archive, which leaves the repository as it is). It returns the binary
// and what was built, for the report.
func buildCallwake(root, dir, rev string) (bin, version string, err error) {
	src := root
	if rev != "" {
		src = filepath.Join(dir, "callwake-src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", "", err
		}
		export := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", root, rev, src)
		if out, err := export.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("exporting callwake %s: %w\n%s", rev, err, out)
		}
		out, err := exec.Command("git", "-C", root, "rev-parse", "--short", rev).Output()
		if err != nil {
			return "", "", fmt.Errorf("git rev-parse %s: %w", rev, err)
		}
		version = "commit " + strings.TrimSpace(string(out))
	} else {
		out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
		version = "the working tree at " + strings.TrimSpace(string(out))
		if err != nil {
			version = "the working tree"
		}
	}
	bin = filepath.Join(dir, "callwake")
	build := exec.Command("go", "build", "-o", bin, "./cmd/callwake")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building callwake from %s: %w\n%s", version, err, out)
	}
	return bin, version, nil
}

// callwakeConfig is what changes between runs of callwake.
type callwakeConfig struct {
	RingTimeout time.Duration
	WakeTimeout time.Duration // 0: wait for the ring timeout
	LogLevel    string
}

// callwake is one `callwake serve` process.
type callwake struct {
	cmd        *exec.Cmd
	done       chan struct{}
	logPath    string
	sipAddr    string // udp host:port
	sipPort    int
	httpURL    string
	adminToken string
	http       *http.Client
}

// startCallwake writes a config into dir and runs callwake with it. The
// database (dir/callwake.db) outlives the process, so extensions are
// provisioned once per run of the harness.
func startCallwake(bin, dir string, push *pushEndpoint, cfg callwakeConfig) (*callwake, error) {
	ports, err := testnet.FreePorts(2)
	if err != nil {
		return nil, err
	}
	sipPort, httpPort := ports[0], ports[1]
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	caPath := filepath.Join(dir, "apns-ca.pem")
	if err := os.WriteFile(caPath, push.rootCAPEM(), 0o644); err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`sip:
  listen: ["udp:127.0.0.1:%d"]
  domain: %s
pbx:
  trusted: ["127.0.0.1/32"]
calls:
  ring_timeout: %s
  wake_timeout: %s
push:
  forward_headers: [%q]
  apns:
    key_file: %s
    key_id: %s
    team_id: %s
    endpoint: %s
    sandbox_endpoint: %s
http:
  listen: %q
  public_url: "http://%s"
  admin_token: %q
db:
  path: %s
`, sipPort, benchDomain, cfg.RingTimeout, cfg.WakeTimeout, benchSentHeader,
		push.key.Path, push.key.KeyID, push.key.TeamID, push.URL, push.URL,
		httpAddr, httpAddr, benchAdminToken, filepath.Join(dir, "callwake.db"))
	cfgPath := filepath.Join(dir, "callwake.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	level := cfg.LogLevel
	if level == "" {
		level = "info"
	}
	logPath := filepath.Join(dir, "callwake.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--log-level", level)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(cleanEnv(), "SSL_CERT_FILE="+caPath)
	// Its own process group, and killed with the harness even when a
	// test timeout skips the cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting callwake: %w", err)
	}
	c := &callwake{cmd: cmd, done: make(chan struct{}), logPath: logPath,
		sipAddr: fmt.Sprintf("127.0.0.1:%d", sipPort), sipPort: sipPort, httpURL: "http://" + httpAddr, adminToken: benchAdminToken,
		// No keep-alive: an idle connection holds a goroutine in callwake's
		// HTTP server, and how many are open would blur the goroutine counts.
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	if err := c.waitHealthy(startWithin); err != nil {
		c.kill()
		return nil, fmt.Errorf("%w\n%s", err, tail(logPath, 20))
	}
	return c, nil
}

// cleanEnv drops callwake's own variables: a developer's
// CALLWAKE_APNS_KEY_FILE must not make the bench push for real.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CALLWAKE_") && !strings.HasPrefix(kv, "SSL_CERT_") {
			env = append(env, kv)
		}
	}
	return env
}

func (c *callwake) pid() int { return c.cmd.Process.Pid }

func (c *callwake) waitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return fmt.Errorf("callwake exited at start")
		default:
		}
		res, err := c.http.Get(c.httpURL + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond) // polling a starting process
	}
	return fmt.Errorf("callwake not healthy within %s", within)
}

// stop ends callwake with SIGTERM (it drains ringing calls) and kills it
// after grace.
func (c *callwake) stop(grace time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.kill()
	}
}

func (c *callwake) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// get fetches an admin URL path.
func (c *callwake) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.httpURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.adminToken)
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %s", path, res.StatusCode, firstLine(string(body)))
	}
	return body, err
}

// metrics reads the unlabelled samples and the labelled ones of the given
// families from /metrics, as "name" or "name{labels}" → value.
func (c *callwake) metrics(ctx context.Context) (map[string]float64, error) {
	body, err := c.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// rssBytes is callwake's VmRSS.
func (c *callwake) rssBytes() (int64, error) { return procStatusKB(c.pid(), "VmRSS:") }

// gc makes callwake collect garbage (the heap profile's gc=1), so that
// heap figures compare live memory, not the collector's timing.
func (c *callwake) gc(ctx context.Context) error {
	_, err := c.get(ctx, "/debug/pprof/heap?gc=1")
	return err
}

// goroutines counts callwake's goroutines from the goroutine profile and
// returns the profile text too.
func (c *callwake) goroutines(ctx context.Context) (int, []byte, error) {
	body, err := c.get(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, nil, err
	}
	var n int
	_, err = fmt.Sscanf(string(body), "goroutine profile: total %d", &n)
	return n, body, err
}
