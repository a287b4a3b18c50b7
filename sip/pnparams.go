package sip

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Push providers, as written in pn-provider (RFC 8599) and in PushTarget.
const (
	ProviderAPNs        = "apns"
	ProviderAPNsSandbox = "apns.dev" // Linphone's name for the APNs sandbox
	ProviderFCM         = "fcm"
)

// Limits of a valid push target.
const (
	apnsTokenLen    = 64 // hex characters of a 32-byte APNs device token
	fcmTokenMaxLen  = 4096
	projectIDMaxLen = 256
	voipSuffix      = ".voip"
)

var (
	// ErrNoPushParams means the Contact carries no push parameters at all:
	// an ordinary SIP binding.
	ErrNoPushParams = errors.New("no push parameters in contact")
	// ErrUnsupportedProvider means the Contact names a push service that
	// callwake cannot send to (RFC 8599 answers such a REGISTER with 555).
	ErrUnsupportedProvider = errors.New("push notification service not supported")
	// ErrNoVoIPPush means the push parameters are well formed but name no
	// VoIP push token: only an APNs "remote" (alert) token, which cannot wake
	// a killed app with CallKit. The binding is kept without push targets.
	ErrNoVoIPPush = errors.New("push parameters carry no VoIP push token")
	// ErrInvalidPushParams is wrapped by every error about malformed push
	// parameters; the message says which parameter and why.
	ErrInvalidPushParams = errors.New("invalid push parameters")
)

// PushTarget is one address callwake can send a VoIP push to.
//
// For APNs (Provider "apns" or "apns.dev") Token is the 64-hex PushKit token
// in lower case and Topic is "<bundle-id>.voip". For FCM, Token is the
// registration token and ProjectID the Firebase project from pn-param
// (empty when the app did not send one: the configured project applies).
type PushTarget struct {
	Provider  string
	Token     string
	Topic     string
	ProjectID string
}

// ParsePushParams reads the push parameters of a REGISTER Contact, from its
// URI parameters or, failing those, its header parameters. Values may be
// quoted or percent-encoded (Linphone sends "&" as "%26" in some versions).
//
// Three forms are understood:
//   - RFC 8599: pn-provider, pn-param, pn-prid.
//   - Linphone's multi-service form of RFC 8599:
//     pn-prid=<tok>:voip&<tok2>:remote;pn-param=<TeamID>.<bundle>.voip&remote.
//     Only the VoIP token is a push target: the "remote" (alert) token cannot
//     start CallKit, so it is dropped.
//   - Linphone's legacy form: pn-type (apple, firebase, google, android),
//     app-id, pn-tok. An Apple app-id is "<bundle>.voip", optionally followed
//     by ".prod" or ".dev" (the sandbox).
//
// When both forms are present, RFC 8599 wins. The errors are
// [ErrNoPushParams], [ErrUnsupportedProvider], [ErrNoVoIPPush] and errors
// wrapping [ErrInvalidPushParams]. Every target returned passes
// [PushTarget.Validate].
func ParsePushParams(contact *sip.ContactHeader) ([]PushTarget, error) {
	if contact == nil || contact.Address.Wildcard {
		return nil, ErrNoPushParams
	}
	params := contactParams{uri: contact.Address.UriParams, header: contact.Params}

	provider, hasProvider, err := params.get("pn-provider")
	if err != nil {
		return nil, err
	}
	if hasProvider {
		return parseRFC8599(provider, params)
	}
	pnType, hasType, err := params.get("pn-type")
	if err != nil {
		return nil, err
	}
	if hasType {
		return parseLegacy(pnType, params)
	}
	for _, name := range []string{"pn-prid", "pn-param", "pn-tok"} {
		if params.has(name) {
			return nil, invalidf("%s without pn-provider", name)
		}
	}
	return nil, ErrNoPushParams
}

