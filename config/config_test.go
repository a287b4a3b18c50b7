package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no good fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Load(f, data, nil); err != nil {
				t.Fatalf("Load: %v", err)
			}
		})
	}
}

func TestFullConfigValues(t *testing.T) {
	data, _ := os.ReadFile("testdata/full.good.yml")
	c, err := Load("full.good.yml", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Calls.RingTimeout.Std(); got != 30*time.Second {
		t.Errorf("ring_timeout = %v", got)
	}
	if c.Calls.WakeTimeout != 0 || c.Calls.TimeoutStatus != 480 || !c.Calls.BusyOnBusy {
		t.Errorf("calls = %+v", c.Calls)
	}
	if len(c.PBX.Trusted) != 3 || c.PBX.Trusted[1].String() != "192.0.2.1/32" {
		t.Errorf("trusted = %v", c.PBX.Trusted)
	}
	if c.SIP.Listen[1].Transport != "tcp" || c.SIP.Listen[1].Addr != "[::]:5060" {
		t.Errorf("listen = %v", c.SIP.Listen)
	}
	if c.Realm() != "pbx.example.com" || c.Devices.MaxPerExtension != 3 {
		t.Errorf("realm %q, max %d", c.Realm(), c.Devices.MaxPerExtension)
	}
}

func TestDefaultsApplyToEmptyFile(t *testing.T) {
	c, err := Load("empty.yml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	if c.Calls != def.Calls || c.Devices != def.Devices || c.HTTP != def.HTTP || c.DB != def.DB {
		t.Errorf("empty file did not give defaults: %+v", c)
	}
	if c.Push.APNs.Endpoint != DefaultAPNsEndpoint || c.Push.FCM.Endpoint != DefaultFCMEndpoint {
		t.Errorf("endpoints = %q %q", c.Push.APNs.Endpoint, c.Push.FCM.Endpoint)
	}
}

// Each bad fixture must fail with the file name, the line and what is wrong.
func TestBadConfigs(t *testing.T) {
	want := map[string][]string{
		"unknown_key.bad.yml":     {"unknown_key.bad.yml:3: ", `unknown key "domian"`},
		"bad_duration.bad.yml":    {"bad_duration.bad.yml:2: ", `bad duration "45 seconds"`},
		"bad_cidr.bad.yml":        {"bad_cidr.bad.yml:4: ", `bad CIDR "10.0.0.300/8"`},
		"bad_listen.bad.yml":      {"bad_listen.bad.yml:2: ", `transport "sctp" is not one of`},
		"bad_listen_port.bad.yml": {"bad_listen_port.bad.yml:2: ", `bad port "70000"`},
		"missing_file.bad.yml":    {"missing_file.bad.yml:5: ", "push.apns.key_file", "does-not-exist.p8", "no such file"},
		"timeout_status.bad.yml":  {"timeout_status.bad.yml:3: ", "calls.timeout_status", "200 is not a SIP failure status"},
		"wake_longer.bad.yml":     {"wake_longer.bad.yml:3: ", "calls.wake_timeout", "longer than calls.ring_timeout"},
		"apns_both.bad.yml":       {"apns_both.bad.yml:6: ", "either key_file", "not both"},
		"registrar.bad.yml":       {"registrar.bad.yml:2: ", "pbx.registrar", "is not a SIP URI"},
		"syntax.bad.yml":          {"syntax.bad.yml:", "did not find expected"},
		"tls_no_cert.bad.yml":     {"tls_no_cert.bad.yml:2: ", "need sip.tls_cert_file"},
		"max_devices.bad.yml":     {"max_devices.bad.yml:2: ", "devices.max_per_extension", "out of range"},
		"digest.bad.yml":          {"digest.bad.yml:2: ", "sip.digest_algorithms", `"SHA-512" is not SHA-256 or MD5`},
	}
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) != len(want) {
		t.Errorf("%d bad fixtures but %d expectations", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(name, data, nil)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range want[name] {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEveryBadValueIsReported(t *testing.T) {
	data := []byte("calls:\n  ring_timeout: soon\n  wake_timeout: later\npbx:\n  trusted: [nope]\n")
	_, err := Load("multi.yml", data, nil)
	if err == nil {
		t.Fatal("want error")
	}
	for _, w := range []string{"multi.yml:2:", "multi.yml:3:", "multi.yml:5:"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

func TestSecretsFromEnvironmentAndRedaction(t *testing.T) {
	env := map[string]string{"CALLWAKE_ADMIN_TOKEN": "from-env", "CALLWAKE_TRUNK_PASSWORD": "pw"}
	data := []byte("pbx:\n  trunk_username: trunk\nhttp:\n  admin_token: from-file\n")
	c, err := Load("env.yml", data, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.AdminToken != "from-env" || c.PBX.TrunkPassword != "pw" {
		t.Errorf("env secrets not applied: %q %q", c.HTTP.AdminToken, c.PBX.TrunkPassword)
	}
	out := c.String()
	if strings.Contains(out, "from-env") || strings.Contains(out, "pw\n") {
		t.Errorf("secret printed:\n%s", out)
	}
	if !strings.Contains(out, "admin_token: "+Redacted) {
		t.Errorf("redacted token missing:\n%s", out)
	}
}

// The printed config must load again to the same values: `config check`
// output is a valid config.
func TestStringRoundTrips(t *testing.T) {
	data, _ := os.ReadFile("testdata/full.good.yml")
	c, err := Load("full.good.yml", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Load("printed.yml", []byte(c.String()), nil)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, c)
	}
	if c2.Calls != c.Calls || c2.SIP.Listen[2] != c.SIP.Listen[2] || c2.PBX.Trusted[0] != c.PBX.Trusted[0] {
		t.Errorf("round trip changed values")
	}
}

func TestExampleConfigLoads(t *testing.T) {
	if _, err := LoadFile("../configs/callwake.yaml"); err != nil {
		t.Fatalf("configs/callwake.yaml: %v", err)
	}
}

func TestParseListen(t *testing.T) {
	for _, s := range []string{"udp:0.0.0.0:5060", "tcp:[::1]:5060", "wss:localhost:443", "TLS:127.0.0.1:5061"} {
		if _, err := ParseListen(s); err != nil {
			t.Errorf("ParseListen(%q): %v", s, err)
		}
	}
	for _, s := range []string{"udp", "udp:5060", "udp:0.0.0.0:", "udp:bad host:5060", "ws:1.2.3.4:-1"} {
		if _, err := ParseListen(s); err == nil {
			t.Errorf("ParseListen(%q) succeeded", s)
		}
	}
}

func FuzzLoad(f *testing.F) {
	for _, name := range []string{"full.good.yml", "unknown_key.bad.yml", "bad_cidr.bad.yml"} {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Load("fuzz.yml", data, nil)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}
