package upstream

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// fakePBX is a registrar on 127.0.0.1 built on sipgo: digest auth with
// per-user passwords, and hooks to answer otherwise.
type fakePBX struct {
	t        *testing.T
	uri      string            // sip:127.0.0.1:<port>
	requests chan *sip.Request // every REGISTER, as received

	mu         sync.Mutex
	passwords  map[string]string // username => password; a To user not in it gets 403
	algorithms []string          // offered challenges, e.g. {"MD5"} or {"MD5", "SHA-256"}
	proxyAuth  bool              // challenge with 407 instead of 401
	grant      int               // > 0: grant at most this many seconds
	minExpires int               // > 0: 423 below it
	hook       func(req *sip.Request) (res *sip.Response, drop bool)
	bindings   map[string]int // Contact user => granted seconds; deleted on expires 0
}

func newFakePBX(t *testing.T) *fakePBX {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("fakepbx"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePBX{
		t: t, uri: "sip:" + conn.LocalAddr().String(), requests: make(chan *sip.Request, 1000),
		passwords: map[string]string{}, algorithms: []string{"MD5"}, bindings: map[string]int{},
	}
	srv.OnRegister(p.onRegister)
	go srv.ServeUDP(conn)
	t.Cleanup(func() {
		conn.Close()
		ua.Close()
	})
	return p
}

func (p *fakePBX) set(f func(p *fakePBX)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *fakePBX) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	p.requests <- req
	if res, drop := p.answer(req); !drop {
		if err := tx.Respond(res); err != nil {
			p.t.Logf("fake PBX: responding: %v", err)
		}
	}
}

func (p *fakePBX) answer(req *sip.Request) (*sip.Response, bool) {
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		if res, drop := hook(req); res != nil || drop {
			return res, drop
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	password, known := p.passwords[req.To().Address.User]
	if !known {
		return sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil), false
	}
	expires := expiresOf(req)
	if p.minExpires > 0 && expires > 0 && expires < p.minExpires {
		res := sip.NewResponseFromRequest(req, statusIntervalTooBrief, "Interval Too Brief", nil)
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(p.minExpires)))
		return res, false
	}
	if !p.authorized(req, password) {
		return p.challenge(req), false
	}
	if p.grant > 0 && expires > p.grant {
		expires = p.grant
	}
	contact := req.Contact()
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	if expires == 0 {
		delete(p.bindings, contact.Address.User)
		return res, false
	}
	p.bindings[contact.Address.User] = expires
	granted := sip.ContactHeader{Address: contact.Address, Params: sip.NewParams()}
	granted.Params.Add("expires", strconv.Itoa(expires))
	res.AppendHeader(&granted)
	return res, false
}

func (p *fakePBX) challenge(req *sip.Request) *sip.Response {
	code, reason, header := sip.StatusUnauthorized, "Unauthorized", "WWW-Authenticate"
	if p.proxyAuth {
		code, reason, header = sip.StatusProxyAuthRequired, "Proxy Authentication Required", "Proxy-Authenticate"
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, alg := range p.algorithms {
		chal := digest.Challenge{Realm: "pbx.test", Nonce: sip.GenerateTagN(16), Algorithm: alg, QOP: []string{"auth"}}
		res.AppendHeader(sip.NewHeader(header, chal.String()))
	}
	return res
}

// authorized checks the request's digest answer the way a registrar does.
func (p *fakePBX) authorized(req *sip.Request, password string) bool {
	header := "Authorization"
	if p.proxyAuth {
		header = "Proxy-Authorization"
	}
	h := req.GetHeader(header)
	if h == nil {
		return false
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil || cred.URI != req.Recipient.String() || cred.Username != req.To().Address.User {
		p.t.Logf("fake PBX: bad credentials %q: %v", h.Value(), err)
		return false
	}
	want, err := digest.Digest(&digest.Challenge{Realm: cred.Realm, Nonce: cred.Nonce, Algorithm: cred.Algorithm, QOP: []string{"auth"}},
		digest.Options{Method: "REGISTER", URI: cred.URI, Username: cred.Username, Password: password, Cnonce: cred.Cnonce, Count: cred.Nc})
	return err == nil && want.Response == cred.Response
}

func expiresOf(req *sip.Request) int {
	if c := req.Contact(); c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	if h := req.GetHeader("Expires"); h != nil {
		n, _ := strconv.Atoi(h.Value())
		return n
	}
	return 3600
}

// next is the next REGISTER the PBX received.
func (p *fakePBX) next(t *testing.T) *sip.Request {
	t.Helper()
	select {
	case req := <-p.requests:
		return req
	case <-time.After(10 * time.Second):
		t.Fatal("fake PBX: no REGISTER arrived")
		return nil
	}
}

// none checks that no REGISTER is queued.
func (p *fakePBX) none(t *testing.T) {
	t.Helper()
	select {
	case req := <-p.requests:
		t.Fatalf("fake PBX: unexpected REGISTER:\n%s", req)
	default:
	}
}

func (p *fakePBX) binding(user string) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.bindings[user]
	return n, ok
}
