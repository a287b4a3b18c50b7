package sip

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// okReply lists every current binding with the seconds it has left, and,
// as RFC 8599 5 asks, a Feature-Caps sip.pns for each push service accepted.
func (r *Registrar) okReply(req *sip.Request, bindings map[string]*Binding, updates []contactUpdate, now time.Time) *sip.Response {
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	current := make([]*Binding, 0, len(bindings))
	for _, b := range bindings {
		current = append(current, b)
	}
	slices.SortFunc(current, compareBindings)
	for _, b := range current {
		c := &sip.ContactHeader{Address: *b.Contact.Clone(), Params: sip.NewParams()}
		c.Params.Add("expires", strconv.Itoa(secondsLeft(b.Expires, now)))
		if b.Instance != "" {
			c.Params.Add("+sip.instance", `"<`+b.Instance+`>"`)
		}
		if b.RegID != "" {
			c.Params.Add("reg-id", b.RegID)
		}
		res.AppendHeader(c)
	}
	var pns []string
	for _, u := range updates {
		if u.rfc8599 && u.expires > 0 {
			for _, t := range u.targets {
				if !contains(pns, t.Provider) {
					pns = append(pns, t.Provider)
					res.AppendHeader(sip.NewHeader("Feature-Caps", `*;+sip.pns="`+t.Provider+`"`))
				}
			}
		}
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(http.TimeFormat)))
	return res
}

func secondsLeft(expires, now time.Time) int {
	return int((expires.Sub(now) + time.Second - 1) / time.Second)
}

func reply(req *sip.Request, code int, reason string) *sip.Response {
	return sip.NewResponseFromRequest(req, code, reason, nil)
}

// errorReply answers with a handler's error: its *StatusError code, or 500
// with the error's text as reason phrase.
func errorReply(req *sip.Request, err error) *sip.Response {
	var se *StatusError
	if errors.As(err, &se) && se.Code >= 300 && se.Code <= 699 {
		reason := se.Reason
		if reason == "" {
			reason = defaultReason(se.Code)
		}
		return reply(req, se.Code, reasonPhrase(reason))
	}
	return reply(req, sip.StatusInternalServerError, reasonPhrase(err.Error()))
}

func defaultReason(code int) string {
	switch code {
	case sip.StatusBadRequest:
		return "Bad Request"
	case sip.StatusForbidden:
		return "Forbidden"
	case sip.StatusNotFound:
		return "Not Found"
	case sip.StatusTemporarilyUnavailable:
		return "Temporarily Unavailable"
	case sip.StatusServiceUnavailable:
		return "Service Unavailable"
	}
	return "Error"
}

// reasonPhrase makes text safe for a status line: one line, bounded.
func reasonPhrase(text string) string {
	const maxLen = 120
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	if len(text) > maxLen {
		text = strings.ToValidUTF8(text[:maxLen], "")
	}
	return strings.TrimSpace(text)
}

// warning is a Warning header (RFC 3261 20.43) telling the phone's
// developer what was wrong.
func warning(text string) sip.Header {
	text = strings.ReplaceAll(reasonPhrase(text), `"`, `'`)
	return sip.NewHeader("Warning", `399 callwake "`+text+`"`)
}
