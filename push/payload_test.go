package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/callwake/callwake/push"
)

func decodeAPNs(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("APNs body is not JSON: %v\n%s", err, body)
	}
	return m
}

func TestAPNsBodyKeys(t *testing.T) {
	incoming := samplePayload()
	incoming.Reason = "ignored on incoming_call"
	if got := string(push.APNsBody(incoming)); got != wantAPNsBody {
		t.Errorf("incoming_call body =\n%s\nwant\n%s", got, wantAPNsBody)
	}

	cancelled := samplePayload()
	cancelled.Type, cancelled.Reason, cancelled.Test = push.TypeCallCancelled, push.ReasonCallerHangup, true
	cancelled.Headers = nil
	m := decodeAPNs(t, push.APNsBody(cancelled))
	if m["type"] != "call_cancelled" || m["reason"] != "caller_hangup" || m["test"] != "true" {
		t.Errorf("call_cancelled body = %v, want type, reason and test", m)
	}
	if h, ok := m["headers"].(map[string]any); !ok || len(h) != 0 {
		t.Errorf("headers = %v, want an empty object", m["headers"])
	}
	if _, ok := m["sent_at"].(float64); !ok {
		t.Errorf("sent_at = %T, want a number", m["sent_at"])
	}

	zero := push.Payload{Type: push.TypeIncomingCall}
	m = decodeAPNs(t, push.APNsBody(zero))
	if m["sent_at"] != float64(0) || m["expires_at"] != float64(0) {
		t.Errorf("zero times = %v, %v, want 0", m["sent_at"], m["expires_at"])
	}
}

func TestFCMDataKeys(t *testing.T) {
	incoming := samplePayload()
	incoming.Reason = "ignored on incoming_call"
	d := push.FCMData(incoming)
	if _, ok := d["reason"]; ok {
		t.Errorf("incoming_call data has a reason")
	}
	if _, ok := d["test"]; ok {
		t.Errorf("non-test data has test")
	}
	cancelled := samplePayload()
	cancelled.Type, cancelled.Reason = push.TypeCallCancelled, push.ReasonTimeout
	cancelled.Headers = nil
	d = push.FCMData(cancelled)
	if d["reason"] != "timeout" || d["headers"] != "{}" || d["expires_at"] != "1700000030000" {
		t.Errorf("call_cancelled data = %v", d)
	}
}

func bigHeaders(n, size int) map[string]string {
	h := map[string]string{}
	for i := range n {
		h[fmt.Sprintf("X-Header-%02d", i)] = strings.Repeat(string(rune('a'+i%26)), size+i)
	}
	return h
}

func TestPayloadTrimsHeadersFirst(t *testing.T) {
	p := samplePayload()
	p.Headers = bigHeaders(30, 300)

	body := push.APNsBody(p)
	if len(body) > push.APNsMaxPayload {
		t.Fatalf("APNs body is %d bytes, limit %d", len(body), push.APNsMaxPayload)
	}
	m := decodeAPNs(t, body)
	if m["caller_name"] != p.CallerName || m["decline_url"] != p.DeclineURL {
		t.Errorf("strings were cut although dropping headers was enough: %v", m)
	}
	kept := m["headers"].(map[string]any)
	if len(kept) == 0 || len(kept) == len(p.Headers) {
		t.Errorf("kept %d of %d headers, want some dropped, some kept", len(kept), len(p.Headers))
	}
	if _, ok := kept["X-Header-29"]; ok {
		t.Errorf("the largest header was kept; want largest dropped first")
	}
	for k, v := range kept {
		if v != p.Headers[k] {
			t.Errorf("header %s was altered", k)
		}
	}

	d := push.FCMData(p)
	if n := dataSize(d); n > push.FCMMaxData {
		t.Fatalf("FCM data is %d bytes, limit %d", n, push.FCMMaxData)
	}
	if d["caller_name"] != p.CallerName {
		t.Errorf("FCM caller_name cut although dropping headers was enough")
	}
}

func TestPayloadCutsLongCallerName(t *testing.T) {
	p := samplePayload()
	p.CallerName = strings.Repeat("é", 6000) // 12,000 bytes
	p.Headers = bigHeaders(3, 100)

	body := push.APNsBody(p)
	if len(body) > push.APNsMaxPayload {
		t.Fatalf("APNs body is %d bytes, limit %d", len(body), push.APNsMaxPayload)
	}
	m := decodeAPNs(t, body)
	name := m["caller_name"].(string)
	if name == "" || !strings.HasPrefix(p.CallerName, name) || !utf8.ValidString(name) {
		t.Errorf("caller_name = %d bytes, want a valid UTF-8 prefix of the original", len(name))
	}
	if len(m["headers"].(map[string]any)) != 0 {
		t.Errorf("headers kept while the caller name had to be cut")
	}
	if m["call_id"] != callUUID || m["decline_url"] != p.DeclineURL || m["registrar"] != p.Registrar {
		t.Errorf("fields other than the caller name were cut: %v", m)
	}
	if len(body) < push.APNsMaxPayload-8 {
		t.Errorf("body is %d bytes: cut more than needed", len(body))
	}

	d := push.FCMData(p)
	if n := dataSize(d); n > push.FCMMaxData {
		t.Fatalf("FCM data is %d bytes, limit %d", n, push.FCMMaxData)
	}
	if !strings.HasPrefix(p.CallerName, d["caller_name"]) || d["caller_name"] == "" || d["call_id"] != callUUID {
		t.Errorf("FCM caller_name not a prefix, or other fields cut")
	}
}

