package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icholy/digest"
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

	// RFC 3261's timers: retransmissions start at T1 and double up to T2;
	// a final answer to an INVITE is retransmitted until its ACK, for at
	// most 64*T1.
	phoneT1 = 500 * time.Millisecond
	phoneT2 = 4 * time.Second
	// A finished call is remembered this long, to answer retransmissions.
	phoneLinger = 32 * time.Second
)

// phones are many mobile phones on one UDP port: each extension's app
// registers with the extension as its Contact user and the push parameters
// of its device, so callwake's INVITE names the extension in its
// Request-URI.
//
// They speak SIP on the bare socket, not through a SIP stack: the load
// generator shares two cores with callwake, and a stack's transactions,
// dialogs and goroutine per request cost it half a core at 800 calls/s,
// which callwake's figures then paid for. They still keep RFC 3261's rules
// where a lost datagram would otherwise cost a call: a REGISTER is
// retransmitted until answered, a final answer to an INVITE until its ACK,
// and retransmitted requests get the same answer again.
type phones struct {
	conn     *net.UDPConn
	callwake *net.UDPAddr
	host     string
	port     int
	domain   string
	device   func(ext string) device

	mode   atomic.Value // PhoneMode
	regSeq atomic.Uint64
	stats  phoneStats

	mu    sync.Mutex
	regs  map[string]chan *sipMsg // REGISTERs awaiting an answer, by Call-ID and CSeq
	calls map[string]*phoneCall   // callwake's INVITEs, by Call-ID

	errMu   sync.Mutex
	lastErr string
	done    sync.WaitGroup
}

// phoneCall is an INVITE callwake sent to a phone. Guarded by phones.mu.
type phoneCall struct {
	invite *sipMsg
	toTag  string
	last   []byte      // the last answer to the INVITE, sent again on a retransmission
	final  bool        // a final answer was sent
	acked  bool        // its ACK arrived
	ended  bool        // BYE or CANCEL arrived, or the phone gave up
	timer  *time.Timer // retransmission of the final answer, or the ring limit
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
	callwake, err := net.ResolveUDPAddr("udp", callwakeUDP)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	// A burst of INVITEs must not overflow the socket (the kernel caps this
	// at net.core.rmem_max).
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	local := conn.LocalAddr().(*net.UDPAddr)
	p := &phones{conn: conn, callwake: callwake, host: local.IP.String(), port: local.Port, domain: domain,
		device: device, regs: map[string]chan *sipMsg{}, calls: map[string]*phoneCall{}}
	p.mode.Store(Silent)
	// Two readers: one may be sending while the other reads.
	for range 2 {
		p.done.Go(p.read)
	}
	return p, nil
}