// Validate reports whether t is a push target callwake can send to.
func (t PushTarget) Validate() error {
	switch t.Provider {
	case ProviderAPNs, ProviderAPNsSandbox:
		if err := validateAPNsToken(t.Token); err != nil {
			return err
		}
		if t.Token != strings.ToLower(t.Token) {
			return invalidf("APNs token is not lower case")
		}
		bundle, ok := strings.CutSuffix(t.Topic, voipSuffix)
		if !ok || !validBundleID(bundle) {
			return invalidf("APNs topic %q is not <bundle-id>.voip", t.Topic)
		}
		if t.ProjectID != "" {
			return invalidf("APNs target has a project id")
		}
	case ProviderFCM:
		if err := validateFCMToken(t.Token); err != nil {
			return err
		}
		if t.Topic != "" {
			return invalidf("FCM target has a topic")
		}
		if err := validateProjectID(t.ProjectID); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: %q", ErrUnsupportedProvider, t.Provider)
	}
	return nil
}

func parseRFC8599(provider string, params contactParams) ([]PushTarget, error) {
	provider = strings.ToLower(provider)
	prid, _, err := params.get("pn-prid")
	if err != nil {
		return nil, err
	}
	param, _, err := params.get("pn-param")
	if err != nil {
		return nil, err
	}
	switch provider {
	case ProviderAPNs, ProviderAPNsSandbox:
		return parseAPNs(provider, param, prid)
	case ProviderFCM:
		return finish(PushTarget{Provider: ProviderFCM, Token: prid, ProjectID: param})
	case "":
		return nil, invalidf("empty pn-provider")
	default:
		return nil, fmt.Errorf("%w: pn-provider %q", ErrUnsupportedProvider, provider)
	}
}

// parseAPNs reads pn-param "<TeamID>.<bundle-id>.<services>", services being
// "voip", "remote" or both joined by "&", and pn-prid, one token per service,
// each suffixed ":<service>" (the suffix may be left out of a lone token).
func parseAPNs(provider, param, prid string) ([]PushTarget, error) {
	if param == "" {
		return nil, invalidf("pn-param missing for %s", provider)
	}
	team, rest, ok := strings.Cut(param, ".")
	if !ok || !isAlnum(team) {
		return nil, invalidf("pn-param %q is not <TeamID>.<bundle-id>.voip", param)
	}
	bundle, serviceList := rest, ""
	if i := strings.LastIndexByte(rest, '.'); i >= 0 {
		bundle, serviceList = rest[:i], rest[i+1:]
	}
	services, ok := splitServices(strings.ToLower(serviceList))
	if !ok {
		// No service suffix: an alert-push topic (Flexisip reads it the same way).
		bundle, services = rest, []string{"remote"}
	}
	if !validBundleID(bundle) {
		return nil, invalidf("pn-param %q has an invalid bundle id", param)
	}
	if prid == "" {
		return nil, invalidf("pn-prid missing for %s", provider)
	}

	tokens := strings.Split(prid, "&")
	if len(tokens) != len(services) {
		return nil, invalidf("pn-param names %d service(s) but pn-prid has %d token(s)", len(services), len(tokens))
	}
	voipToken := ""
	var seen []string
	for _, tok := range tokens {
		service := ""
		if i := strings.LastIndexByte(tok, ':'); i >= 0 {
			tok, service = tok[:i], strings.ToLower(tok[i+1:])
		}
		switch {
		case service == "" && len(tokens) == 1:
			service = services[0]
		case service != "voip" && service != "remote":
			return nil, invalidf("pn-prid token has service %q, want voip or remote", service)
		}
		if !contains(services, service) {
			return nil, invalidf("pn-prid has a %s token that pn-param does not name", service)
		}
		if contains(seen, service) {
			return nil, invalidf("pn-prid has two %s tokens", service)
		}
		seen = append(seen, service)
		if service == "voip" {
			voipToken = tok
		}
	}
	if !contains(services, "voip") {
		return nil, fmt.Errorf("%w: pn-param %q", ErrNoVoIPPush, param)
	}
	return finish(PushTarget{Provider: provider, Token: strings.ToLower(voipToken), Topic: bundle + voipSuffix})
}

