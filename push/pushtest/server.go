package pushtest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// tlsServer is what the APNs and FCM mocks share: an HTTP/2 server over TLS
// on loopback that counts its connections and stops once.
type tlsServer struct {
	URL string

	srv    *httptest.Server
	closed chan struct{}
	notify notifier
	conns  atomic.Int64
}

// start serves h until the test ends; tlsConfig (may be nil) is the
// server's TLS configuration, e.g. for client certificates.
func (s *tlsServer) start(tb testing.TB, h http.Handler, tlsConfig *tls.Config) {
	s.closed = make(chan struct{})
	s.srv = httptest.NewUnstartedServer(h)
	s.srv.EnableHTTP2 = true
	s.srv.TLS = tlsConfig
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
			s.notify.wake()
		}
	}
	s.srv.StartTLS()
	s.URL = s.srv.URL
	tb.Cleanup(s.Close)
}

// Close stops the mock; pending delayed answers return at once.
func (s *tlsServer) Close() {
	select {
	case <-s.closed:
		return
	default:
	}
	close(s.closed)
	s.srv.Close()
}

// ClientTLS returns a TLS configuration that trusts the mock (for the
// TLSConfig of push.APNsOptions or push.FCMOptions).
func (s *tlsServer) ClientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// RootCAPEM is the mock's certificate as PEM, for a callwake process
// started by a test: point SSL_CERT_FILE at it.
func (s *tlsServer) RootCAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Conns counts the TCP connections accepted.
func (s *tlsServer) Conns() int { return int(s.conns.Load()) }