func TestOversizedPayloadIsDeliveredNotRejected(t *testing.T) {
	apns := newAPNsEnv(t, false)
	fcm := newFCMEnv(t)
	p, _ := newPusher(t, fcm.options(apns.options(testOptions())), newFakeStore(), nil)
	payload := samplePayload()
	payload.CallerName = strings.Repeat("Bartholomew ", 1000)
	payload.Headers = bigHeaders(20, 500)

	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs), fcmTarget(2)}, payloadFunc(payload), time.Now().Add(5*time.Second))
	for _, r := range res {
		if r.Outcome != push.OutcomeDelivered {
			t.Errorf("%s: result = %+v, want delivered", r.Target.Provider, r)
		}
	}
	if n := len(apns.prod.Requests()[0].Body); n > push.APNsMaxPayload {
		t.Errorf("APNs body sent is %d bytes", n)
	}
}

// dataSize is the data's JSON size, which is at least what FCM counts.
func dataSize(d map[string]string) int {
	b, _ := json.Marshal(d)
	return len(b)
}

func fuzzPayload(typ, callID, name, number, callee, url, reason, hkey, hval string, nHeaders uint8, sentAt int64, test bool) push.Payload {
	headers := map[string]string{}
	for i := range int(nHeaders % 40) {
		headers[fmt.Sprintf("%s-%d", hkey, i)] = strings.Repeat(hval, i%7+1)
	}
	return push.Payload{
		Type: typ, CallID: callID, SIPCallID: callID + "@pbx", CallerName: name, CallerNumber: number,
		Callee: callee, SentAt: time.UnixMilli(sentAt), ExpiresAt: time.UnixMilli(sentAt).Add(time.Minute),
		DeclineURL: url, Registrar: "sip:" + callee + "@example.com", Reason: reason, Headers: headers, Test: test,
	}
}

func addSeeds(f *testing.F) {
	f.Add("incoming_call", callUUID, "Alice", "+1555", "1001", "https://x/d?a=1&b=2", "", "X-Id", "42", uint8(2), int64(1_700_000_000_000), false)
	f.Add("call_cancelled", callUUID, strings.Repeat("é", 3000), "<script>", "1001", "", "caller_hangup", "X", strings.Repeat("\u2028", 200), uint8(39), int64(0), true)
	f.Add("incoming_call", strings.Repeat("\xff", 5000), "\x00\x01", "", "", strings.Repeat("&", 2000), "", "", "", uint8(0), int64(-1), true)
}

var requiredKeys = []string{"type", "call_id", "sip_call_id", "caller_name", "caller_number", "callee", "sent_at", "expires_at", "decline_url", "registrar", "headers"}

func FuzzAPNsBody(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, typ, callID, name, number, callee, url, reason, hkey, hval string, nHeaders uint8, sentAt int64, test bool) {
		p := fuzzPayload(typ, callID, name, number, callee, url, reason, hkey, hval, nHeaders, sentAt, test)
		body := push.APNsBody(p)
		if !json.Valid(body) {
			t.Fatalf("invalid JSON: %q", body)
		}
		if len(body) > push.APNsMaxPayload {
			t.Fatalf("body is %d bytes, limit %d", len(body), push.APNsMaxPayload)
		}
		m := decodeAPNs(t, body)
		for _, k := range requiredKeys {
			if _, ok := m[k]; !ok {
				t.Fatalf("key %q missing", k)
			}
		}
		if _, ok := m["headers"].(map[string]any); !ok {
			t.Fatalf("headers is %T, want an object", m["headers"])
		}
		if _, ok := m["sent_at"].(float64); !ok {
			t.Fatalf("sent_at is %T, want a number", m["sent_at"])
		}
		if _, ok := m["reason"]; ok != (m["type"] == push.TypeCallCancelled) {
			t.Fatalf("reason present = %v for type %q", ok, m["type"])
		}
		if (m["test"] == "true") != test {
			t.Fatalf("test = %v, want %v", m["test"], test)
		}
	})
}

func FuzzFCMData(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, typ, callID, name, number, callee, url, reason, hkey, hval string, nHeaders uint8, sentAt int64, test bool) {
		p := fuzzPayload(typ, callID, name, number, callee, url, reason, hkey, hval, nHeaders, sentAt, test)
		d := push.FCMData(p)
		if n := dataSize(d); n > push.FCMMaxData {
			t.Fatalf("data is %d bytes as JSON, limit %d", n, push.FCMMaxData)
		}
		for _, k := range requiredKeys {
			if _, ok := d[k]; !ok {
				t.Fatalf("key %q missing", k)
			}
		}
		var headers map[string]string
		if err := json.Unmarshal([]byte(d["headers"]), &headers); err != nil {
			t.Fatalf("headers %q is not a JSON object: %v", d["headers"], err)
		}
		if _, err := strconv.ParseInt(d["sent_at"], 10, 64); err != nil {
			t.Fatalf("sent_at = %q, want Unix milliseconds", d["sent_at"])
		}
		if (d["test"] == "true") != test {
			t.Fatalf("test = %q, want %v", d["test"], test)
		}
	})
}
