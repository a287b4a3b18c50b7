package sip

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// sweepInterval bounds how long expired bindings of extensions that never
// register again stay in memory.
const sweepInterval = time.Minute

// Binding is one registered contact of an extension.
type Binding struct {
	Ext string
	// Contact is the Contact URI as the phone sent it, push parameters
	// included.
	Contact sip.Uri
	// Instance is the +sip.instance of the contact without quotes or angle
	// brackets, e.g. "urn:uuid:00000000-0000-1000-8000-000a95a0e128"; ""
	// when the phone sent none.
	Instance string
	// RegID is the RFC 5626 reg-id, kept for information: callwake does
	// not implement outbound flows, so the binding is keyed by Instance.
	RegID string
	// PushTargets are the VoIP push addresses from the Contact's push
	// parameters; empty for a plain SIP binding.
	PushTargets []PushTarget
	// Transport is the lower-case transport the REGISTER came over: udp,
	// tcp, tls, ws or wss.
	Transport string
	// Source is the ip:port the REGISTER came from. Over a
	// connection-oriented transport it names the connection that reaches
	// the phone.
	Source    string
	Expires   time.Time
	CallID    string
	CSeq      uint32
	Refreshed time.Time
	// Live is set in copies returned by the Registrar: the binding came
	// over a connection-oriented transport and that connection is still
	// open, so an INVITE can be sent at once. A binding whose connection
	// dropped stays registered (its device is what gets pushed).
	Live bool
}

// ConnectionOriented reports whether the binding came over tcp, tls, ws or
// wss, where requests must reuse the phone's connection.
func (b Binding) ConnectionOriented() bool {
	switch b.Transport {
	case "tcp", "tls", "ws", "wss":
		return true
	}
	return false
}

func (b *Binding) clone() Binding {
	c := *b
	c.Contact = *b.Contact.Clone()
	c.PushTargets = slices.Clone(b.PushTargets)
	return c
}

// bindingKey identifies a binding within its extension: the instance when
// the phone sent one (so a woken app on a new address replaces its old
// binding), else the contact address without its parameters.
func bindingKey(instance string, contact sip.Uri) string {
	if instance != "" {
		return "instance " + instance
	}
	key := strings.ToLower(contact.Addr())
	if tp, ok := lookupParam(contact.UriParams, "transport"); ok {
		key += ";transport=" + strings.ToLower(tp)
	}
	return "contact " + key
}

// bindingTable holds the bindings of every extension, keyed by bindingKey.
// A Binding in the table is never modified: a REGISTER replaces it with a
// new one, and whatever leaves the registrar is a clone. So the table
// holds pointers, and copies of its maps share them: a map of Binding
// values (each over 300 bytes) cost a REGISTER kilobytes to copy.
type bindingTable struct {
	mu        sync.RWMutex
	byExt     map[string]map[string]*Binding
	lastSweep time.Time
}

func newBindingTable() *bindingTable {
	return &bindingTable{byExt: make(map[string]map[string]*Binding)}
}

// current returns a new map of the unexpired bindings of ext. The
// bindings are shared with the table: do not modify them.
func (t *bindingTable) current(ext string, now time.Time) map[string]*Binding {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[string]*Binding, len(t.byExt[ext]))
	for k, b := range t.byExt[ext] {
		if b.Expires.After(now) {
			out[k] = b
		}
	}
	return out
}

// set replaces the bindings of ext.
func (t *bindingTable) set(ext string, bindings map[string]*Binding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(bindings) == 0 {
		delete(t.byExt, ext)
		return
	}
	t.byExt[ext] = bindings
}

// sweep drops expired bindings, at most once per sweepInterval.
func (t *bindingTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) < sweepInterval {
		return
	}
	t.lastSweep = now
	for ext, bindings := range t.byExt {
		for k, b := range bindings {
			if !b.Expires.After(now) {
				delete(bindings, k)
			}
		}
		if len(bindings) == 0 {
			delete(t.byExt, ext)
		}
	}
}

// compareBindings orders bindings most recently refreshed first.
func compareBindings(a, b *Binding) int {
	if c := b.Refreshed.Compare(a.Refreshed); c != 0 {
		return c
	}
	return strings.Compare(bindingKey(a.Instance, a.Contact), bindingKey(b.Instance, b.Contact))
}