func (p *phones) close() {
	p.conn.Close()
	p.done.Wait()
	p.mu.Lock()
	for _, c := range p.calls {
		if c.timer != nil {
			c.timer.Stop()
		}
	}
	p.mu.Unlock()
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

// unexpected counts something a phone should not have seen.
func (p *phones) unexpected(format string, args ...any) {
	p.stats.Unexpected.Add(1)
	p.noteError(format, args...)
}

func (p *phones) send(b []byte) {
	if _, err := p.conn.WriteToUDP(b, p.callwake); err != nil && !errors.Is(err, net.ErrClosed) {
		p.noteError("sending: %v", err)
	}
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
	case status != 200:
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
	// A woken app is a fresh process: a new Call-ID for each registration.
	callID := "bench-reg-" + strconv.FormatUint(p.regSeq.Add(1), 10) + "-" + ext
	ruri := "sip:" + p.callwake.String()
	fromTag := randomToken(8)
	request := func(cseq int, authorization string) []byte {
		var b strings.Builder
		b.Grow(700)
		b.WriteString("REGISTER " + ruri + " SIP/2.0\r\n")
		b.WriteString("Via: SIP/2.0/UDP " + p.host + ":" + strconv.Itoa(p.port) + ";rport;branch=z9hG4bK" + randomToken(12) + "\r\n")
		b.WriteString("Max-Forwards: 70\r\n")
		b.WriteString("From: <sip:" + ext + "@" + p.domain + ">;tag=" + fromTag + "\r\n")
		b.WriteString("To: <sip:" + ext + "@" + p.domain + ">\r\n")
		b.WriteString("Call-ID: " + callID + "\r\n")
		b.WriteString("CSeq: " + strconv.Itoa(cseq) + " REGISTER\r\n")
		b.WriteString("Contact: <sip:" + ext + "@" + p.host + ":" + strconv.Itoa(p.port) +
			";pn-provider=apns;pn-param=" + benchTeamID + "." + benchTopic + ";pn-prid=" + d.token +
			">;+sip.instance=\"<" + d.instance + ">\"\r\n")
		b.WriteString("Expires: 600\r\n")
		if authorization != "" {
			b.WriteString("Authorization: " + authorization + "\r\n")
		}
		b.WriteString("User-Agent: callwake-bench-phone\r\nContent-Length: 0\r\n\r\n")
		return []byte(b.String())
	}
	res, err := p.transact(ctx, callID, 1, request(1, ""))
	if err != nil || res.status != 401 {
		return res.statusOrZero(), err
	}
	chal, err := firstChallenge(res.auth)
	if err != nil {
		return 0, err
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: ruri, Username: ext,
		Password: d.password, Count: 1})
	if err != nil {
		return 0, fmt.Errorf("with digest: %w", err)
	}
	res, err = p.transact(ctx, callID, 2, request(2, cred.String()))
	return res.statusOrZero(), err
}

// firstChallenge is the first WWW-Authenticate challenge the phone can
// answer.
func firstChallenge(headers []string) (*digest.Challenge, error) {
	for _, h := range headers {
		if c, err := digest.ParseChallenge(h); err == nil && digest.CanDigest(c) {
			return c, nil
		}
	}
	return nil, fmt.Errorf("401 without a digest challenge the phone can answer: %q", headers)
}

