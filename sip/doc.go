// Package sip is callwake's phone-facing SIP layer: the registrar that mobile
// apps REGISTER to, digest authentication, and the parsing of the push
// parameters (RFC 8599 and Linphone's forms) that apps put in their Contact.
//
// The package knows nothing of APNs, FCM or SQL. Like livekit/sip's Handler,
// it calls interfaces that the bridge package implements:
//
//   - [CredentialStore] gives the stored digest hashes of an extension;
//   - [RegisterHandler] is told of every binding a phone adds, refreshes or
//     removes, so that the bridge can upsert or delete the device behind it
//     and fork a ringing call to it.
//
// A [Registrar] is mounted on a sipgo server:
//
//	reg, err := sip.NewRegistrar(sip.RegistrarConfig{Domain: "pbx.example.com", ...})
//	srv.OnRegister(reg.HandleRegister)
//
// Bindings live in memory only. Devices (push targets) are the bridge's to
// persist: a binding that expires, or that is lost when callwake restarts, is
// not a device removal; only a REGISTER with expires 0 is.
package sip
