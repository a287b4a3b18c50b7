// Package interop runs callwake's call flows against real SIP peers that
// nobody here wrote: SIPp as the PBX (scenarios in test/sipp), baresip as
// the woken phone, and, for register mode, Kamailio (test/kamailio) as the
// PBX that callwake registers to, with SIPp as the caller behind it. Each
// test starts the real callwake binary, provisions it over its HTTP API as a
// user would, and checks the outcome in the call log, the registration
// state and the PBX's location table, through the API and the CLI.
//
// A peer that is not installed skips its tests, unless CI=true, where a
// missing peer fails with the apt-get line that installs it.
package interop

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// callwakeBin is the binary TestMain builds once for every test.
var callwakeBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // every test skips: see requirePeer
	}
	dir, err := os.MkdirTemp("", "callwake-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := buildCallwake(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	callwakeBin = bin
	return m.Run()
}

// buildCallwake builds ./cmd/callwake from the module root into dir.
func buildCallwake(dir string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root with go list -m: %w", err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "callwake")
	build := exec.Command("go", "build", "-o", bin, "./cmd/callwake")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building callwake in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// requirePeer finds a peer's binary, or skips the test when it is missing;
// under CI=true a missing peer is an error that says how to install it.
// Every test calls it first.
func requirePeer(t *testing.T, binary, aptPackage string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("interop tests run callwake and real SIP peers: skipped with -short")
	}
	path, err := exec.LookPath(binary)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found in PATH: install it with `apt-get install -y %s` (CI=true: interop peers are required)", binary, aptPackage)
	}
	t.Skipf("%s not installed (apt-get install -y %s)", binary, aptPackage)
	return ""
}

// sippScenario is the path of a scenario in test/sipp.
func sippScenario(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "sipp", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("SIPp scenario: %v", err)
	}
	return path
}
