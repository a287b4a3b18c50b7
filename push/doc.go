// Package push sends callwake's VoIP pushes: APNs (PushKit, via
// sideshow/apns2) and FCM HTTP v1 (via firebase-admin's messaging client).
// It knows nothing of SIP or SQL: the caller hands it targets (device
// tokens), a payload per target and the ring deadline, and a Store to report
// to.
//
// A Pusher keeps one long-lived HTTP/2 client per APNs endpoint (production
// for "apns", sandbox for "apns.dev") and one for FCM. They are connected at
// start-up and kept warm, and credentials (the APNs JWT, the FCM access
// token) are refreshed in the background, so that no TLS handshake and no
// signing sits on a call's path.
//
// Push fans out to every target at once. Each send carries the ring
// deadline: retryable errors (429, 5xx, timeouts, dropped connections) are
// retried with jittered back-off inside the window only, and nothing is sent
// after it. Dead tokens are removed from the Store at once; credential
// errors turn the provider unhealthy in Health until the next success. A
// provider without credentials is disabled: its pushes are logged, not sent,
// so callwake starts on a machine that has none.
//
// The payload is the contract's "Push payload" table, built by APNsBody and
// FCMData, which keep it within the providers' size limits by dropping
// forwarded headers first and then cutting long strings.
//
// Package pushtest has local APNs and FCM mock servers for tests.
package push
