// Package pushtest has local stand-ins for APNs and FCM, shared by the push
// tests, benchmarks and callwake's integration tests: no test ever reaches
// Apple or Google.
//
// APNsMock is an HTTP/2 TLS server that checks what APNs checks (path,
// headers, the provider JWT or the client certificate, the payload size),
// records every push and answers what a test scripts, per device token or
// for all: a status and reason, a delay, or a sequence such as 503 then 200.
// FCMMock does the same for FCM HTTP v1 (messages:send, the message shape,
// the v1 error JSON) and serves the OAuth2 token endpoint a service account
// file points at.
//
// The credential helpers write a test .p8 key, a client certificate (PEM and
// .p12) and a service-account JSON, all made on the spot.
package pushtest
