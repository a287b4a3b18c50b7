package sip

import (
	"errors"
	"strconv"
	"strings"
)

// credentials are the parameters of a Digest Authorization header (RFC
// 3261 25.1 "credentials", RFC 7616 3.4) that a check uses.
type credentials struct {
	Username, Realm, Nonce, URI, Response, Algorithm, Cnonce, QOP string
	// Nc is the nonce count as sent: 8 hex digits, hashed as they are.
	Nc string
}

// parseCredentials reads `Digest k=v, k="v", ...`. Values are slices of the
// header: one allocation-free pass, where icholy/digest's parser (used by
// the upstream client) takes a 4 KiB reader per header, which showed in
// the allocation profile of every REGISTER. Unknown parameters are
// skipped; a repeated one keeps its last value.
func parseCredentials(v string) (credentials, error) {
	var c credentials
	v = trimLWS(v)
	end := strings.IndexAny(v, " \t")
	if end < 0 {
		end = len(v)
	}
	scheme, rest := v[:end], v[end:]
	if !strings.EqualFold(scheme, "Digest") {
		return c, errors.New("not Digest credentials")
	}
	for first := true; ; first = false {
		rest = trimLWS(rest)
		if rest == "" {
			break
		}
		if !first {
			if rest[0] != ',' {
				return c, errors.New("expected ',' between parameters")
			}
			rest = trimLWS(rest[1:])
		}
		n := tokenLen(rest)
		if n == 0 {
			return c, errors.New("expected a parameter name")
		}
		key := rest[:n]
		rest = trimLWS(rest[n:])
		if rest == "" || rest[0] != '=' {
			return c, errors.New("expected '=' after " + strconv.Quote(key))
		}
		rest = trimLWS(rest[1:])
		var value string
		var err error
		if value, rest, err = paramValue(rest); err != nil {
			return c, err
		}
		switch strings.ToLower(key) {
		case "username":
			c.Username = value
		case "realm":
			c.Realm = value
		case "nonce":
			c.Nonce = value
		case "uri":
			c.URI = value
		case "response":
			c.Response = value
		case "algorithm":
			c.Algorithm = value
		case "cnonce":
			c.Cnonce = value
		case "qop":
			c.QOP = value
		case "nc":
			if _, err := strconv.ParseUint(value, 16, 32); err != nil {
				return c, errors.New("nc is not a hex number")
			}
			c.Nc = value
		}
	}
	return c, nil
}

// paramValue reads a token or a quoted string from the start of s.
func paramValue(s string) (value, rest string, err error) {
	if s != "" && s[0] == '"' {
		return quotedString(s)
	}
	n := tokenLen(s)
	if n == 0 {
		return "", s, errors.New("expected a value")
	}
	return s[:n], s[n:], nil
}

// quotedString reads a quoted string (RFC 3261 25.1) from the start of s,
// undoing backslash escapes.
func quotedString(s string) (value, rest string, err error) {
	escaped := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			escaped = true
			i++ // the escaped character, whatever it is
		case '"':
			value = s[1:i]
			if escaped {
				value = unescape(value)
			}
			return value, s[i+1:], nil
		}
	}
	return "", s, errors.New("unterminated quoted string")
}

func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tokenLen is the length of the token (RFC 3261 25.1) at the start of s.
func tokenLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-.!%*_+`'~", c) >= 0 {
			continue
		}
		return i
	}
	return len(s)
}

func trimLWS(s string) string { return strings.TrimLeft(s, " \t\r\n") }
