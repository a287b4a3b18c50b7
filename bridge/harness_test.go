package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	sipgosip "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/sip"
)

const (
	domain   = "callwake.test"
	pbxSDP   = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
	phoneSDP = "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n"
	waitFor  = 5 * time.Second
)

func testLogger() *slog.Logger {
	if os.Getenv("CALLWAKE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fakePusher records pushes and answers them as told; tests that need the
// real senders use the push mocks instead.
type fakePusher struct {
	pushes chan pushed
	mu     sync.Mutex
	answer func(push.Target) push.Result
}

type pushed struct {
	target  push.Target
	payload push.Payload
}

func newFakePusher() *fakePusher { return &fakePusher{pushes: make(chan pushed, 100)} }

func (f *fakePusher) Push(_ context.Context, targets []push.Target, payloadFor func(push.Target) push.Payload, _ time.Time) []push.Result {
	f.mu.Lock()
	answer := f.answer
	f.mu.Unlock()
	out := make([]push.Result, 0, len(targets))
	for _, t := range targets {
		f.pushes <- pushed{target: t, payload: payloadFor(t)}
		r := push.Result{Target: t, Outcome: push.OutcomeDelivered, Attempts: 1}
		if answer != nil {
			r = answer(t)
		}
		out = append(out, r)
	}
	return out
}

// next waits for the next push of the given type.
func (f *fakePusher) next(t testing.TB, kind string) pushed {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case p := <-f.pushes:
			if p.payload.Type == kind {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s push", kind)
		}
	}
}

// none checks that no push of the given type comes within d.
func (f *fakePusher) none(t testing.TB, kind string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-f.pushes:
			if p.payload.Type == kind {
				t.Fatalf("unexpected %s push to device %d (reason %q)", kind, p.target.DeviceID, p.payload.Reason)
			}
		case <-deadline:
			return
		}
	}
}

type env struct {
	t       testing.TB
	store   *db.Store
	pusher  *fakePusher
	bridge  *bridge.Bridge
	svc     *sip.Service
	udpAddr string
	tcpAddr string
}

type envOption func(*bridge.Config, *sip.ServiceConfig)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := db.Open(ctx, filepath.Join(t.TempDir(), "e2e.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{t: t, store: store, pusher: newFakePusher()}
	bcfg := bridge.Config{
		Store: store, Pusher: e.pusher, Domain: domain, RegistrarURI: "sip:" + domain,
		RingTimeout: 4 * time.Second, WakeTimeout: 3 * time.Second, TimeoutStatus: 487,
		MaxDevices: 5, ForwardHeaders: []string{"X-Customer-Id"},
		DeclineBaseURL: "https://callwake.test", DeclineSecret: []byte("0123456789abcdef0123456789abcdef"),
		Logger: testLogger(), Registerer: prometheus.NewRegistry(),
	}
	scfg := sip.ServiceConfig{
		Listeners: []sip.Listener{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0"}},
		Trusted:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Realm: domain, Logger: testLogger(),
	}
	for _, o := range opts {
		o(&bcfg, &scfg)
	}
	if bcfg.Pusher != e.pusher {
		e.pusher = nil
	}
	e.bridge, err = bridge.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	var svc *sip.Service
	reg, err := sip.NewRegistrar(sip.RegistrarConfig{Domain: domain, Credentials: e.bridge, Handler: e.bridge,
		Logger: testLogger(), ConnAlive: func(tr, addr string) bool { return sip.ConnAliveFunc(svc.TransportLayer())(tr, addr) }})
	if err != nil {
		t.Fatal(err)
	}
	scfg.Registrar, scfg.Calls, scfg.Draining = reg, e.bridge, e.bridge.Draining
	svc, err = sip.NewService(scfg)
	if err != nil {
		t.Fatal(err)
	}
	bound, err := svc.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	e.svc = svc
	e.bridge.Attach(svc, reg, bcfg.RegistrarURI)
	for _, l := range bound {
		switch l.Transport {
		case "udp":
			e.udpAddr = l.Addr
		case "tcp":
			e.tcpAddr = l.Addr
		}
	}
	// Every call must end before the test does, so that goroutines and
	// answers do not leak into the next test.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.bridge.Wait(ctx); err != nil {
			t.Errorf("calls still running at the end of the test: %d", e.bridge.ActiveCalls())
		}
	})
	return e
}

func (e *env) addExtension(ext string) {
	e.t.Helper()
	x := db.Extension{Extension: ext, DisplayName: "User " + ext}
	x.SetPassword(domain, "secret-"+ext)
	if _, err := e.store.CreateExtension(context.Background(), x); err != nil {
		e.t.Fatal(err)
	}
}

