// Package upstream is register mode's client side: callwake REGISTERs to the
// customer's PBX as each mobile extension that has PBX credentials, so that
// the PBX sends that extension's calls to callwake.
//
// A [Manager] keeps one registration per [Account]. [Manager.Sync] sets the
// accounts (at start-up, and again whenever extensions are provisioned);
// [Manager.Run] drives them until its context ends, then removes every
// binding it may hold.
//
//	mgr, err := upstream.New(upstream.Config{Client: svc.Client(), DefaultRegistrar: cfg.PBX.Registrar,
//		Contact: func(ext string) sip.Uri { c := svc.Contact("udp"); c.User = ext; return c }})
//	mgr.Sync(accounts)
//	go mgr.Run(ctx) // return before the SIP service closes: the un-REGISTERs need it
//
// # The REGISTER
//
// To and From are sip:<username>@<registrar host>; the Contact is
// Config.Contact(ext), whose user part is the extension, so the PBX's INVITE
// arrives with the extension in its Request-URI. One Call-ID and From tag
// per binding, CSeq always up (RFC 3261 10.2.4); the Contact carries
// expires, next to an Expires header and User-Agent: callwake. Digest
// challenges in 401 (WWW-Authenticate) and 407 (Proxy-Authenticate) are
// answered, MD5 or SHA-256 (the stronger when both are offered), over a
// fresh challenge each time: nothing is sent pre-emptively. A challenge for
// credentials just sent means a wrong username or password, unless it is
// marked stale. An un-REGISTER names our Contact with expires 0, never "*",
// which would also remove the desk phone registered as the same user.
//
// # Refresh and back-off
//
//   - Success: refresh before the granted expiry (our Contact's expires in
//     the 2xx, else its Expires header, else what was asked): at half of a
//     grant up to two minutes, a minute before the end of a longer one (a
//     UDP transaction can take 32s), shortened by up to Jitter (20%) so
//     that accounts drift apart.
//   - 423 Interval Too Brief: at once again with the Min-Expires value,
//     which is kept for later refreshes.
//   - 403, 404 or a wrong password: status "failing" with the reason, next
//     try after RejectedBackoff (30m). Retrying sooner changes nothing and
//     gets callwake's address banned by fail2ban-style protection. A Sync
//     that changes the account tries again at once.
//   - Any other failure (5xx, timeout, transport error): exponential
//     back-off from RetryInitial (2s) doubling up to RetryMax (5m), with
//     jitter, and no sooner than the answer's Retry-After (capped too).
//   - An account that cannot be used (no registrar, unparsable registrar)
//     is "disabled": nothing is sent until Sync changes it.
//
// New accounts, at start-up or from Sync, get start slots StartInterval
// (20ms) apart, so a thousand extensions do not REGISTER in one burst.
//
// # Changes and shutdown
//
// Sync re-registers a changed account at once, over the same binding when
// only the password changed; when the registrar or username changed, the
// old binding is un-registered first and a new Call-ID starts. A removed
// account is un-registered. When Run's context ends, every account that may
// be bound (a 2xx not yet expired, or a REGISTER that got no answer) is
// un-registered, all at once, within ShutdownTimeout (5s).
//
// # What is not here
//
// The PBX's OPTIONS keepalives (qualify) to the Contact and its INVITEs
// reach callwake's SIP service, which answers them: this package only
// sends REGISTERs. Metrics: callwake_upstream_registrations{status} and
// callwake_upstream_register_attempts_total{result}.
package upstream
