package loadtest

import (
	"strconv"
	"strings"
	"testing"
)

// The load phones read and answer SIP by hand; these run in every
// `go test ./...`.

const benchInvite = "INVITE sip:20001@127.0.0.1:40000;transport=udp SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK.one\r\n" +
	"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK.two\r\n" +
	"From: \"Caller\" <sip:100@pbx>;tag=abc\r\n" +
	"To: <sip:20001@127.0.0.1:40000>\r\n" +
	"Call-ID: call-1\r\n" +
	"CSeq: 7 INVITE\r\n" +
	"Content-Length: 0\r\n\r\n"

func TestPhoneParsesAndAnswersInvite(t *testing.T) {
	m, err := parseSIPMsg(benchInvite)
	if err != nil {
		t.Fatal(err)
	}
	if m.method != "INVITE" || m.ruriUser != "20001" || m.callID != "call-1" || m.cseqNum != "7" || m.toTag != "" {
		t.Fatalf("parsed %+v", m)
	}
	res := string(m.response(200, "OK", "t1", "<sip:20001@127.0.0.1:40000>", phoneSDP))
	want := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK.one\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK.two\r\n" +
		"From: \"Caller\" <sip:100@pbx>;tag=abc\r\n" +
		"To: <sip:20001@127.0.0.1:40000>;tag=t1\r\n" +
		"Call-ID: call-1\r\nCSeq: 7 INVITE\r\n" +
		"Contact: <sip:20001@127.0.0.1:40000>\r\n"
	if !strings.HasPrefix(res, want) {
		t.Errorf("answer:\n%s\nwant it to start with:\n%s", res, want)
	}
	if !strings.HasSuffix(res, "Content-Length: "+strconv.Itoa(len(phoneSDP))+"\r\n\r\n"+phoneSDP) {
		t.Errorf("answer ends:\n%s", res)
	}
	// An answer again, to a request that has a To tag, keeps it.
	m.to, m.toTag = m.to+";tag=x", "x"
	if res := string(m.response(200, "OK", "t1", "", "")); !strings.Contains(res, "To: <sip:20001@127.0.0.1:40000>;tag=x\r\n") {
		t.Errorf("answer to a tagged request:\n%s", res)
	}
}

func TestPhoneParsesChallenge(t *testing.T) {
	m, err := parseSIPMsg("SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n" +
		"Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\n" +
		"WWW-Authenticate: Digest realm=\"bench\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\"\r\n" +
		"WWW-Authenticate: Digest realm=\"bench\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if m.status != 401 || m.cseqNum != "1" || len(m.auth) != 2 {
		t.Fatalf("parsed %+v", m)
	}
	c, err := firstChallenge(m.auth)
	if err != nil || c.Algorithm != "SHA-256" {
		t.Errorf("challenge %+v, %v", c, err)
	}
	for _, bad := range []string{"", "garbage\r\n\r\n", "SIP/2.0 xx\r\nCall-ID: a\r\nCSeq: 1 A\r\n\r\n",
		"INVITE sip:a@b SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n"} {
		if _, err := parseSIPMsg(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