// addDevice registers a push device the way POST /api/v1/devices does.
func (e *env) addDevice(ext string, n int) db.Device {
	e.t.Helper()
	up, err := e.store.UpsertDevice(context.Background(), db.Device{Extension: ext, Provider: "apns",
		Token: apnsToken(n), Topic: "com.example.app.voip"}, 5)
	if err != nil {
		e.t.Fatal(err)
	}
	return up.Device
}

func apnsToken(n int) string { return fmt.Sprintf("%064x", n) }

func sipgoHeader(name, value string) sipgosip.Header { return sipgosip.NewHeader(name, value) }

func (e *env) lastCall(t testing.TB) db.Call {
	t.Helper()
	calls, err := e.store.ListCalls(context.Background(), db.CallQuery{Limit: 1})
	if err != nil || len(calls) == 0 {
		t.Fatalf("no call in the log: %v", err)
	}
	return calls[0]
}

// waitCallLogged waits until the newest call in the log has an outcome.
func (e *env) waitOutcome(t testing.TB, outcome string) db.Call {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		calls, _ := e.store.ListCalls(context.Background(), db.CallQuery{Limit: 1})
		if len(calls) == 1 && calls[0].Outcome == outcome {
			return calls[0]
		}
		time.Sleep(10 * time.Millisecond) // polling the store, not synchronising goroutines
	}
	t.Fatalf("call log never showed outcome %q; last: %+v", outcome, e.lastCall(t))
	return db.Call{}
}

func hostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// ---- the PBX: a sipgo user agent that calls through callwake ----

type pbx struct {
	t        testing.TB
	client   *sipgo.Client
	dialogs  *sipgo.DialogClientCache
	target   string
	requests chan *sipgosip.Request // in-dialog requests from callwake (BYE, INFO, re-INVITE)
}

func newPBX(t testing.TB, e *env) *pbx {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-pbx"))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := sipgo.NewServer(ua)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port := hostPort(t, conn.LocalAddr().String())
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	if err != nil {
		t.Fatal(err)
	}
	p := &pbx{t: t, client: client, target: e.udpAddr, requests: make(chan *sipgosip.Request, 10)}
	p.dialogs = sipgo.NewDialogClientCache(client, sipgosip.ContactHeader{Address: sipgosip.Uri{Scheme: "sip", User: "pbx", Host: host, Port: port}})
	srv.OnBye(func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
		if err := p.dialogs.ReadBye(req, tx); err != nil {
			tx.Respond(sipgosip.NewResponseFromRequest(req, 481, "No Dialog", nil))
		}
		p.requests <- req
	})
	for _, m := range []sipgosip.RequestMethod{sipgosip.INFO, sipgosip.UPDATE, sipgosip.INVITE} {
		srv.OnRequest(m, func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
			tx.Respond(sipgosip.NewResponseFromRequest(req, 200, "OK", req.Body()))
			p.requests <- req
		})
	}
	srv.OnAck(func(*sipgosip.Request, sipgosip.ServerTransaction) {})
	go srv.ServeUDP(conn)
	t.Cleanup(func() { ua.Close(); conn.Close() })
	return p
}

type pbxCall struct {
	t         testing.TB
	pbx       *pbx
	sess      *sipgo.DialogClientSession
	responses chan *sipgosip.Response
	result    chan error
	cancel    context.CancelFunc
	sentAt    time.Time
	seen      []*sipgosip.Response
}

// call sends an INVITE for ext through callwake, with an SDP offer.
func (p *pbx) call(ext string, headers ...sipgosip.Header) *pbxCall {
	p.t.Helper()
	return p.invite(ext, []byte(pbxSDP), headers...)
}

// invite sends an INVITE with the given body (nil: a late offer).
func (p *pbx) invite(ext string, body []byte, headers ...sipgosip.Header) *pbxCall {
	p.t.Helper()
	host, port := hostPort(p.t, p.target)
	ctx, cancel := context.WithCancel(context.Background())
	headers = append(headers, sipgosip.NewHeader("P-Asserted-Identity", `"Alice Caller" <sip:+15551234@pbx.test>`))
	if body != nil {
		headers = append(headers, sipgosip.NewHeader("Content-Type", "application/sdp"))
	}
	c := &pbxCall{t: p.t, pbx: p, responses: make(chan *sipgosip.Response, 20), result: make(chan error, 1), cancel: cancel, sentAt: time.Now()}
	sess, err := p.dialogs.Invite(ctx, sipgosip.Uri{Scheme: "sip", User: ext, Host: host, Port: port}, body, headers...)
	if err != nil {
		p.t.Fatal(err)
	}
	c.sess = sess
	go func() {
		c.result <- sess.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sipgosip.Response) error {
			c.responses <- r
			return nil
		}})
	}()
	p.t.Cleanup(func() {
		cancel()
		sess.Close()
	})
	return c
}