// transact sends a request and retransmits it until its final answer
// arrives or ctx ends.
func (p *phones) transact(ctx context.Context, callID string, cseq int, req []byte) (*sipMsg, error) {
	key := callID + "/" + strconv.Itoa(cseq)
	answer := make(chan *sipMsg, 1)
	p.mu.Lock()
	p.regs[key] = answer
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.regs, key)
		p.mu.Unlock()
	}()
	wait := time.NewTimer(phoneT1)
	defer wait.Stop()
	for interval := phoneT1; ; interval = min(2*interval, phoneT2) {
		p.send(req)
		wait.Reset(interval)
		select {
		case res := <-answer:
			return res, nil
		case <-wait.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// read takes datagrams off the socket until it closes. Nothing it does
// blocks: answers are sent at once, retransmissions by timers.
func (p *phones) read() {
	buf := make([]byte, 65536)
	for {
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := parseSIPMsg(string(buf[:n]))
		if err != nil {
			p.unexpected("unreadable datagram: %v", err)
			continue
		}
		if m.method == "" {
			p.onResponse(m)
			continue
		}
		switch m.method {
		case "INVITE":
			p.onInvite(m)
		case "ACK":
			p.onAck(m)
		case "CANCEL":
			p.onCancel(m)
		case "BYE":
			p.onBye(m)
		case "OPTIONS":
			p.send(m.response(200, "OK", "", "", ""))
		default:
			p.unexpected("%s from callwake", m.method)
			p.send(m.response(501, "Not Implemented", "", "", ""))
		}
	}
}

// onResponse hands an answer to the REGISTER waiting for it.
func (p *phones) onResponse(m *sipMsg) {
	if m.status < 200 {
		return
	}
	p.mu.Lock()
	answer := p.regs[m.callID+"/"+m.cseqNum]
	p.mu.Unlock()
	if answer != nil {
		select {
		case answer <- m:
		default: // a retransmitted answer
		}
	}
}

// onInvite is callwake's INVITE to a woken phone, or its retransmission,
// or a re-INVITE.
func (p *phones) onInvite(m *sipMsg) {
	if m.toTag != "" { // re-INVITE: keep the session as it is
		p.send(m.response(200, "OK", m.toTag, p.contact(m.ruriUser), phoneSDP))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.calls[m.callID]; c != nil {
		if c.last != nil {
			p.send(c.last) // a retransmission: the same answer again
		}
		return
	}
	p.stats.Invites.Add(1)
	c := &phoneCall{invite: m, toTag: randomToken(8)}
	p.calls[m.callID] = c
	contact := p.contact(m.ruriUser)
	switch p.currentMode() {
	case Answer:
		p.stats.Answered.Add(1)
		p.finalLocked(c, m.response(200, "OK", c.toTag, contact, phoneSDP))
	case Decline:
		p.stats.Declined.Add(1)
		p.finalLocked(c, m.response(603, "Decline", c.toTag, "", ""))
	default: // Ring, or Silent woken anyway: ring until cancelled
		c.last = m.response(180, "Ringing", c.toTag, contact, "")
		p.send(c.last)
		c.timer = time.AfterFunc(ringAtMost, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !c.final {
				p.unexpected("call %s rang %v and was never cancelled", m.callID, ringAtMost)
				p.finalLocked(c, m.response(408, "Request Timeout", c.toTag, "", ""))
			}
		})
	}
}

// finalLocked sends a final answer to c's INVITE and retransmits it until
// its ACK, as a UAS does over UDP.
func (p *phones) finalLocked(c *phoneCall, res []byte) {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.last, c.final = res, true
	p.send(res)
	sent, interval := time.Now(), phoneT1
	var retransmit func()
	retransmit = func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if c.acked || c.ended {
			return
		}
		if time.Since(sent) >= 64*phoneT1 {
			p.unexpected("no ACK for the answer to %s", c.invite.callID)
			p.forgetLocked(c)
			return
		}
		p.send(c.last)
		interval = min(2*interval, phoneT2)
		c.timer = time.AfterFunc(interval, retransmit)
	}
	c.timer = time.AfterFunc(interval, retransmit)
}

// forgetLocked drops a finished call once retransmissions of its requests
// can no longer arrive.
func (p *phones) forgetLocked(c *phoneCall) {
	c.ended = true
	if c.timer != nil {
		c.timer.Stop()
	}
	callID := c.invite.callID
	c.timer = time.AfterFunc(phoneLinger, func() {
		p.mu.Lock()
		if p.calls[callID] == c {
			delete(p.calls, callID)
		}
		p.mu.Unlock()
	})
}

func (p *phones) onAck(m *sipMsg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls[m.callID]
	if c == nil || !c.final || c.acked {
		return // an ACK retransmitted, or for a call already forgotten
	}
	c.acked = true
	if c.timer != nil {
		c.timer.Stop()
	}
	if !strings.HasPrefix(string(c.last), "SIP/2.0 2") {
		p.forgetLocked(c) // declined or cancelled: the call is over
	}
}

// knownCallLocked is the call an in-dialog request or a CANCEL is for;
// for an unknown call it answers 481 and returns nil.
func (p *phones) knownCallLocked(m *sipMsg) *phoneCall {
	c := p.calls[m.callID]
	if c == nil {
		p.send(m.response(481, "Call/Transaction Does Not Exist", "", "", ""))
		p.unexpected("%s for an unknown call %s", m.method, m.callID)
	}
	return c
}

// onCancel is callwake cancelling a ringing phone: 200 for the CANCEL,
// 487 for the INVITE.
func (p *phones) onCancel(m *sipMsg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.knownCallLocked(m)
	if c == nil {
		return
	}
	p.send(m.response(200, "OK", c.toTag, "", ""))
	if c.final {
		return // too late (answered or declined), or a retransmitted CANCEL
	}
	p.stats.Cancelled.Add(1)
	p.finalLocked(c, c.invite.response(487, "Request Terminated", c.toTag, "", ""))
}

// onBye is callwake hanging up an answered call.
func (p *phones) onBye(m *sipMsg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.knownCallLocked(m)
	if c == nil {
		return
	}
	p.send(m.response(200, "OK", "", "", ""))
	if c.ended {
		return // a retransmitted BYE
	}
	p.stats.Byes.Add(1)
	p.forgetLocked(c)
}

func (p *phones) contact(user string) string {
	return "<sip:" + user + "@" + p.host + ":" + strconv.Itoa(p.port) + ">"
}

// randomToken is n random bytes in hex: tags and branches.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sipMsg is what the phones read of a SIP message.
type sipMsg struct {
	method   string // a request's method; "" for a response
	status   int    // a response's status
	ruriUser string // the user part of a request's Request-URI
	vias     []string
	from     string
	to       string
	toTag    string
	callID   string
	cseq     string // the whole CSeq value
	cseqNum  string
	auth     []string // WWW-Authenticate values
}

func (m *sipMsg) statusOrZero() int {
	if m == nil {
		return 0
	}
	return m.status
}

// parseSIPMsg reads the start line and the headers the phones need.
func parseSIPMsg(s string) (*sipMsg, error) {
	head, _, ok := strings.Cut(s, "\r\n\r\n")
	if !ok {
		return nil, errors.New("no end of headers")
	}
	start, rest, _ := strings.Cut(head, "\r\n")
	m := &sipMsg{}
	if code, ok := strings.CutPrefix(start, "SIP/2.0 "); ok {
		n, err := strconv.Atoi(code[:min(3, len(code))])
		if err != nil {
			return nil, fmt.Errorf("status line %q", start)
		}
		m.status = n
	} else {
		method, ruri, ok := strings.Cut(start, " ")
		if !ok || !strings.HasSuffix(ruri, " SIP/2.0") {
			return nil, fmt.Errorf("request line %q", start)
		}
		m.method = method
		if user, ok := strings.CutPrefix(ruri, "sip:"); ok {
			if at := strings.IndexByte(user, '@'); at >= 0 {
				m.ruriUser = user[:at]
			}
		}
	}
	for line := range strings.SplitSeq(rest, "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v":
			m.vias = append(m.vias, value)
		case "from", "f":
			m.from = value
		case "to", "t":
			m.to = value
			if _, tag, ok := strings.Cut(value, ";tag="); ok {
				m.toTag, _, _ = strings.Cut(tag, ";")
			}
		case "call-id", "i":
			m.callID = value
		case "cseq":
			m.cseq = value
			m.cseqNum, _, _ = strings.Cut(value, " ")
		case "www-authenticate":
			m.auth = append(m.auth, value)
		}
	}
	if m.callID == "" || m.cseq == "" || len(m.vias) == 0 && m.method != "" {
		return nil, fmt.Errorf("%q without Call-ID, CSeq or Via", start)
	}
	return m, nil
}

// response answers a request: its Vias, From, Call-ID and CSeq, its To with
// toTag unless it has one, and a Contact and SDP body when given.
func (m *sipMsg) response(status int, reason, toTag, contact, sdp string) []byte {
	var b strings.Builder
	b.Grow(400 + len(sdp))
	b.WriteString("SIP/2.0 " + strconv.Itoa(status) + " " + reason + "\r\n")
	for _, v := range m.vias {
		b.WriteString("Via: " + v + "\r\n")
	}
	b.WriteString("From: " + m.from + "\r\n")
	b.WriteString("To: " + m.to)
	if m.toTag == "" && toTag != "" {
		b.WriteString(";tag=" + toTag)
	}
	b.WriteString("\r\nCall-ID: " + m.callID + "\r\nCSeq: " + m.cseq + "\r\n")
	if contact != "" {
		b.WriteString("Contact: " + contact + "\r\n")
	}
	b.WriteString("User-Agent: callwake-bench-phone\r\n")
	if sdp != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp)
	return []byte(b.String())
}
