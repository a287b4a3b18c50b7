package push

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Push types, as in the contract's "type" key.
const (
	TypeIncomingCall  = "incoming_call"
	TypeCallCancelled = "call_cancelled"
)

// Reasons carried by a call_cancelled push.
const (
	ReasonCallerHangup      = "caller_hangup"
	ReasonAnsweredElsewhere = "answered_elsewhere"
	ReasonDeclinedElsewhere = "declined_elsewhere"
	ReasonTimeout           = "timeout"
)

// Provider size limits. FCM counts only the data map; we measure it as
// its JSON encoding, which is never smaller than what FCM counts.
const (
	APNsMaxPayload = 5120 // APNs VoIP push body, bytes
	FCMMaxData     = 4096 // FCM data payload, bytes
)

// Payload is what a push tells the app about a call.
type Payload struct {
	Type         string // TypeIncomingCall or TypeCallCancelled
	CallID       string // callwake's call UUID (the CallKit UUID)
	SIPCallID    string
	CallerName   string
	CallerNumber string
	Callee       string
	SentAt       time.Time // serialized as Unix milliseconds
	ExpiresAt    time.Time // serialized as Unix milliseconds
	DeclineURL   string
	Registrar    string
	Reason       string            // only sent on call_cancelled
	Headers      map[string]string // forwarded INVITE headers
	Test         bool              // adds "test": "true"
}

// apnsBody fixes the key order of the APNs JSON body.
type apnsBody struct {
	Type         string            `json:"type"`
	CallID       string            `json:"call_id"`
	SIPCallID    string            `json:"sip_call_id"`
	CallerName   string            `json:"caller_name"`
	CallerNumber string            `json:"caller_number"`
	Callee       string            `json:"callee"`
	SentAt       int64             `json:"sent_at"`
	ExpiresAt    int64             `json:"expires_at"`
	DeclineURL   string            `json:"decline_url"`
	Registrar    string            `json:"registrar"`
	Reason       *string           `json:"reason,omitempty"`
	Headers      map[string]string `json:"headers"`
	Test         string            `json:"test,omitempty"`
}

// APNsBody returns the JSON body of an APNs VoIP push: the contract's keys at
// top level, timestamps as numbers, headers as an object. It is never larger
// than APNsMaxPayload: forwarded headers are dropped first, then long strings
// (caller name first) are cut.
func APNsBody(p Payload) []byte {
	_, body := fit(p, APNsMaxPayload, encodeAPNs)
	return body
}

// FCMData returns the data map of an FCM push: the same keys as APNsBody,
// every value a string, headers as a JSON string. Its JSON encoding is never
// larger than FCMMaxData.
func FCMData(p Payload) map[string]string {
	fitted, _ := fit(p, FCMMaxData, encodeFCM)
	return fcmData(fitted)
}

func encodeAPNs(p Payload) []byte {
	b := apnsBody{
		Type:         p.Type,
		CallID:       p.CallID,
		SIPCallID:    p.SIPCallID,
		CallerName:   p.CallerName,
		CallerNumber: p.CallerNumber,
		Callee:       p.Callee,
		SentAt:       unixMilli(p.SentAt),
		ExpiresAt:    unixMilli(p.ExpiresAt),
		DeclineURL:   p.DeclineURL,
		Registrar:    p.Registrar,
		Headers:      p.Headers,
	}
	if b.Headers == nil {
		b.Headers = map[string]string{}
	}
	if p.Type == TypeCallCancelled {
		b.Reason = &p.Reason
	}
	if p.Test {
		b.Test = "true"
	}
	return marshal(b)
}

func fcmData(p Payload) map[string]string {
	headers := p.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	d := map[string]string{
		"type":          p.Type,
		"call_id":       p.CallID,
		"sip_call_id":   p.SIPCallID,
		"caller_name":   p.CallerName,
		"caller_number": p.CallerNumber,
		"callee":        p.Callee,
		"sent_at":       strconv.FormatInt(unixMilli(p.SentAt), 10),
		"expires_at":    strconv.FormatInt(unixMilli(p.ExpiresAt), 10),
		"decline_url":   p.DeclineURL,
		"registrar":     p.Registrar,
		"headers":       string(marshal(headers)),
	}
	if p.Type == TypeCallCancelled {
		d["reason"] = p.Reason
	}
	if p.Test {
		d["test"] = "true"
	}
	return d
}

func encodeFCM(p Payload) []byte { return marshal(fcmData(p)) }

// marshal encodes like json.Marshal, HTML escaping included: apns2
// re-encodes the body that way, so the size measured here is the size sent.
// Strings and string maps cannot fail to encode (invalid UTF-8 becomes
// U+FFFD).
func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte("{}")
	}
	return b
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fit shrinks p until encode(p) is at most limit bytes: forwarded headers go
// first (largest first), then strings are cut, least important first.
// Cutting n raw bytes shrinks the encoding by at least n bytes, so one cut
// per field suffices.
func fit(p Payload, limit int, encode func(Payload) []byte) (Payload, []byte) {
	b := encode(p)
	if len(b) <= limit {
		return p, b
	}
	if len(p.Headers) > 0 {
		p.Headers, b = dropHeaders(p, b, limit, encode)
		if len(b) <= limit {
			return p, b
		}
	}
	for _, field := range []*string{
		&p.CallerName, &p.CallerNumber, &p.Callee, &p.SIPCallID,
		&p.Registrar, &p.DeclineURL, &p.Reason, &p.Type, &p.CallID,
	} {
		excess := len(b) - limit
		if excess <= 0 {
			break
		}
		*field = truncate(*field, len(*field)-excess)
		b = encode(p)
	}
	return p, b
}

// dropHeaders removes headers, largest encoded first, until encode fits
// limit or none is left. Each header's share of the encoding is measured
// alone, so the whole payload is encoded only to confirm.
func dropHeaders(p Payload, b []byte, limit int, encode func(Payload) []byte) (map[string]string, []byte) {
	type share struct {
		key  string
		size int
	}
	base := len(encode(Payload{}))
	shares := make([]share, 0, len(p.Headers))
	for k, v := range p.Headers {
		alone := len(encode(Payload{Headers: map[string]string{k: v}}))
		shares = append(shares, share{k, alone - base + 1}) // +1: the separating comma
	}
	slices.SortFunc(shares, func(a, b share) int {
		if c := cmp.Compare(b.size, a.size); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	headers := maps.Clone(p.Headers)
	p.Headers = headers
	excess := len(b) - limit
	for _, sh := range shares {
		delete(headers, sh.key)
		if excess -= sh.size; excess <= 0 {
			if b = encode(p); len(b) <= limit {
				return headers, b
			}
			excess = len(b) - limit
		}
	}
	return headers, encode(p)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