// expect waits for a response with the given status. Responses may arrive
// out of order (the UDP receiver handles each on its own goroutine), so every
// one seen is kept.
func (c *pbxCall) expect(code int) *sipgosip.Response {
	c.t.Helper()
	deadline := time.After(waitFor)
	for {
		for _, r := range c.seen {
			if r.StatusCode == code {
				return r
			}
		}
		select {
		case r := <-c.responses:
			c.seen = append(c.seen, r)
			if r.StatusCode >= 200 && r.StatusCode != code {
				c.t.Fatalf("PBX got %d %s, want %d", r.StatusCode, r.Reason, code)
			}
		case <-deadline:
			c.t.Fatalf("PBX got no %d", code)
		}
	}
}

// final waits for the INVITE's final answer and returns its status.
func (c *pbxCall) final(within time.Duration) int {
	c.t.Helper()
	select {
	case err := <-c.result:
		var de *sipgo.ErrDialogResponse
		switch {
		case err == nil:
			return 200
		case errors.As(err, &de):
			return de.Res.StatusCode
		default:
			c.t.Fatalf("INVITE failed: %v", err)
		}
	case <-time.After(within):
		c.t.Fatalf("no final answer within %s", within)
	}
	return 0
}

// ---- phones: sipgo user agents that register to callwake and answer ----

type phone struct {
	t         testing.TB
	e         *env
	ext       string
	client    *sipgo.Client
	transport string
	contact   sipgosip.Uri
	callID    string
	cseq      uint32
	dialogs   *sipgo.DialogServerCache
	invites   chan *incoming
	acks      chan *sipgosip.Request
	byes      chan *sipgosip.Request
	infos     chan *sipgosip.Request
	close     func()
}

// incoming is an INVITE the phone got; the test answers it.
type incoming struct {
	req      *sipgosip.Request
	tx       sipgosip.ServerTransaction
	sess     *sipgo.DialogServerSession
	finished chan struct{}
	cancels  chan *sipgosip.Request
}

func newPhone(t testing.TB, e *env, ext, transport string) *phone {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-phone"))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := sipgo.NewServer(ua)
	var addr string
	var closer io.Closer
	if transport == "udp" {
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr, closer = conn.LocalAddr().String(), conn
		go srv.ServeUDP(conn)
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr, closer = ln.Addr().String(), ln
		go srv.ServeTCP(ln)
	}
	host, port := hostPort(t, addr)
	opts := []sipgo.ClientOption{sipgo.WithClientHostname(host)}
	if transport == "udp" {
		opts = append(opts, sipgo.WithClientPort(port))
	}
	client, err := sipgo.NewClient(ua, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{t: t, e: e, ext: ext, client: client, transport: transport,
		contact: sipgosip.Uri{Scheme: "sip", User: ext, Host: host, Port: port, UriParams: sipgosip.NewParams(), Headers: sipgosip.NewParams()},
		callID:  fmt.Sprintf("reg-%d@phone", time.Now().UnixNano()),
		invites: make(chan *incoming, 10), acks: make(chan *sipgosip.Request, 10), byes: make(chan *sipgosip.Request, 10), infos: make(chan *sipgosip.Request, 10)}
	if transport != "udp" {
		p.contact.UriParams.Add("transport", transport)
	}
	p.dialogs = sipgo.NewDialogServerCache(client, sipgosip.ContactHeader{Address: p.contact})
	srv.OnInvite(func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
		if to := req.To(); to != nil && to.Params.Has("tag") { // re-INVITE
			tx.Respond(sipgosip.NewResponseFromRequest(req, 200, "OK", []byte(phoneSDP)))
			p.infos <- req
			return
		}
		sess, err := p.dialogs.ReadInvite(req, tx)
		if err != nil {
			t.Errorf("phone: reading INVITE: %v", err)
			return
		}
		in := &incoming{req: req, tx: tx, sess: sess, finished: make(chan struct{}), cancels: make(chan *sipgosip.Request, 1)}
		tx.OnCancel(func(r *sipgosip.Request) { in.cancels <- r })
		p.invites <- in
		// The transaction lives as long as this handler: wait for the test.
		select {
		case <-in.finished:
		case <-tx.Done():
		}
	})
	srv.OnAck(func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
		p.dialogs.ReadAck(req, tx)
		p.acks <- req
	})
	srv.OnBye(func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
		if err := p.dialogs.ReadBye(req, tx); err != nil {
			tx.Respond(sipgosip.NewResponseFromRequest(req, 481, "No Dialog", nil))
		}
		p.byes <- req
	})
	for _, m := range []sipgosip.RequestMethod{sipgosip.INFO, sipgosip.UPDATE} {
		srv.OnRequest(m, func(req *sipgosip.Request, tx sipgosip.ServerTransaction) {
			tx.Respond(sipgosip.NewResponseFromRequest(req, 200, "OK", nil))
			p.infos <- req
		})
	}
	p.close = func() { ua.Close(); closer.Close() }
	t.Cleanup(p.close)
	return p
}

