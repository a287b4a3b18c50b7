// Package config loads and validates callwake's YAML configuration.
//
// Like Prometheus: the defaults are exported, decoding is strict (an unknown
// key is an error) and every error names the file and line it comes from.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"gopkg.in/yaml.v3"
)

// Config is the whole callwake configuration.
type Config struct {
	SIP     SIP     `yaml:"sip"`
	PBX     PBX     `yaml:"pbx"`
	Calls   Calls   `yaml:"calls"`
	Devices Devices `yaml:"devices"`
	Push    Push    `yaml:"push"`
	HTTP    HTTP    `yaml:"http"`
	DB      DB      `yaml:"db"`

	// File is the path the config was loaded from ("" for defaults).
	File string `yaml:"-"`
}

// SIP is the SIP listener and the phone-facing registrar.
type SIP struct {
	Listen     []Listen `yaml:"listen"`
	Domain     string   `yaml:"domain"`
	PublicHost string   `yaml:"public_host"`
	// TLSCertFile and TLSKeyFile serve the tls: and wss: listeners.
	TLSCertFile File `yaml:"tls_cert_file"`
	TLSKeyFile  File `yaml:"tls_key_file"`
	// DigestAlgorithms are challenged to phones, in order.
	DigestAlgorithms []string `yaml:"digest_algorithms"`
}

// PBX is the upstream PBX: register mode and trunk mode.
type PBX struct {
	Registrar       string   `yaml:"registrar"`
	RegisterExpires Duration `yaml:"register_expires"`
	Trusted         []CIDR   `yaml:"trusted"`
	// TrunkUsername and TrunkPassword, when set, challenge trunk INVITEs from
	// sources outside Trusted instead of refusing them.
	TrunkUsername string `yaml:"trunk_username"`
	TrunkPassword Secret `yaml:"trunk_password"`
}

// Calls holds the timers and policies of a call.
type Calls struct {
	RingTimeout   Duration `yaml:"ring_timeout"`
	WakeTimeout   Duration `yaml:"wake_timeout"`
	TimeoutStatus int      `yaml:"timeout_status"`
	BusyOnBusy    bool     `yaml:"busy_on_busy"`
}

// Devices bounds the devices of an extension.
type Devices struct {
	MaxPerExtension int `yaml:"max_per_extension"`
}

// Push configures the push providers.
type Push struct {
	ForwardHeaders []string `yaml:"forward_headers"`
	APNs           APNs     `yaml:"apns"`
	FCM            FCM      `yaml:"fcm"`
}

// APNs is Apple Push Notification service: token (.p8) or certificate auth.
type APNs struct {
	KeyFile         File   `yaml:"key_file"`
	KeyID           string `yaml:"key_id"`
	TeamID          string `yaml:"team_id"`
	CertFile        File   `yaml:"cert_file"`
	CertPassword    Secret `yaml:"cert_password"`
	Endpoint        string `yaml:"endpoint"`
	SandboxEndpoint string `yaml:"sandbox_endpoint"`
}

// Enabled reports whether APNs credentials are configured.
func (a APNs) Enabled() bool { return a.KeyFile.Path != "" || a.CertFile.Path != "" }

// FCM is Firebase Cloud Messaging (HTTP v1).
type FCM struct {
	CredentialsFile File   `yaml:"credentials_file"`
	ProjectID       string `yaml:"project_id"`
	Endpoint        string `yaml:"endpoint"`
}

// Enabled reports whether FCM credentials are configured.
func (f FCM) Enabled() bool { return f.CredentialsFile.Path != "" }

// HTTP is the provisioning API, decline URLs, health and metrics.
type HTTP struct {
	Listen     string `yaml:"listen"`
	PublicURL  string `yaml:"public_url"`
	AdminToken Secret `yaml:"admin_token"`
}

// DB is the embedded SQLite store.
type DB struct {
	Path string `yaml:"path"`
}

// Default provider endpoints.
const (
	DefaultAPNsEndpoint        = "https://api.push.apple.com"
	DefaultAPNsSandboxEndpoint = "https://api.sandbox.push.apple.com"
	DefaultFCMEndpoint         = "https://fcm.googleapis.com/v1"
)

