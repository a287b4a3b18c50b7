package sip

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// contactUpdate is what a REGISTER asks for one Contact.
type contactUpdate struct {
	contact  *sip.ContactHeader // the request's; nil for "*"
	wildcard bool
	key      string
	instance string
	regID    string
	// expires is the granted interval; 0 removes the binding.
	expires time.Duration
	targets []PushTarget
	// rfc8599 is true when the targets came from pn-provider (not from
	// Linphone's legacy pn-type), so the phone expects Feature-Caps.
	rfc8599 bool
}

// parseContacts reads the Contacts and intervals of req. A non-nil
// response is the answer to send instead (400, 423, 555).
func (r *Registrar) parseContacts(log *requestLogger, req *sip.Request) ([]contactUpdate, *sip.Response) {
	contacts, err := contactHeaders(req)
	if err != nil {
		log.Info("unparsable Contact in REGISTER", "error", err)
		return nil, reply(req, sip.StatusBadRequest, "Invalid Contact")
	}
	headerExpires, hasHeaderExpires, err := parseExpires(headerValueOf(req.GetHeader("Expires")), req.GetHeader("Expires") != nil)
	if err != nil {
		return nil, reply(req, sip.StatusBadRequest, "Invalid Expires")
	}

	updates := make([]contactUpdate, 0, len(contacts))
	tooBrief := false
	for _, c := range contacts {
		if c.Address.Wildcard {
			// RFC 3261 10.3 step 6: "*" only alone and with Expires: 0.
			if len(contacts) != 1 || !hasHeaderExpires || headerExpires != 0 {
				return nil, reply(req, sip.StatusBadRequest, "Invalid Wildcard Contact")
			}
			updates = append(updates, contactUpdate{wildcard: true})
			continue
		}
		u := contactUpdate{contact: c}
		raw, hasParam := lookupParam(c.Params, "expires")
		expires, _, err := parseExpires(raw, hasParam)
		if err != nil {
			return nil, reply(req, sip.StatusBadRequest, "Invalid Contact expires")
		}
		switch {
		case hasParam:
		case hasHeaderExpires:
			expires = headerExpires
		default:
			expires = r.defaultExpires
		}
		if expires > 0 && expires < r.minExpires {
			tooBrief = true
		}
		u.expires = min(expires, r.maxExpires)

		if v, ok := lookupParam(c.Params, "+sip.instance"); ok {
			u.instance = strings.Trim(v, `"<>`)
		}
		if v, ok := lookupParam(c.Params, "reg-id"); ok {
			u.regID = v
		}
		u.key = bindingKey(u.instance, c.Address)

		targets, err := ParsePushParams(c)
		switch {
		case err == nil:
			u.targets = targets
			_, u.rfc8599 = lookupParam(c.Address.UriParams, "pn-provider")
			if !u.rfc8599 {
				_, u.rfc8599 = lookupParam(c.Params, "pn-provider")
			}
		case errors.Is(err, ErrNoPushParams):
		case u.expires == 0:
			// Removing a binding needs no usable push address.
		case errors.Is(err, ErrNoVoIPPush):
			log.Warn("contact has push parameters but no VoIP token: it will not be pushed", "contact", c.Address.String(), "error", err)
		case errors.Is(err, ErrUnsupportedProvider):
			log.Info("REGISTER names an unsupported push service", "contact", c.Address.String(), "error", err)
			res := reply(req, StatusPushNotSupported, "Push Notification Service Not Supported")
			res.AppendHeader(warning(err.Error()))
			return nil, res
		default:
			log.Info("REGISTER has invalid push parameters", "contact", c.Address.String(), "error", err)
			res := reply(req, sip.StatusBadRequest, "Invalid Push Parameters")
			res.AppendHeader(warning(err.Error()))
			return nil, res
		}
		updates = append(updates, u)
	}
	if tooBrief {
		res := reply(req, sip.StatusIntervalToBrief, "Interval Too Brief")
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(int(r.minExpires/time.Second))))
		return nil, res
	}
	return updates, nil
}

