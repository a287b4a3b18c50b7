package loadtest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// PhoneMode is what a woken phone does with the call.
type PhoneMode string

const (
	Silent  PhoneMode = "silent"  // the push arrives, the app never wakes
	Ring    PhoneMode = "ring"    // wakes, registers, rings (180) until cancelled
	Answer  PhoneMode = "answer"  // wakes, registers, answers (200 with SDP); hangs up on BYE
	Decline PhoneMode = "decline" // wakes, registers, answers 603
)

const (
	phoneSDP       = "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	registerWithin = 10 * time.Second // one REGISTER with its digest round trip
	ringAtMost     = 2 * time.Minute  // a ringing phone gives up if never cancelled
	benchTeamID    = "BENCHTEAM1"
	benchTopic     = "com.example.bench.voip"
)

// phones are many mobile phones behind one sipgo user agent on one UDP
// port: each extension's app registers with the extension as its Contact
// user and the push parameters of its device, so callwake's INVITE names
// the extension in its Request-URI.
type phones struct {
	ua        *sipgo.UserAgent
	client    *sipgo.Client
	dialogs   *sipgo.DialogServerCache
	conn      net.PacketConn
	host      string
	port      int
	registrar sip.Uri // callwake's UDP listener
	domain    string
	device    func(ext string) device

	mode   atomic.Value // PhoneMode
	regSeq atomic.Uint64
	stats  phoneStats

	errMu   sync.Mutex
	lastErr string
}

// phoneStats counts what the phones did; take resets it.
type phoneStats struct {
	Woken, Registered, RegisterFailed atomic.Int64
	Invites, Answered, Declined       atomic.Int64
	Cancelled, Byes, Unexpected       atomic.Int64
}

// PhoneCounts is a snapshot of phoneStats.
type PhoneCounts struct {
	Woken, Registered, RegisterFailed int64
	Invites, Answered, Declined       int64
	Cancelled, Byes, Unexpected       int64
	LastError                         string
}

func startPhones(callwakeUDP, domain string, device func(ext string) device) (*phones, error) {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("callwake-bench-phone"))
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		ua.Close()
		return nil, err
	}
	// A burst of INVITEs must not overflow the socket (the kernel caps this
	// at net.core.rmem_max).
	if u, ok := conn.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(4 << 20)
		_ = u.SetWriteBuffer(4 << 20)
	}
	host, portStr, _ := net.SplitHostPort(conn.LocalAddr().String())
	port, _ := strconv.Atoi(portStr)
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	if err != nil {
		conn.Close()
		ua.Close()
		return nil, err
	}
	rhost, rportStr, err := net.SplitHostPort(callwakeUDP)
	if err != nil {
		return nil, err
	}
	rport, _ := strconv.Atoi(rportStr)
	p := &phones{ua: ua, client: client, conn: conn, host: host, port: port, domain: domain, device: device,
		registrar: sip.Uri{Scheme: "sip", Host: rhost, Port: rport, UriParams: sip.NewParams(), Headers: sip.NewParams()}}
	p.mode.Store(Silent)
	p.dialogs = sipgo.NewDialogServerCache(client, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "phone", Host: host, Port: port}})

	srv, err := sipgo.NewServer(ua)
	if err != nil {
		return nil, err
	}
	srv.OnInvite(p.onInvite)
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.dialogs.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := p.dialogs.ReadBye(req, tx); err != nil {
			p.stats.Unexpected.Add(1)
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
			return
		}
		p.stats.Byes.Add(1)
	})
	go func() { _ = srv.ServeUDP(conn) }()
	return p, nil
}

func (p *phones) close() {
	p.client.Close()
	p.ua.Close()
	p.conn.Close()
}

func (p *phones) setMode(m PhoneMode) { p.mode.Store(m) }

func (p *phones) currentMode() PhoneMode { return p.mode.Load().(PhoneMode) }

// take returns the counts since the last take and starts afresh.
func (p *phones) take() PhoneCounts {
	s := &p.stats
	c := PhoneCounts{Woken: s.Woken.Swap(0), Registered: s.Registered.Swap(0), RegisterFailed: s.RegisterFailed.Swap(0),
		Invites: s.Invites.Swap(0), Answered: s.Answered.Swap(0), Declined: s.Declined.Swap(0),
		Cancelled: s.Cancelled.Swap(0), Byes: s.Byes.Swap(0), Unexpected: s.Unexpected.Swap(0)}
	p.errMu.Lock()
	c.LastError, p.lastErr = p.lastErr, ""
	p.errMu.Unlock()
	return c
}

