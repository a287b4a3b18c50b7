package sip

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/callwake/callwake/internal/logging"
	"github.com/emiago/sipgo/sip"
)

// The benchmarks drive the per-call paths of the load runs' flow 2 in
// process, without sockets: a woken phone's digest REGISTER round, and the
// INVITE to it with the dialog its 200 creates. allocs/op is what to
// compare; ns/op is noisy on a shared box.

// benchLogger is callwake's logger at the default info level.
func benchLogger() *slog.Logger {
	return slog.New(logging.Lazy(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
}

// hashStore serves precomputed credentials, as the db's cache does.
type hashStore map[string]Credentials

func (s hashStore) PhoneCredentials(_ context.Context, ext string) (Credentials, bool, error) {
	c, ok := s[ext]
	return c, ok, nil
}

// nopRegisterHandler stands for the bridge.
type nopRegisterHandler struct{}

func (nopRegisterHandler) OnRegister(context.Context, RegisterEvent) error { return nil }
func (nopRegisterHandler) AfterRegister(RegisterEvent)                     {}

// answerTx is a server transaction that keeps the answer.
type answerTx struct {
	sip.ServerTransaction
	res *sip.Response
}

func (tx *answerTx) Respond(res *sip.Response) error {
	tx.res = res
	return nil
}

// benchRegister is the load harness's woken app's REGISTER (see
// bench/loadtest/phones.go), as sipgo's parser gives it to the registrar.
const benchRegister = "REGISTER sip:callwake.test SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK.3vL9kQ2x\r\n" +
	"From: <sip:1001@callwake.test>;tag=a8Fq2LzX\r\n" +
	"To: <sip:1001@callwake.test>\r\n" +
	"Contact: <sip:1001@127.0.0.1:5070;pn-provider=apns;pn-param=ABCDE12345.com.example.phone.voip;" +
	"pn-prid=7b3e1c0f9a2d4e6b8c1f3a5d7e9b0c2d4f6a8b0c1e3d5f7a9b2c4d6e8f0a1b3c>;" +
	"+sip.instance=\"<urn:uuid:6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b>\"\r\n" +
	"Call-ID: bench-reg-1-1001\r\n" +
	"CSeq: 1 REGISTER\r\n" +
	"Max-Forwards: 70\r\n" +
	"Expires: 600\r\n" +
	"Content-Length: 0\r\n\r\n"

func parseBenchRequest(b *testing.B, raw string) *sip.Request {
	b.Helper()
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		b.Fatal(err)
	}
	req := msg.(*sip.Request)
	req.SetSource("127.0.0.1:5070")
	req.SetTransport("UDP")
	return req
}

// BenchmarkRegisterDigestRound is one woken phone registering: a REGISTER
// without credentials (401 with SHA-256 and MD5 challenges), then the
// same with an Authorization (200), refreshing the phone's push binding
// under a new Call-ID as a restarted app does.
func BenchmarkRegisterDigestRound(b *testing.B) {
	clock := newFakeClock()
	reg, err := NewRegistrar(RegistrarConfig{
		Domain:      testRealm,
		Credentials: hashStore{"1001": {HA1MD5: HA1(AlgorithmMD5, "1001", testRealm, "pw"), HA1SHA256: HA1(AlgorithmSHA256, "1001", testRealm, "pw")}},
		Handler:     nopRegisterHandler{},
		NonceSecret: []byte("bench secret"),
		Now:         clock.Now,
		Logger:      benchLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	unauthenticated := parseBenchRequest(b, benchRegister)
	authenticated := parseBenchRequest(b, benchRegister)
	tx := &answerTx{}
	reg.HandleRegister(unauthenticated, tx)
	wantStatusB(b, tx.res, sip.StatusUnauthorized)
	// The clock stands still, so every challenge carries this nonce.
	authorize(b, authenticated, challengeFor(b, headerValues(tx.res, "WWW-Authenticate"), AlgorithmSHA256), "1001", "pw")
	authenticated.CSeq().SeqNo = 2
	reg.HandleRegister(authenticated, tx)
	wantStatusB(b, tx.res, sip.StatusOK)

	callIDs := make([]sip.CallIDHeader, b.N)
	for i := range callIDs {
		callIDs[i] = sip.CallIDHeader("bench-reg-" + strconv.Itoa(i+2) + "-1001")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		*unauthenticated.CallID() = callIDs[i]
		*authenticated.CallID() = callIDs[i]
		reg.HandleRegister(unauthenticated, tx)
		if tx.res.StatusCode != sip.StatusUnauthorized {
			b.Fatalf("unauthenticated REGISTER answered %d", tx.res.StatusCode)
		}
		reg.HandleRegister(authenticated, tx)
		if tx.res.StatusCode != sip.StatusOK {
			b.Fatalf("authenticated REGISTER answered %d", tx.res.StatusCode)
		}
	}
}

func wantStatusB(b *testing.B, res *sip.Response, code int) {
	b.Helper()
	if res == nil || res.StatusCode != code {
		b.Fatalf("answer %v, want %d", res, code)
	}
}

// benchPBXInvite is SIPp's INVITE as the PBX (bench/sipp).
const benchPBXInvite = "INVITE sip:1001@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-4821-1-0\r\n" +
	"From: \"Caller\" <sip:2000@127.0.0.1:5080>;tag=4821SIPpTag001\r\n" +
	"To: <sip:1001@127.0.0.1:5060>\r\n" +
	"Call-ID: 1-4821@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: <sip:sipp@127.0.0.1:5080>\r\n" +
	"Max-Forwards: 70\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"

// benchPhoneOK is the woken phone's 200 to callwake's INVITE.
const benchPhoneOK = "SIP/2.0 200 OK\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.f00;rport=5060\r\n" +
	"From: \"Caller\" <sip:2000@127.0.0.1:5080>;tag=8TlbCq2GQp3tM8xj\r\n" +
	"To: <sip:1001@callwake.test>;tag=aXk3Pz9Q\r\n" +
	"Call-ID: 0f0e6d3c-6b0a-4f86-9d43-2b8f7a1c5e90\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: <sip:1001@127.0.0.1:5070>\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 0\r\n\r\n"

// BenchmarkCallDialogs is the SIP work of an answered call beyond the
// transport: callwake's INVITE to the phone's binding, the dialog the
// phone's 200 creates and its ACK, the 200 to the PBX with the dialog it
// creates, and the BYE to the phone when the PBX hangs up.
func BenchmarkCallDialogs(b *testing.B) {
	svc, err := NewService(ServiceConfig{Logger: benchLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	contact := sip.Uri{Scheme: "sip", User: "callwake", Host: "127.0.0.1", Port: 5060, UriParams: sip.NewParams(), Headers: sip.NewParams()}
	svc.contacts["udp"] = &contact
	pbxInvite := parseBenchRequest(b, benchPBXInvite)
	pbxInvite.To().Params.Add("tag", "callwakeTag0001")
	msg, err := sip.ParseMessage([]byte(benchPhoneOK))
	if err != nil {
		b.Fatal(err)
	}
	phoneOK := msg.(*sip.Response)
	call := &InboundCall{svc: svc, req: pbxInvite, toTag: "callwakeTag0001", ext: "1001"}
	var binding Binding
	binding.Contact, binding.Source, binding.Transport = sip.Uri{Scheme: "sip", User: "1001", Host: "127.0.0.1", Port: 5070,
		UriParams: sip.HeaderParams{{K: "pn-provider", V: "apns"}, {K: "pn-prid", V: "7b3e1c0f9a2d"}}}, "127.0.0.1:5070", "udp"

	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		invite := svc.inviteRequest(&InviteParams{
			Target:      binding.Contact,
			Destination: binding.Source,
			Transport:   binding.Transport,
			From:        pbxInvite.From().Address,
			FromName:    pbxInvite.From().DisplayName,
			To:          sip.Uri{Scheme: "sip", User: "1001", Host: testRealm},
			Body:        pbxInvite.Body(),
			ContentType: "application/sdp",
		})
		phone := newUACDialog(svc, invite, phoneOK, binding.Source)
		ack := phone.request(sip.ACK, invite.CSeq().SeqNo, nil)
		res := call.response(sip.StatusOK, "OK", phoneOK.Body(), nil)
		res.AppendHeader(&sip.ContactHeader{Address: svc.Contact(pbxInvite.Transport())})
		pbx := newUASDialog(svc, pbxInvite, res)
		bye := phone.NewRequest(sip.BYE, nil)
		if ack.CallID().Value() != bye.CallID().Value() || pbx.CallID() != "1-4821@127.0.0.1" {
			b.Fatal("dialogs mixed up")
		}
	}
}
