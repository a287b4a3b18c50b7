package sip

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const (
	voipTok   = "EFFDB4D8C32F845036CA3555003D44E98C82EA3F8437BD3499D14A17B039D5B6"
	remoteTok = "FC86D3D61AAFCC5D18AAC9D4CEDC6C70505080693FD21D0E62B5061FD4516ADE"
	fcmTok    = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx7a_5ZzSg1dE2N0jtWvqCEWvCy-4cKbb0mG9k3pTEUKtY9W3VxN-ox4vJ1p2nQ5GmJJfXmTAGnBzqQ4Ag1nR4yC6lYf2HqbXzF8kEB"
)

func parseContact(t testing.TB, value string) *sip.ContactHeader {
	t.Helper()
	c := &sip.ContactHeader{}
	if _, err := sip.ParseAddressValue(value, &c.Address, &c.Params); err != nil {
		t.Fatalf("parsing contact %q: %v", value, err)
	}
	return c
}

func TestParsePushParams(t *testing.T) {
	lowerVoIP := strings.ToLower(voipTok)
	tests := []struct {
		name    string
		contact string
		want    []PushTarget
		wantErr error
	}{
		{
			name: "Linphone iOS voip and remote",
			contact: `<sip:1001@192.168.1.20:50412;transport=tcp;pn-prid=` + voipTok + `:voip&` + remoteTok + `:remote;pn-provider=apns;` +
				`pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;` +
				`pn-groupchat-str=GC_MSG;pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf>;` +
				`+sip.instance="<urn:uuid:8f0c2b9e-6a63-4cb4-b0fb-4a5f7e1c3e11>";+org.linphone.specs="lime,groupchat/1.1"`,
			want: []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "org.linphone.phone.voip"}},
		},
		{
			name: "Linphone iOS remote first, sandbox",
			contact: `<sip:1001@10.0.0.2;pn-provider=apns.dev;pn-prid=` + remoteTok + `:remote&` + voipTok + `:voip;` +
				`pn-param=ABCD1234.com.example.phone.remote&voip>`,
			want: []PushTarget{{Provider: "apns.dev", Token: lowerVoIP, Topic: "com.example.phone.voip"}},
		},
		{
			name: "Linphone percent-encoded ampersand",
			contact: `<sip:1001@10.0.0.2;pn-provider=apns;pn-prid=` + voipTok + `%3Avoip%26` + remoteTok + `%3Aremote;` +
				`pn-param=ABCD1234.org.linphone.phone.voip%26remote>`,
			want: []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "org.linphone.phone.voip"}},
		},
		{
			name:    "Linphone iOS voip only",
			contact: `<sip:1001@10.0.0.2;pn-provider=apns;pn-prid=` + voipTok + `:voip;pn-param=ABCD1234.org.linphone.phone.voip>`,
			want:    []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "org.linphone.phone.voip"}},
		},
		{
			name:    "RFC 8599 APNs, bare token",
			contact: `<sip:alice@alicemobile.example.com;pn-provider=apns;pn-param=DEF123GHIJ.com.example.yourexampleapp.voip;pn-prid=` + lowerVoIP + `>`,
			want:    []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "com.example.yourexampleapp.voip"}},
		},
		{
			name:    "push params as header params, quoted",
			contact: `<sip:1001@10.0.0.2:5060>;pn-provider=apns;pn-param="DEF123GHIJ.com.example.app.voip";pn-prid="` + voipTok + `";expires=600`,
			want:    []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "com.example.app.voip"}},
		},
		{
			name:    "parameter names in upper case",
			contact: `<sip:1001@10.0.0.2;PN-Provider=APNS;PN-Param=DEF123GHIJ.com.example.app.VOIP;PN-PRID=` + voipTok + `:VoIP>`,
			want:    []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "com.example.app.voip"}},
		},
		{
			name: "Linphone Android FCM",
			contact: `<sip:1001@10.0.0.5:39207;transport=tcp;pn-prid=` + fcmTok + `;pn-provider=fcm;pn-param=929724111839;pn-silent=1;pn-timeout=0>;` +
				`+sip.instance="<urn:uuid:2b0f3c1a-7d4e-4a55-9a1d-2f1e8e0b6c77>"`,
			want: []PushTarget{{Provider: "fcm", Token: fcmTok, ProjectID: "929724111839"}},
		},
		{
			name:    "FCM without project",
			contact: `<sip:1001@10.0.0.5;pn-provider=fcm;pn-prid=` + fcmTok + `>`,
			want:    []PushTarget{{Provider: "fcm", Token: fcmTok}},
		},
		{
			name:    "legacy Linphone iOS prod",
			contact: `<sip:1001@192.168.1.20;app-id=org.linphone.phone.voip.prod;pn-type=apple;pn-tok=` + voipTok + `;pn-msg-str=IM_MSG;pn-call-str=IC_MSG>`,
			want:    []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "org.linphone.phone.voip"}},
		},
		{
			name:    "legacy Linphone iOS dev",
			contact: `<sip:1001@192.168.1.20;app-id=org.linphone.phone.voip.dev;pn-type=apple;pn-tok=` + voipTok + `>`,
			want:    []PushTarget{{Provider: "apns.dev", Token: lowerVoIP, Topic: "org.linphone.phone.voip"}},
		},
		{
			name:    "legacy app-id without mode",
			contact: `<sip:1001@192.168.1.20;pn-type=apple;app-id=com.example.app.voip;pn-tok=` + voipTok + `>`,
			want:    []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "com.example.app.voip"}},
		},
		{
			name:    "legacy firebase",
			contact: `<sip:1001@10.0.0.5;pn-type=firebase;app-id=929724111839;pn-tok=` + fcmTok + `>`,
			want:    []PushTarget{{Provider: "fcm", Token: fcmTok, ProjectID: "929724111839"}},
		},
		{
			name:    "legacy google",
			contact: `<sip:1001@10.0.0.5;pn-type=google;app-id=929724111839;pn-tok=` + fcmTok + `>`,
			want:    []PushTarget{{Provider: "fcm", Token: fcmTok, ProjectID: "929724111839"}},
		},
		{
			name: "RFC 8599 wins over legacy",
			contact: `<sip:1001@10.0.0.5;pn-type=apple;app-id=org.old.voip.prod;pn-tok=` + remoteTok +
				`;pn-provider=apns;pn-param=ABCD1234.org.new.voip;pn-prid=` + voipTok + `>`,
			want: []PushTarget{{Provider: "apns", Token: lowerVoIP, Topic: "org.new.voip"}},
		},

		{name: "plain contact", contact: `<sip:1001@10.0.0.2:5060;transport=udp>;expires=600`, wantErr: ErrNoPushParams},
		{name: "wildcard", contact: `*`, wantErr: ErrNoPushParams},
		{name: "RFC 8599 example provider", contact: `<sip:alice@alicemobile.example.com;pn-provider=acme;pn-param=acme-param;pn-prid=ZTY4ZDJlMzODE1NmUgKi0K>`, wantErr: ErrUnsupportedProvider},
		{name: "webpush", contact: `<sip:1001@h;pn-provider=webpush;pn-prid=x>`, wantErr: ErrUnsupportedProvider},
		{name: "legacy windows", contact: `<sip:1001@h;pn-type=wp;app-id=x;pn-tok=y>`, wantErr: ErrUnsupportedProvider},
		{name: "remote only", contact: `<sip:1001@h;pn-provider=apns;pn-prid=` + remoteTok + `:remote;pn-param=ABCD1234.org.linphone.phone.remote>`, wantErr: ErrNoVoIPPush},
		{name: "no service suffix is remote", contact: `<sip:1001@h;pn-provider=apns;pn-prid=` + remoteTok + `;pn-param=ABCD1234.org.linphone.phone>`, wantErr: ErrNoVoIPPush},
		{name: "legacy remote", contact: `<sip:1001@h;pn-type=apple;app-id=org.linphone.phone.prod;pn-tok=` + remoteTok + `>`, wantErr: ErrNoVoIPPush},

		{name: "short APNs token", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip;pn-prid=abcdef>`, wantErr: ErrInvalidPushParams},
		{name: "non-hex APNs token", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip;pn-prid=` + strings.Repeat("g", 64) + `>`, wantErr: ErrInvalidPushParams},
		{name: "missing pn-prid", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip>`, wantErr: ErrInvalidPushParams},
		{name: "missing pn-param for APNs", contact: `<sip:1001@h;pn-provider=apns;pn-prid=` + voipTok + `>`, wantErr: ErrInvalidPushParams},
		{name: "pn-param without team", contact: `<sip:1001@h;pn-provider=apns;pn-param=voip;pn-prid=` + voipTok + `>`, wantErr: ErrInvalidPushParams},
		{name: "token count mismatch", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip;pn-prid=` + voipTok + `:voip&` + remoteTok + `:remote>`, wantErr: ErrInvalidPushParams},
		{name: "service mismatch", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip&remote;pn-prid=` + voipTok + `:voip&` + remoteTok + `:voip>`, wantErr: ErrInvalidPushParams},
		{name: "unknown service", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip;pn-prid=` + voipTok + `:CrashTest>`, wantErr: ErrInvalidPushParams},
		{name: "ambiguous bare tokens", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip&remote;pn-prid=` + voipTok + `&` + remoteTok + `>`, wantErr: ErrInvalidPushParams},
		{name: "empty FCM token", contact: `<sip:1001@h;pn-provider=fcm;pn-param=p;pn-prid=>`, wantErr: ErrInvalidPushParams},
		{name: "FCM token too long", contact: `<sip:1001@h;pn-provider=fcm;pn-prid=` + strings.Repeat("a", 4097) + `>`, wantErr: ErrInvalidPushParams},
		{name: "FCM token not printable", contact: `<sip:1001@h;pn-provider=fcm;pn-prid=abc%00def>`, wantErr: ErrInvalidPushParams},
		{name: "bad percent-encoding", contact: `<sip:1001@h;pn-provider=fcm;pn-prid=abc%zz>`, wantErr: ErrInvalidPushParams},
		{name: "empty provider", contact: `<sip:1001@h;pn-provider=;pn-prid=x>`, wantErr: ErrInvalidPushParams},
		{name: "pn-prid alone", contact: `<sip:1001@h;pn-prid=` + voipTok + `>`, wantErr: ErrInvalidPushParams},
		{name: "legacy without token", contact: `<sip:1001@h;pn-type=apple;app-id=a.voip>`, wantErr: ErrInvalidPushParams},
		{name: "legacy apple without app-id", contact: `<sip:1001@h;pn-type=apple;pn-tok=` + voipTok + `>`, wantErr: ErrInvalidPushParams},
		{name: "bundle with bad characters", contact: `<sip:1001@h;pn-provider=apns;pn-param=T.a_b.voip;pn-prid=` + voipTok + `>`, wantErr: ErrInvalidPushParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePushParams(parseContact(t, tt.contact))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("targets = %v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("targets = %+v\nwant      %+v", got, tt.want)
			}
		})
	}
}

func TestParsePushParamsErrorSaysWhy(t *testing.T) {
	_, err := ParsePushParams(parseContact(t, `<sip:1001@h;pn-provider=apns;pn-param=T.a.b.voip;pn-prid=abcdef>`))
	if err == nil || !strings.Contains(err.Error(), "APNs token has 6 characters") {
		t.Fatalf("error = %v, want it to name the token length", err)
	}
}

func TestPushTargetValidate(t *testing.T) {
	good := PushTarget{Provider: "apns", Token: strings.ToLower(voipTok), Topic: "com.example.app.voip"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid target: %v", err)
	}
	bad := []PushTarget{
		{Provider: "apns", Token: voipTok, Topic: "com.example.app.voip"}, // upper case
		{Provider: "apns", Token: strings.ToLower(voipTok), Topic: "com.example.app"},
		{Provider: "apns", Token: strings.ToLower(voipTok), Topic: "com.example.app.voip", ProjectID: "p"},
		{Provider: "fcm", Token: fcmTok, Topic: "t"},
		{Provider: "fcm", Token: "a b"},
		{Provider: "fcm", Token: fcmTok, ProjectID: "has space"},
		{Provider: "gcm", Token: fcmTok},
	}
	for _, tgt := range bad {
		if err := tgt.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", tgt)
		}
	}
}

func FuzzParsePushParams(f *testing.F) {
	seeds := []string{
		`<sip:1001@192.168.1.20:50412;transport=tcp;pn-prid=` + voipTok + `:voip&` + remoteTok + `:remote;pn-provider=apns;pn-param=ABCD1234.org.linphone.phone.voip&remote>;+sip.instance="<urn:uuid:1>"`,
		`<sip:1001@10.0.0.2;pn-provider=apns;pn-prid=` + voipTok + `%3Avoip%26` + remoteTok + `%3Aremote;pn-param=ABCD1234.org.linphone.phone.voip%26remote>`,
		`<sip:1001@10.0.0.5;pn-prid=` + fcmTok + `;pn-provider=fcm;pn-param=929724111839>`,
		`<sip:1001@h;pn-type=apple;app-id=org.linphone.phone.voip.dev;pn-tok=` + voipTok + `>`,
		`<sip:1001@h;pn-type=firebase;app-id=1;pn-tok=x>`,
		`<sip:1001@h>;pn-provider=apns;pn-param="T.a.voip";pn-prid="` + voipTok + `"`,
		`<sip:alice@alicemobile.example.com;pn-provider=acme;pn-param=acme-param;pn-prid=ZTY4ZDJlMzODE1NmUgKi0K>`,
		`*`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		c := &sip.ContactHeader{}
		if _, err := sip.ParseAddressValue(value, &c.Address, &c.Params); err != nil {
			return
		}
		targets, err := ParsePushParams(c)
		if err != nil {
			if targets != nil {
				t.Fatalf("targets %v returned with error %v", targets, err)
			}
			return
		}
		if len(targets) == 0 {
			t.Fatal("no targets and no error")
		}
		for _, tgt := range targets {
			if err := tgt.Validate(); err != nil {
				t.Fatalf("invalid target %+v returned: %v", tgt, err)
			}
		}
	})
}
