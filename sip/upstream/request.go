package upstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// target is an account resolved against the Config: where to register and
// as whom.
type target struct {
	username  string
	password  string
	registrar sip.Uri // the Request-URI: no user part (RFC 3261 10.2)
	aor       sip.Uri // To and From: sip:<username>@<registrar host>
}

// resolve checks an account and works out its target.
func resolve(acc Account, defaultRegistrar string) (target, error) {
	t := target{username: acc.Username, password: acc.Password}
	if t.username == "" {
		t.username = acc.Ext
	}
	raw := strings.TrimSpace(acc.Registrar)
	if raw == "" {
		raw = strings.TrimSpace(defaultRegistrar)
	}
	if raw == "" {
		return t, errors.New("no registrar: set pbx.registrar or the extension's own")
	}
	lower := strings.ToLower(raw)
	if !strings.HasPrefix(lower, "sip:") && !strings.HasPrefix(lower, "sips:") {
		raw = "sip:" + raw
	}
	var uri sip.Uri
	if err := sip.ParseUri(raw, &uri); err != nil {
		return t, fmt.Errorf("parsing registrar %q: %w", raw, err)
	}
	if uri.Host == "" {
		return t, fmt.Errorf("registrar %q has no host", raw)
	}
	uri.User, uri.Password, uri.Headers = "", "", nil
	t.registrar = uri
	t.aor = sip.Uri{Scheme: uri.Scheme, User: t.username, Host: uri.Host}
	return t, nil
}

// sameBinding reports whether two targets name the same binding at the same
// registrar, so that one can refresh what the other registered.
func (t target) sameBinding(o target) bool {
	return t.username == o.username && t.registrar.String() == o.registrar.String()
}

// binding is what ties the REGISTERs of one binding together (RFC 3261
// 10.2.4): one Call-ID, one From tag, a CSeq that only goes up.
type binding struct {
	callID  string
	fromTag string
	cseq    uint32
}

func newBinding() binding {
	return binding{callID: sip.GenerateTagN(24), fromTag: sip.GenerateTagN(16)}
}

// newRegister builds the next REGISTER of the binding.
func (b *binding) newRegister(t target, contact sip.Uri, expires int, auth []sip.Header) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, *t.registrar.Clone())
	from := sip.FromHeader{Address: *t.aor.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", b.fromTag)
	to := sip.ToHeader{Address: *t.aor.Clone(), Params: sip.NewParams()}
	callID := sip.CallIDHeader(b.callID)
	b.cseq++
	maxForwards := sip.MaxForwardsHeader(70)
	// Always the one Contact of ours with expires, never "*": an
	// un-REGISTER must not take the desk phone's binding of the same AoR.
	ct := sip.ContactHeader{Address: contact, Params: sip.NewParams()}
	ct.Params.Add("expires", strconv.Itoa(expires))
	req.AppendHeader(&from)
	req.AppendHeader(&to)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: b.cseq, MethodName: sip.REGISTER})
	req.AppendHeader(&maxForwards)
	req.AppendHeader(&ct)
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	for _, h := range auth {
		req.AppendHeader(h)
	}
	req.SetBody(nil)
	return req
}

const userAgent = "callwake"

// maxAuthRounds bounds the challenges answered in one exchange: one from a
// proxy, one from the registrar, one stale nonce.
const maxAuthRounds = 3

// exchange sends a REGISTER for the binding and answers digest challenges.
// It returns the final response that is not a challenge, or an error:
// errCredentialsRejected when a challenge came back for credentials that
// were just sent.
func (m *Manager) exchange(ctx context.Context, b *binding, ext string, t target, expires int) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	var creds credentials
	for round := 0; ; round++ {
		req := b.newRegister(t, m.cfg.Contact(ext), expires, creds.headers())
		res, err := m.cfg.Client.Do(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("sending REGISTER to %s: %w", t.registrar.String(), err)
		}
		if res.StatusCode != sip.StatusUnauthorized && res.StatusCode != sip.StatusProxyAuthRequired {
			return res, nil
		}
		if round == maxAuthRounds {
			return res, fmt.Errorf("%d %s after %d challenges: %w", res.StatusCode, res.Reason, round, errCredentialsRejected)
		}
		if err := creds.answer(req, res, t); err != nil {
			return res, err
		}
	}
}

// grantedExpiry is the expiry the registrar granted in a 2xx: the expires
// of our Contact, else the Expires header, else what was asked for.
func grantedExpiry(res *sip.Response, ours sip.Uri, requested int) int {
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || !sameContact(c.Address, ours) {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
				return n
			}
		}
	}
	if n, ok := intHeader(res, "Expires"); ok {
		return n
	}
	return requested
}

func sameContact(a, b sip.Uri) bool {
	return a.User == b.User && strings.EqualFold(a.Host, b.Host) && portOf(a) == portOf(b)
}

func portOf(u sip.Uri) int {
	if u.Port != 0 {
		return u.Port
	}
	if u.IsEncrypted() {
		return 5061
	}
	if t, ok := u.UriParams.Get("transport"); ok && strings.EqualFold(t, "tls") {
		return 5061
	}
	return 5060
}

// intHeader is a header's value as a number of seconds: Expires,
// Min-Expires, Retry-After (whose comment and parameters are ignored).
func intHeader(res *sip.Response, name string) (int, bool) {
	h := res.GetHeader(name)
	if h == nil {
		return 0, false
	}
	v := strings.TrimSpace(h.Value())
	if i := strings.IndexAny(v, " ;("); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}

func seconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