func (p *phones) noteError(format string, args ...any) {
	p.errMu.Lock()
	p.lastErr = fmt.Sprintf(format, args...)
	p.errMu.Unlock()
}

// wake is a push arriving at ext's phone: unless silent, the app registers
// with its push parameters, and callwake sends it the call.
func (p *phones) wake(ext string) {
	if p.currentMode() == Silent {
		return
	}
	p.stats.Woken.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), registerWithin)
	defer cancel()
	status, err := p.register(ctx, ext)
	switch {
	case err != nil:
		p.stats.RegisterFailed.Add(1)
		p.noteError("REGISTER %s: %v", ext, err)
	case status != sip.StatusOK:
		p.stats.RegisterFailed.Add(1)
		p.noteError("REGISTER %s: %d", ext, status)
	default:
		p.stats.Registered.Add(1)
	}
}

// register sends the app's REGISTER, answers the digest challenge and
// returns the final status.
func (p *phones) register(ctx context.Context, ext string) (int, error) {
	d := p.device(ext)
	req := sip.NewRequest(sip.REGISTER, *p.registrar.Clone())
	aor := sip.Uri{Scheme: "sip", User: ext, Host: p.domain}
	fromParams := sip.NewParams()
	fromParams.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: fromParams})
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: ext, Host: p.host, Port: p.port,
		UriParams: sip.NewParams(), Headers: sip.NewParams()}, Params: sip.NewParams()}
	contact.Address.UriParams.Add("pn-provider", "apns")
	contact.Address.UriParams.Add("pn-param", benchTeamID+"."+benchTopic)
	contact.Address.UriParams.Add("pn-prid", d.token)
	contact.Params.Add("+sip.instance", `"<`+d.instance+`>"`)
	req.AppendHeader(&contact)
	// A woken app is a fresh process: a new Call-ID for each registration.
	callID := sip.CallIDHeader(fmt.Sprintf("bench-reg-%d-%s", p.regSeq.Add(1), ext))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
	req.AppendHeader(sip.NewHeader("Expires", "600"))
	req.SetTransport("UDP")
	res, err := p.client.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	if res.StatusCode == sip.StatusUnauthorized {
		req.CSeq().SeqNo = 2
		res, err = p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: ext, Password: d.password})
		if err != nil {
			return 0, fmt.Errorf("with digest: %w", err)
		}
	}
	return res.StatusCode, nil
}

// onInvite is callwake's INVITE to a woken phone.
func (p *phones) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") { // re-INVITE
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", []byte(phoneSDP)))
		return
	}
	p.stats.Invites.Add(1)
	sess, err := p.dialogs.ReadInvite(req, tx)
	if err != nil {
		p.stats.Unexpected.Add(1)
		p.noteError("reading INVITE: %v", err)
		return
	}
	ext := req.Recipient.User
	contact := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: ext, Host: p.host, Port: p.port}}
	switch p.currentMode() {
	case Answer:
		res := sip.NewSDPResponseFromRequest(sess.InviteRequest, []byte(phoneSDP))
		res.AppendHeader(contact)
		// Waits for callwake's ACK.
		if err := sess.WriteResponse(res); err != nil {
			p.stats.Unexpected.Add(1)
			p.noteError("answering %s: %v", ext, err)
			sess.Close()
			return
		}
		p.stats.Answered.Add(1)
	case Decline:
		_ = sess.Respond(sip.StatusGlobalDecline, "Decline", nil)
		p.stats.Declined.Add(1)
		sess.Close()
	default: // Ring, or Silent woken anyway: ring until cancelled
		res := sip.NewResponseFromRequest(sess.InviteRequest, sip.StatusRinging, "Ringing", nil)
		res.AppendHeader(contact)
		_ = sess.WriteResponse(res)
		// The transaction lives as long as this handler: callwake's CANCEL
		// ends it (sipgo answers 200 and 487).
		select {
		case <-tx.Done():
			p.stats.Cancelled.Add(1)
		case <-time.After(ringAtMost):
			_ = sess.Respond(sip.StatusRequestTimeout, "Request Timeout", nil)
			p.stats.Unexpected.Add(1)
		}
		sess.Close()
	}
}
