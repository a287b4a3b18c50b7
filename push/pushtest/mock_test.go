package pushtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"golang.org/x/net/http2"
)

func signAPNsJWT(t *testing.T, key APNsKey, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": key.TeamID, "iat": time.Now().Unix()})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAPNsMockChecksLikeAPNs(t *testing.T) {
	key := WriteAPNsKey(t, t.TempDir())
	m := NewAPNsMock(t, APNsMockConfig{AuthKey: &key.Key.PublicKey, KeyID: key.KeyID, TeamID: key.TeamID})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(m.RootCAPEM()) {
		t.Fatal("RootCAPEM is not a PEM certificate")
	}
	client := &http.Client{Transport: &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	good := signAPNsJWT(t, key, key.KeyID)

	type req struct {
		token, bearer, pushType, topic string
		body                           []byte
	}
	valid := req{DeviceToken(1), good, "voip", "com.example.app.voip", []byte(`{"type":"incoming_call"}`)}
	cases := []struct {
		name   string
		edit   func(*req)
		status int
		reason string
	}{
		{"valid", func(*req) {}, 200, ""},
		{"no bearer", func(r *req) { r.bearer = "" }, 403, "MissingProviderToken"},
		{"wrong kid", func(r *req) { r.bearer = signAPNsJWT(t, key, "OTHERKEY00") }, 403, "InvalidProviderToken"},
		{"forged", func(r *req) { r.bearer = good[:len(good)-4] + "AAAA" }, 403, "InvalidProviderToken"},
		{"not hex", func(r *req) { r.token = "not-a-token" }, 400, "BadDeviceToken"},
		{"alert push type", func(r *req) { r.pushType = "alert" }, 400, "InvalidPushType"},
		{"topic without .voip", func(r *req) { r.topic = "com.example.app" }, 400, "InvalidPushType"},
		{"no topic", func(r *req) { r.topic = "" }, 400, "MissingTopic"},
		{"too large", func(r *req) { r.body = bytes.Repeat([]byte("x"), APNsMaxPayload+1) }, 413, "PayloadTooLarge"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := valid
			c.edit(&r)
			httpReq, _ := http.NewRequest(http.MethodPost, m.URL+"/3/device/"+r.token, bytes.NewReader(r.body))
			if r.bearer != "" {
				httpReq.Header.Set("authorization", "bearer "+r.bearer)
			}
			httpReq.Header.Set("apns-push-type", r.pushType)
			if r.topic != "" {
				httpReq.Header.Set("apns-topic", r.topic)
			}
			resp, err := client.Do(httpReq)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Reason string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != c.status || body.Reason != c.reason {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body.Reason, c.status, c.reason)
			}
		})
	}

	// A scripted sequence: in order, then the last repeats.
	m.Respond(DeviceToken(2), APNsResponse{Status: 503, Reason: "ServiceUnavailable"}, APNsResponse{})
	for i, want := range []int{503, 200, 200} {
		httpReq, _ := http.NewRequest(http.MethodPost, m.URL+"/3/device/"+DeviceToken(2), strings.NewReader(`{}`))
		httpReq.Header.Set("authorization", "bearer "+good)
		httpReq.Header.Set("apns-push-type", "voip")
		httpReq.Header.Set("apns-topic", "com.example.app.voip")
		resp, err := client.Do(httpReq)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("push %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
}

func TestFCMMockChecksLikeFCM(t *testing.T) {
	m := NewFCMMock(t, FCMMockConfig{ProjectID: "p1"})
	sa := m.WriteServiceAccount(t, t.TempDir())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: m.ClientTLS(), ForceAttemptHTTP2: true}}

	// The JWT-bearer grant, signed with the service account's key.
	assertion := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": sa.ClientEmail, "aud": m.TokenURL(), "scope": "https://www.googleapis.com/auth/firebase.messaging",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	signed, err := assertion.SignedString(sa.Key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.PostForm(m.TokenURL(), url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {signed}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 200 || tok.AccessToken == "" {
		t.Fatalf("token endpoint: %d %+v", resp.StatusCode, tok)
	}

	send := func(project, bearer, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, m.Endpoint()+"/projects/"+project+"/messages:send", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	good := `{"message":{"token":"t1","data":{"type":"incoming_call"},"android":{"priority":"high","ttl":"30s"}}}`
	cases := []struct {
		name, project, bearer, body string
		status                      int
	}{
		{"valid", "p1", tok.AccessToken, good, 200},
		{"unknown bearer", "p1", "ya29.forged", good, 401},
		{"other project", "p2", tok.AccessToken, good, 403},
		{"non-string data", "p1", tok.AccessToken, `{"message":{"token":"t1","data":{"sent_at":17}}}`, 400},
		{"bad ttl", "p1", tok.AccessToken, `{"message":{"token":"t1","android":{"ttl":"30"}}}`, 400},
		{"no token", "p1", tok.AccessToken, `{"message":{"data":{}}}`, 400},
		{"data too big", "p1", tok.AccessToken, `{"message":{"token":"t1","data":{"x":"` + strings.Repeat("y", FCMMaxData) + `"}}}`, 400},
	}
	for _, c := range cases {
		if status, _ := send(c.project, c.bearer, c.body); status != c.status {
			t.Errorf("%s: status %d, want %d", c.name, status, c.status)
		}
	}

	// Scripted FCM v1 errors carry the FcmError detail.
	m.Respond("t2", FCMResponse{Code: 404, ErrorCode: "UNREGISTERED", Message: "Requested entity was not found."})
	status, out := send("p1", tok.AccessToken, strings.Replace(good, `"t1"`, `"t2"`, 1))
	e, _ := out["error"].(map[string]any)
	details, _ := e["details"].([]any)
	if status != 404 || e["status"] != "NOT_FOUND" || len(details) != 1 ||
		details[0].(map[string]any)["@type"] != "type.googleapis.com/google.firebase.fcm.v1.FcmError" ||
		details[0].(map[string]any)["errorCode"] != "UNREGISTERED" {
		t.Errorf("scripted error = %d %v", status, out)
	}
	if n := m.Sends(); n != 2 {
		t.Errorf("Sends = %d, want the 2 valid messages", n)
	}
}
