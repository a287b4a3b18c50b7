package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// nodeError reports a bad value as a yaml.TypeError, so that the decoder
// collects every bad value of the file instead of stopping at the first.
func nodeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, fmt.Sprintf(format, args...))}}
}

// Duration is a time.Duration written as a Go duration string ("45s", "1m30s").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return nodeError(n, "expected a duration such as 45s, got %q", n.Value)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return nodeError(n, "bad duration %q: use a number with a unit, such as 45s or 2m", s)
	}
	if v < 0 {
		return nodeError(n, "duration %q must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// CIDR is an IP network; a bare address is taken as a single-host network.
type CIDR struct{ netip.Prefix }

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *CIDR) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return nodeError(n, "expected a CIDR such as 10.0.0.0/8, got %q", n.Value)
	}
	p, err := ParseCIDR(s)
	if err != nil {
		return nodeError(n, "%v", err)
	}
	c.Prefix = p
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (c CIDR) MarshalYAML() (any, error) { return c.Prefix.String(), nil }

// ParseCIDR parses "10.0.0.0/8", "::1/128" or a bare address.
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad CIDR %q: want an address/prefix such as 192.0.2.0/24", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %q: want an address/prefix such as 192.0.2.0/24", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Transports that sip.listen accepts.
var Transports = []string{"udp", "tcp", "tls", "ws", "wss"}

// Listen is one SIP listener: "udp:0.0.0.0:5060".
type Listen struct {
	Transport string
	Addr      string // host:port
}

func (l Listen) String() string { return l.Transport + ":" + l.Addr }

// ParseListen parses "transport:host:port" (host may be [v6]).
func ParseListen(s string) (Listen, error) {
	transport, addr, ok := strings.Cut(s, ":")
	if !ok {
		return Listen{}, fmt.Errorf("bad listen %q: want transport:host:port such as udp:0.0.0.0:5060", s)
	}
	transport = strings.ToLower(transport)
	known := false
	for _, t := range Transports {
		known = known || t == transport
	}
	if !known {
		return Listen{}, fmt.Errorf("bad listen %q: transport %q is not one of %s", s, transport, strings.Join(Transports, ", "))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Listen{}, fmt.Errorf("bad listen %q: %v", s, err)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
			return Listen{}, fmt.Errorf("bad listen %q: %q is not an address or host name", s, host)
		}
	}
	if err := checkPort(port); err != nil {
		return Listen{}, fmt.Errorf("bad listen %q: %v", s, err)
	}
	return Listen{Transport: transport, Addr: addr}, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *Listen) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return nodeError(n, "expected transport:host:port, got %q", n.Value)
	}
	v, err := ParseListen(s)
	if err != nil {
		return nodeError(n, "%v", err)
	}
	*l = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (l Listen) MarshalYAML() (any, error) { return l.String(), nil }

// Secret is a string that is redacted when the config is printed.
type Secret string

// Redacted is what a set secret prints as.
const Redacted = "<secret>"

// MarshalYAML implements yaml.Marshaler.
func (s Secret) MarshalYAML() (any, error) {
	if s == "" {
		return "", nil
	}
	return Redacted, nil
}

// File is the path of a file that must exist when set. The line it was set
// on is kept so that a missing file is reported where it was named.
type File struct {
	Path string
	line int
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (f *File) UnmarshalYAML(n *yaml.Node) error {
	if err := n.Decode(&f.Path); err != nil {
		return nodeError(n, "expected a file path, got %q", n.Value)
	}
	f.line = n.Line
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (f File) MarshalYAML() (any, error) { return f.Path, nil }

func checkPort(port string) error {
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 0 || p > 65535 || fmt.Sprint(p) != port {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
