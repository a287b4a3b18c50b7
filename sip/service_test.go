package sip

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "callwake.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"callwake.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// Every transport of sip.listen serves SIP: OPTIONS (a PBX's qualify) gets
// 200 over each.
func TestServiceListensOnEveryTransport(t *testing.T) {
	serverTLS, roots := selfSignedTLS(t)
	svc, err := NewService(ServiceConfig{
		Listeners: []Listener{{"udp", "127.0.0.1:0"}, {"tcp", "127.0.0.1:0"}, {"tls", "127.0.0.1:0"},
			{"ws", "127.0.0.1:0"}, {"wss", "127.0.0.1:0"}},
		TLSConfig: serverTLS, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Logger: quietLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bound, err := svc.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if len(bound) != 5 {
		t.Fatalf("bound %v", bound)
	}
	ua, _ := sipgo.NewUA(sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: roots, ServerName: "callwake.test"}))
	defer ua.Close()
	client, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	for _, l := range bound {
		t.Run(l.Transport, func(t *testing.T) {
			host, portStr, _ := net.SplitHostPort(l.Addr)
			port, _ := strconv.Atoi(portStr)
			uri := sip.Uri{Scheme: "sip", Host: host, Port: port, UriParams: sip.NewParams()}
			if l.Transport != "udp" {
				uri.UriParams.Add("transport", l.Transport)
			}
			req := sip.NewRequest(sip.OPTIONS, uri)
			req.SetTransport(l.Transport)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := client.Do(ctx, req)
			if err != nil {
				t.Fatalf("OPTIONS over %s: %v", l.Transport, err)
			}
			if res.StatusCode != 200 || res.GetHeader("Allow") == nil {
				t.Fatalf("OPTIONS over %s = %d", l.Transport, res.StatusCode)
			}
			if c := svc.Contact(l.Transport); c.Port != port {
				t.Errorf("Contact for %s = %s", l.Transport, c.String())
			}
		})
	}
}

func TestServiceRefusesTLSWithoutCertificate(t *testing.T) {
	svc, err := NewService(ServiceConfig{Listeners: []Listener{{"tls", "127.0.0.1:0"}}, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.Start(context.Background()); err == nil {
		t.Fatal("TLS listener started without a certificate")
	}
}
