package sip

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// testRegistrar is a Registrar mounted on a real sipgo server listening on
// UDP and TCP on loopback.
type testRegistrar struct {
	reg     *Registrar
	clock   *fakeClock
	handler *recordingHandler
	udpPort int
	tcpPort int
}

var testPasswords = map[string]string{"1001": "secret1001", "1002": "secret1002"}

func startRegistrar(t *testing.T, configure ...func(*RegistrarConfig)) *testRegistrar {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("callwake"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRegistrar{clock: newFakeClock(), handler: &recordingHandler{}}
	cfg := RegistrarConfig{
		Domain:      testRealm,
		Credentials: &passwordStore{passwords: testPasswords},
		Handler:     tr.handler,
		Now:         tr.clock.Now,
		Logger:      quietLogger,
		ConnAlive:   ConnAliveFunc(ua.TransportLayer()),
	}
	for _, f := range configure {
		f(&cfg)
	}
	tr.reg, err = NewRegistrar(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnRegister(tr.reg.HandleRegister)

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr.udpPort = pc.LocalAddr().(*net.UDPAddr).Port
	tr.tcpPort = ln.Addr().(*net.TCPAddr).Port
	go srv.ServeUDP(pc)
	go srv.ServeTCP(ln)
	t.Cleanup(func() {
		ua.Close()
		pc.Close()
		ln.Close()
	})
	return tr
}

// recordingHandler keeps the events it is given and answers with err.
type recordingHandler struct {
	mu     sync.Mutex
	events []RegisterEvent
	err    error
}

func (h *recordingHandler) OnRegister(_ context.Context, ev RegisterEvent) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
	return h.err
}

func (h *recordingHandler) setErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
}

// take returns the events so far and forgets them. OnRegister runs before
// the REGISTER is answered, so they are complete once the phone has its
// answer.
func (h *recordingHandler) take() []RegisterEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	evs := h.events
	h.events = nil
	return evs
}

// phone is a sipgo user agent registering to the test registrar.
type phone struct {
	t         *testing.T
	ua        *sipgo.UserAgent
	client    *sipgo.Client
	transport string
	server    sip.Uri
	user      string
	password  string
	// algorithm answers challenges: "SHA-256" goes through sipgo's own
	// DoDigestAuth (which takes the first, preferred challenge), "MD5" is
	// answered here.
	algorithm string
	callID    string
	cseq      uint32
	// lastAuth is the Authorization of the last authenticated REGISTER.
	lastAuth string
}

func newPhone(t *testing.T, tr *testRegistrar, transport, user string) *phone {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(user))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	port := tr.udpPort
	if transport == "TCP" {
		port = tr.tcpPort
	}
	return &phone{
		t: t, ua: ua, client: client, transport: transport,
		server:    sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: port},
		user:      user,
		password:  testPasswords[user],
		algorithm: AlgorithmSHA256,
		callID:    "call-" + user + "-" + transport + "-" + strconv.Itoa(int(time.Now().UnixNano()%1e9)),
		cseq:      1,
	}
}

// request builds a REGISTER for the phone's extension with the next CSeq.
// An expires below zero leaves the Expires header out.
func (p *phone) request(expires int, contacts ...string) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, p.server)
	req.SetTransport(p.transport)
	aor := sip.Uri{Scheme: "sip", User: p.user, Host: testRealm}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	callID := sip.CallIDHeader(p.callID)
	req.AppendHeader(&callID)
	p.cseq++
	req.AppendHeader(&sip.CSeqHeader{SeqNo: p.cseq, MethodName: sip.REGISTER})
	for _, c := range contacts {
		req.AppendHeader(sip.NewHeader("Contact", c))
	}
	if expires >= 0 {
		req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	}
	return req
}

// do sends req and returns the final answer.
func (p *phone) do(req *sip.Request, opts ...sipgo.ClientRequestOption) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.client.Do(ctx, req, opts...)
	if err != nil {
		p.t.Fatalf("REGISTER: %v", err)
	}
	return res
}

// register sends a REGISTER and answers the digest challenge.
func (p *phone) register(expires int, contacts ...string) *sip.Response {
	p.t.Helper()
	req := p.request(expires, contacts...)
	res := p.do(req)
	if res.StatusCode != sip.StatusUnauthorized {
		return res
	}
	return p.answer(req, res)
}

// answer resends req with credentials for the challenges in res.
func (p *phone) answer(req *sip.Request, res *sip.Response) *sip.Response {
	p.t.Helper()
	if p.algorithm == AlgorithmSHA256 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.user, Password: p.password})
		if err != nil {
			p.t.Fatalf("REGISTER with digest: %v", err)
		}
		p.cseq = req.CSeq().SeqNo
		p.lastAuth = req.GetHeader("Authorization").Value()
		return res
	}
	authorize(p.t, req, challengeFor(p.t, headerValues(res, "WWW-Authenticate"), p.algorithm), p.user, p.password)
	p.lastAuth = req.GetHeader("Authorization").Value()
	p.cseq++
	req.CSeq().SeqNo = p.cseq
	req.RemoveHeader("Via")
	return p.do(req, sipgo.ClientRequestAddVia)
}

func headerValues(msg sip.Message, name string) []string {
	var out []string
	for _, h := range msg.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

// contactExpires maps each Contact URI of a 200 to its expires param.
func contactExpires(t *testing.T, res *sip.Response) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			t.Fatalf("Contact %q not parsed", h.Value())
		}
		v, _ := c.Params.Get("expires")
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("Contact %q: bad expires: %v", h.Value(), err)
		}
		out[c.Address.Addr()] = n
	}
	return out
}

func wantStatus(t *testing.T, res *sip.Response, code int) {
	t.Helper()
	if res.StatusCode != code {
		t.Fatalf("answer %d %s, want %d\n%s", res.StatusCode, res.Reason, code, res.String())
	}
}

var sipgoAddVia = sipgo.ClientRequestAddVia