func parseLegacy(pnType string, params contactParams) ([]PushTarget, error) {
	appID, _, err := params.get("app-id")
	if err != nil {
		return nil, err
	}
	token, _, err := params.get("pn-tok")
	if err != nil {
		return nil, err
	}
	if token == "" {
		return nil, invalidf("pn-tok missing for pn-type %q", pnType)
	}
	switch strings.ToLower(pnType) {
	case "apple":
		provider := ProviderAPNs
		topic := appID
		if t, ok := strings.CutSuffix(topic, ".prod"); ok {
			topic = t
		} else if t, ok := strings.CutSuffix(topic, ".dev"); ok {
			topic, provider = t, ProviderAPNsSandbox
		}
		if topic == "" {
			return nil, invalidf("app-id missing for pn-type apple")
		}
		if !strings.HasSuffix(topic, voipSuffix) {
			return nil, fmt.Errorf("%w: app-id %q", ErrNoVoIPPush, appID)
		}
		return finish(PushTarget{Provider: provider, Token: strings.ToLower(token), Topic: topic})
	case "firebase", "google", "android":
		return finish(PushTarget{Provider: ProviderFCM, Token: token, ProjectID: appID})
	default:
		return nil, fmt.Errorf("%w: pn-type %q", ErrUnsupportedProvider, pnType)
	}
}

func finish(t PushTarget) ([]PushTarget, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return []PushTarget{t}, nil
}

// splitServices splits "voip&remote"; ok is false unless every part is a
// known service, named once.
func splitServices(s string) ([]string, bool) {
	parts := strings.Split(s, "&")
	for i, p := range parts {
		if (p != "voip" && p != "remote") || contains(parts[:i], p) {
			return nil, false
		}
	}
	return parts, true
}

func validateAPNsToken(tok string) error {
	if len(tok) != apnsTokenLen {
		return invalidf("APNs token has %d characters, want %d hex digits", len(tok), apnsTokenLen)
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return invalidf("APNs token is not hexadecimal")
		}
	}
	return nil
}

func validateFCMToken(tok string) error {
	if tok == "" {
		return invalidf("empty FCM token")
	}
	if len(tok) > fcmTokenMaxLen {
		return invalidf("FCM token is %d bytes, more than %d", len(tok), fcmTokenMaxLen)
	}
	if !isPrintable(tok) {
		return invalidf("FCM token has a character that is not printable ASCII")
	}
	return nil
}

func validateProjectID(id string) error {
	if len(id) > projectIDMaxLen {
		return invalidf("FCM project id is longer than %d bytes", projectIDMaxLen)
	}
	if !isPrintable(id) {
		return invalidf("FCM project id has a character that is not printable ASCII")
	}
	return nil
}

// validBundleID follows Apple's rule: letters, digits, hyphens and periods.
func validBundleID(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnumByte(c) || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnumByte(s[i]) {
			return false
		}
	}
	return true
}

func isAlnumByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// isPrintable is true for visible ASCII: no spaces, controls or UTF-8.
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPushParams, fmt.Sprintf(format, args...))
}

// contactParams looks a push parameter up in the Contact URI, then in the
// Contact header parameters. Names compare case-insensitively (RFC 3261
// 19.1.4).
type contactParams struct {
	uri, header sip.HeaderParams
}

func (p contactParams) has(name string) bool {
	_, ok := lookupParam(p.uri, name)
	if !ok {
		_, ok = lookupParam(p.header, name)
	}
	return ok
}

// get returns the unquoted, percent-decoded value of name.
func (p contactParams) get(name string) (string, bool, error) {
	raw, ok := lookupParam(p.uri, name)
	if !ok {
		raw, ok = lookupParam(p.header, name)
	}
	if !ok {
		return "", false, nil
	}
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' {
		raw = raw[1 : len(raw)-1]
	}
	v, err := url.PathUnescape(raw)
	if err != nil {
		return "", true, invalidf("%s: bad percent-encoding: %v", name, err)
	}
	return strings.TrimSpace(v), true, nil
}

func lookupParam(params sip.HeaderParams, name string) (string, bool) {
	for _, kv := range params {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}