// Default returns the configuration used for every key a file leaves out.
func Default() Config {
	return Config{
		SIP: SIP{Listen: []Listen{{"udp", "0.0.0.0:5060"}, {"tcp", "0.0.0.0:5060"}},
			DigestAlgorithms: []string{"SHA-256", "MD5"}},
		PBX: PBX{RegisterExpires: Duration(300 * time.Second)},
		Calls: Calls{
			RingTimeout:   Duration(45 * time.Second),
			WakeTimeout:   Duration(20 * time.Second),
			TimeoutStatus: 487,
		},
		Devices: Devices{MaxPerExtension: 5},
		Push: Push{
			APNs: APNs{Endpoint: DefaultAPNsEndpoint, SandboxEndpoint: DefaultAPNsSandboxEndpoint},
			FCM:  FCM{Endpoint: DefaultFCMEndpoint},
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
		DB:   DB{Path: "callwake.db"},
	}
}

// EnvSecrets are the environment variables that override secrets in the file,
// so that they need not be written to disk.
var EnvSecrets = map[string]func(*Config, string){
	"CALLWAKE_ADMIN_TOKEN":        func(c *Config, v string) { c.HTTP.AdminToken = Secret(v) },
	"CALLWAKE_TRUNK_PASSWORD":     func(c *Config, v string) { c.PBX.TrunkPassword = Secret(v) },
	"CALLWAKE_APNS_CERT_PASSWORD": func(c *Config, v string) { c.Push.APNs.CertPassword = Secret(v) },
	"CALLWAKE_APNS_KEY_FILE":      func(c *Config, v string) { c.Push.APNs.KeyFile = File{Path: v} },
	"CALLWAKE_FCM_CREDENTIALS_FILE": func(c *Config, v string) {
		c.Push.FCM.CredentialsFile = File{Path: v}
	},
}

// LoadFile reads, decodes and validates the file at path, then applies the
// environment's secrets (see EnvSecrets).
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Load(path, data, os.LookupEnv)
}

// Load decodes and validates data; name is the file name used in errors.
// lookupEnv may be nil to ignore the environment.
func Load(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	cfg.File = name

	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, fileError(name, err)
	}
	if root.Kind != 0 {
		// Decode again through a KnownFields decoder: yaml.Node.Decode has
		// no strict mode.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fileError(name, err)
		}
	}
	// The default wake timeout must not make a short ring timeout invalid.
	if cfg.Calls.WakeTimeout > cfg.Calls.RingTimeout && !isSet(&root, "calls.wake_timeout") {
		cfg.Calls.WakeTimeout = cfg.Calls.RingTimeout
	}
	if lookupEnv != nil {
		for key, set := range EnvSecrets {
			if v, ok := lookupEnv(key); ok && v != "" {
				set(&cfg, v)
			}
		}
	}
	if errs := cfg.validate(); len(errs) > 0 {
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			line := e.line
			if line == 0 {
				line, _ = lineOf(&root, e.path)
			}
			msgs = append(msgs, positioned(name, line, e.path, e.msg))
		}
		return nil, errors.New(strings.Join(msgs, "\n"))
	}
	return &cfg, nil
}

// Realm is the registrar domain and digest realm for phones.
func (c *Config) Realm() string {
	if c.SIP.Domain != "" {
		return c.SIP.Domain
	}
	if c.SIP.PublicHost != "" {
		return c.SIP.PublicHost
	}
	return "callwake"
}

// String renders the effective configuration as YAML with secrets redacted.
func (c *Config) String() string {
	out, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("<config: %v>", err)
	}
	return string(out)
}

type fieldError struct {
	path string // dotted key, e.g. calls.timeout_status
	line int    // when known from the node itself
	msg  string
}