// register sends a REGISTER with the given Contact parameters (push
// parameters) and digest credentials, and returns the final status.
func (p *phone) register(contactParams map[string]string, expires int) int {
	p.t.Helper()
	target := p.e.udpAddr
	if p.transport == "tcp" {
		target = p.e.tcpAddr
	}
	host, port := hostPort(p.t, target)
	recipient := sipgosip.Uri{Scheme: "sip", Host: host, Port: port, UriParams: sipgosip.NewParams()}
	if p.transport == "tcp" {
		recipient.UriParams.Add("transport", "tcp")
	}
	req := sipgosip.NewRequest(sipgosip.REGISTER, recipient)
	aor := sipgosip.Uri{Scheme: "sip", User: p.ext, Host: domain}
	fromParams := sipgosip.NewParams()
	fromParams.Add("tag", sipgosip.GenerateTagN(8))
	req.AppendHeader(&sipgosip.FromHeader{Address: aor, Params: fromParams})
	req.AppendHeader(&sipgosip.ToHeader{Address: aor, Params: sipgosip.NewParams()})
	contact := sipgosip.ContactHeader{Address: *p.contact.Clone(), Params: sipgosip.NewParams()}
	for k, v := range contactParams {
		if k == "+sip.instance" {
			contact.Params.Add(k, v)
		} else {
			contact.Address.UriParams.Add(k, v)
		}
	}
	req.AppendHeader(&contact)
	cid := sipgosip.CallIDHeader(p.callID)
	req.AppendHeader(&cid)
	p.cseq++
	req.AppendHeader(&sipgosip.CSeqHeader{SeqNo: p.cseq, MethodName: sipgosip.REGISTER})
	req.AppendHeader(sipgosip.NewHeader("Expires", strconv.Itoa(expires)))
	req.SetTransport(p.transport)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := p.client.Do(ctx, req)
	if err != nil {
		p.t.Fatalf("REGISTER: %v", err)
	}
	if res.StatusCode == 401 {
		p.cseq++
		req.CSeq().SeqNo = p.cseq
		res, err = p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.ext, Password: "secret-" + p.ext})
		if err != nil {
			p.t.Fatalf("REGISTER with auth: %v", err)
		}
	}
	return res.StatusCode
}

// pushParams are RFC 8599 Contact parameters for APNs token n.
func pushParams(n int) map[string]string {
	return map[string]string{"pn-provider": "apns", "pn-param": "TEAM123456.com.example.app.voip", "pn-prid": apnsToken(n)}
}

// ring waits for an INVITE on the phone.
func (p *phone) ring() *incoming {
	p.t.Helper()
	select {
	case in := <-p.invites:
		return in
	case <-time.After(waitFor):
		p.t.Fatalf("phone %s never rang", p.ext)
	}
	return nil
}

// silent checks that the phone gets no INVITE within d.
func (p *phone) silent(d time.Duration) {
	p.t.Helper()
	select {
	case in := <-p.invites:
		p.t.Fatalf("phone %s rang unexpectedly (Call-ID %s)", p.ext, in.req.CallID().Value())
	case <-time.After(d):
	}
}

func (in *incoming) respond(code int, reason string) {
	in.sess.Respond(code, reason, nil)
	if code >= 300 {
		close(in.finished)
	}
}

// answer sends 200 OK with the phone's SDP and waits for callwake's ACK.
func (in *incoming) answer(t testing.TB) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- in.sess.RespondSDP([]byte(phoneSDP)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("phone answer: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("callwake never acknowledged the phone's 200 OK")
	}
	close(in.finished)
}

// waitCancelled waits for callwake's CANCEL of the INVITE and returns it.
func (in *incoming) waitCancelled(t testing.TB) *sipgosip.Request {
	t.Helper()
	select {
	case r := <-in.cancels:
		return r
	case <-time.After(waitFor):
		t.Fatal("phone's INVITE was never cancelled")
	}
	return nil
}