// contactHeaders returns the Contacts of req, parsing any that sipgo kept
// as generic headers (requests built in code rather than received).
func contactHeaders(req *sip.Request) ([]*sip.ContactHeader, error) {
	var out []*sip.ContactHeader
	for _, h := range req.GetHeaders("Contact") {
		if c, ok := h.(*sip.ContactHeader); ok {
			out = append(out, c)
			continue
		}
		c := &sip.ContactHeader{}
		if strings.TrimSpace(h.Value()) == "*" {
			c.Address = sip.Uri{Host: "*", Wildcard: true}
			out = append(out, c)
			continue
		}
		name, err := sip.ParseAddressValue(h.Value(), &c.Address, &c.Params)
		if err != nil {
			return nil, fmt.Errorf("parsing Contact %q: %w", h.Value(), err)
		}
		c.DisplayName = name
		out = append(out, c)
	}
	return out, nil
}

// parseExpires reads a delta-seconds value; values past 2^32-1 count as
// that (RFC 3261 20.19), and are capped later anyway.
func parseExpires(raw string, present bool) (time.Duration, bool, error) {
	if !present {
		return 0, false, nil
	}
	raw = strings.TrimSpace(raw)
	n, err := strconv.ParseUint(raw, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		n, err = math.MaxUint32, nil
	}
	if err != nil {
		return 0, true, fmt.Errorf("expires %q: %w", raw, err)
	}
	return time.Duration(min(n, math.MaxUint32)) * time.Second, true, nil
}

// registerRequest is the authenticated REGISTER being applied.
type registerRequest struct {
	ext       string
	callID    string
	cseq      uint32
	transport string
	source    string
	now       time.Time
}

// apply updates bindings (the unexpired bindings of the extension) as the
// REGISTER asks, returning the events to report. ok is false when a
// binding it touches was registered by the same Call-ID with a CSeq at
// least as high (RFC 3261 10.3 step 7): then nothing may change.
func (rq *registerRequest) apply(bindings map[string]*Binding, updates []contactUpdate) (events []RegisterEvent, ok bool) {
	stale := func(b *Binding) bool { return b.CallID == rq.callID && rq.cseq <= b.CSeq }

	if len(updates) == 1 && updates[0].wildcard {
		for _, b := range bindings {
			if stale(b) {
				return nil, false
			}
		}
		for key, b := range bindings {
			ev := RegisterEvent{Ext: rq.ext, Binding: *b, Removed: true}
			if b.CallID == rq.callID {
				ev.Targets = b.PushTargets
			}
			events = append(events, ev)
			delete(bindings, key)
		}
		return events, true
	}

	for i := range updates {
		if b, found := bindings[updates[i].key]; found && stale(b) {
			return nil, false
		}
	}
	for i := range updates {
		u := &updates[i]
		old, found := bindings[u.key]
		b := &Binding{
			Ext:         rq.ext,
			Contact:     *u.contact.Address.Clone(),
			Instance:    u.instance,
			RegID:       u.regID,
			PushTargets: u.targets,
			Transport:   rq.transport,
			Source:      rq.source,
			Expires:     rq.now.Add(u.expires),
			CallID:      rq.callID,
			CSeq:        rq.cseq,
			Refreshed:   rq.now,
		}
		if u.expires == 0 {
			targets := u.targets
			if len(targets) == 0 && found {
				targets = old.PushTargets
			}
			delete(bindings, u.key)
			if found || len(targets) > 0 {
				events = append(events, RegisterEvent{Ext: rq.ext, Binding: *b, Removed: true, Targets: targets})
			}
			continue
		}
		ev := RegisterEvent{Ext: rq.ext, Binding: *b, Targets: u.targets, Refresh: found}
		if found {
			ev.PreviousTargets = old.PushTargets
		}
		bindings[u.key] = b
		events = append(events, ev)
	}
	return events, true
}

func headerValueOf(h sip.Header) string {
	if h == nil {
		return ""
	}
	return h.Value()
}