func (c *Config) validate() []fieldError {
	var errs []fieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldError{path: path, msg: fmt.Sprintf(format, args...)})
	}
	missing := func(path string, f File) {
		if f.Path == "" {
			return
		}
		if _, err := os.Stat(f.Path); err != nil {
			errs = append(errs, fieldError{path: path, line: f.line, msg: fmt.Sprintf("file %q: %v", f.Path, unwrapPathError(err))})
		}
	}

	if len(c.SIP.Listen) == 0 {
		add("sip.listen", "at least one listener is needed, such as udp:0.0.0.0:5060")
	}
	needTLS := false
	for _, l := range c.SIP.Listen {
		needTLS = needTLS || l.Transport == "tls" || l.Transport == "wss"
	}
	if needTLS && (c.SIP.TLSCertFile.Path == "" || c.SIP.TLSKeyFile.Path == "") {
		add("sip.listen", "tls: and wss: listeners need sip.tls_cert_file and sip.tls_key_file")
	}
	missing("sip.tls_cert_file", c.SIP.TLSCertFile)
	missing("sip.tls_key_file", c.SIP.TLSKeyFile)
	if len(c.SIP.DigestAlgorithms) == 0 {
		add("sip.digest_algorithms", "name at least one of SHA-256, MD5")
	}
	for _, alg := range c.SIP.DigestAlgorithms {
		if alg != "SHA-256" && alg != "MD5" {
			add("sip.digest_algorithms", "%q is not SHA-256 or MD5", alg)
		}
	}
	if c.SIP.Domain != "" && !validHostname(c.SIP.Domain) && net.ParseIP(c.SIP.Domain) == nil {
		add("sip.domain", "%q is not a domain name", c.SIP.Domain)
	}

	if c.PBX.Registrar != "" {
		var u sipgo.Uri
		if !strings.HasPrefix(c.PBX.Registrar, "sip:") && !strings.HasPrefix(c.PBX.Registrar, "sips:") {
			add("pbx.registrar", "%q is not a SIP URI: write it like sip:pbx.example.com:5060", c.PBX.Registrar)
		} else if err := sipgo.ParseUri(c.PBX.Registrar, &u); err != nil || u.Host == "" {
			add("pbx.registrar", "%q is not a SIP URI: write it like sip:pbx.example.com:5060", c.PBX.Registrar)
		}
	}
	if c.PBX.RegisterExpires.Std() < 30*time.Second {
		add("pbx.register_expires", "must be at least 30s, got %s", c.PBX.RegisterExpires.Std())
	}
	if (c.PBX.TrunkUsername == "") != (c.PBX.TrunkPassword == "") {
		add("pbx.trunk_username", "trunk_username and trunk_password go together")
	}

	if c.Calls.RingTimeout.Std() <= 0 {
		add("calls.ring_timeout", "must be more than 0")
	}
	if c.Calls.WakeTimeout.Std() > c.Calls.RingTimeout.Std() {
		add("calls.wake_timeout", "%s is longer than calls.ring_timeout (%s): use 0 to wait for the ring timeout",
			c.Calls.WakeTimeout.Std(), c.Calls.RingTimeout.Std())
	}
	if s := c.Calls.TimeoutStatus; s < 400 || s > 699 {
		add("calls.timeout_status", "%d is not a SIP failure status (400-699)", s)
	}

	if n := c.Devices.MaxPerExtension; n < 1 || n > 100 {
		add("devices.max_per_extension", "%d is out of range 1-100", n)
	}

	for _, h := range c.Push.ForwardHeaders {
		if !headerName.MatchString(h) {
			add("push.forward_headers", "%q is not a SIP header name", h)
		}
	}
	a := c.Push.APNs
	missing("push.apns.key_file", a.KeyFile)
	missing("push.apns.cert_file", a.CertFile)
	if a.KeyFile.Path != "" && a.CertFile.Path != "" {
		add("push.apns.cert_file", "set either key_file (token auth) or cert_file (certificate auth), not both")
	}
	if a.KeyFile.Path != "" && (a.KeyID == "" || a.TeamID == "") {
		add("push.apns.key_file", "token auth needs push.apns.key_id and push.apns.team_id too")
	}
	checkURL := func(path, v string, https bool) {
		if v == "" {
			return
		}
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || (u.Scheme != "https" && (https || u.Scheme != "http")) {
			want := "an http(s) URL"
			if https {
				want = "an https URL"
			}
			add(path, "%q is not %s", v, want)
		}
	}
	checkURL("push.apns.endpoint", a.Endpoint, true)
	checkURL("push.apns.sandbox_endpoint", a.SandboxEndpoint, true)
	missing("push.fcm.credentials_file", c.Push.FCM.CredentialsFile)
	checkURL("push.fcm.endpoint", c.Push.FCM.Endpoint, false)

	if _, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil || checkPort(port) != nil {
		add("http.listen", "%q is not host:port", c.HTTP.Listen)
	}
	checkURL("http.public_url", c.HTTP.PublicURL, false)

	if c.DB.Path == "" {
		add("db.path", "must name the SQLite file")
	}
	return errs
}

var headerName = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_` + "`" + `|~-]+$`)

// lineOf finds the line of a dotted key in the document; exact is false when
// only a parent key was found (line is then the parent's, or 0).
func lineOf(root *yaml.Node, path string) (line int, exact bool) {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, key := range strings.Split(path, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return line, false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line = n.Content[i].Line
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return line, false
		}
		n = next
	}
	return line, true
}

func isSet(root *yaml.Node, path string) bool {
	_, exact := lineOf(root, path)
	return exact
}

var (
	yamlLinePrefix = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownField   = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
)

// fileError turns a yaml or position error into "file:line: message" lines.
func fileError(name string, err error) error {
	var te *yaml.TypeError
	var raw []string
	if errors.As(err, &te) {
		raw = te.Errors
	} else {
		raw = []string{err.Error()}
	}
	msgs := make([]string, 0, len(raw))
	for _, r := range raw {
		m := yamlLinePrefix.FindStringSubmatch(r)
		if m == nil {
			msgs = append(msgs, fmt.Sprintf("%s: %s", name, strings.TrimPrefix(r, "yaml: ")))
			continue
		}
		msg := m[2]
		if u := unknownField.FindStringSubmatch(msg); u != nil {
			msg = fmt.Sprintf("unknown key %q", u[1])
		}
		msgs = append(msgs, fmt.Sprintf("%s:%s: %s", name, m[1], msg))
	}
	return errors.New(strings.Join(msgs, "\n"))
}

func positioned(name string, line int, path, msg string) string {
	where := name
	if line > 0 {
		where = fmt.Sprintf("%s:%d", name, line)
	}
	if path != "" {
		return fmt.Sprintf("%s: %s: %s", where, path, msg)
	}
	return fmt.Sprintf("%s: %s", where, msg)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
