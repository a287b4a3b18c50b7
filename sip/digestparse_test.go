package sip

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/icholy/digest"
)

func TestParseCredentials(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want credentials
		bad  bool
	}{
		{in: `Digest username="1001", realm="example.com", nonce="abc", uri="sip:example.com", ` +
			`response="0123abcd", algorithm=SHA-256, cnonce="xyz", qop=auth, nc=00000001, opaque="o"`,
			want: credentials{Username: "1001", Realm: "example.com", Nonce: "abc", URI: "sip:example.com",
				Response: "0123abcd", Algorithm: "SHA-256", Cnonce: "xyz", QOP: "auth", Nc: "00000001"}},
		// Tabs, no spaces after commas, case-insensitive names and scheme,
		// escapes, a quoted qop (as some phones send it).
		{in: "digest\tUsername=\"a\\\"b\",REALM = r,qop=\"auth\"",
			want: credentials{Username: `a"b`, Realm: "r", QOP: "auth"}},
		{in: `Digest username="a",username="b"`, want: credentials{Username: "b"}},
		{in: `Digest`, want: credentials{}},
		{in: `Basic dXNlcjpwYXNz`, bad: true},
		{in: `Digest username="unterminated`, bad: true},
		{in: `Digest username="a" realm="r"`, bad: true},
		{in: `Digest username`, bad: true},
		{in: `Digest username=`, bad: true},
		{in: `Digest nc=zz`, bad: true},
		{in: `Digest username="a\"`, bad: true},
	} {
		got, err := parseCredentials(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q:\n got %+v, %v\nwant %+v", tc.in, got, err, tc.want)
		}
	}
}

// Where both parse a header, parseCredentials reads what icholy/digest
// (the parser used before) reads. icholy/digest also takes empty names and
// values, which parseCredentials refuses.
func FuzzParseCredentials(f *testing.F) {
	f.Add(`digest username="1001", realm="example.com", nonce="abc", uri="sip:example.com", response="0123abcd", algorithm=md5, cnonce="xyz", qop=auth, nc=00000001`)
	f.Add(`Digest username="a\"b", realm="r"`)
	f.Add(`Digest nc=1`)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseCredentials(in)
		old, oldErr := digest.ParseCredentials(in)
		if oldErr != nil || err != nil || strings.ToLower(in) != in {
			return // icholy/digest matches names case-sensitively
		}
		want := credentials{Username: old.Username, Realm: old.Realm, Nonce: old.Nonce, URI: old.URI,
			Response: old.Response, Algorithm: old.Algorithm, Cnonce: old.Cnonce, QOP: old.QOP, Nc: got.Nc}
		if got != want {
			t.Fatalf("%q:\n got %+v\nwant %+v", in, got, want)
		}
		if got.Nc != "" {
			n, _ := strconv.ParseUint(got.Nc, 16, 32)
			if fmt.Sprint(n) != fmt.Sprint(old.Nc) {
				t.Fatalf("%q: nc %s, icholy %d", in, got.Nc, old.Nc)
			}
		}
	})
}
