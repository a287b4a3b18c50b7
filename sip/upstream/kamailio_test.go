package upstream

import (
	"net"
	"testing"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/callwake/callwake/test/kamailio"
)

// Fixtures for the tests against Kamailio (kamailio_upstream_test.go); the
// Kamailio itself comes from test/kamailio.

// callwakeUA stands in for callwake's SIP service: a UDP listener whose
// address is the Contact, and the client the Manager sends with. INVITEs
// that reach it are answered 486 and their Request-URI user is reported.
type callwakeUA struct {
	client  *sipgo.Client
	port    int
	invites chan string
}

func newCallwakeUA(t *testing.T) *callwakeUA {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("callwake"))
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
	c := &callwakeUA{port: conn.LocalAddr().(*net.UDPAddr).Port, invites: make(chan string, 10)}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		c.invites <- req.Recipient.User
		tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBusyHere, "Busy Here", nil))
	})
	go srv.ServeUDP(conn)
	c.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ua.Close()
	})
	return c
}

func (c *callwakeUA) contact(ext string) sip.Uri {
	return sip.Uri{Scheme: "sip", User: ext, Host: "127.0.0.1", Port: c.port}
}

// kamailioHarness is a Manager on the real clock, sending from cw.
func kamailioHarness(t *testing.T, k *kamailio.Server, cw *callwakeUA, edit func(*Config)) *harness {
	t.Helper()
	return newHarness(t, k.URI(), func(c *Config) {
		c.Client, c.Contact, c.Clock = cw.client, cw.contact, realClock{}
		if edit != nil {
			edit(c)
		}
	})
}
