package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	gopkcs12 "software.sslmate.com/src/go-pkcs12"
)

// DeviceToken returns a well-formed APNs device token (64 hex digits) that
// is the same for the same n.
func DeviceToken(n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("device-%d", n)))
	return hex.EncodeToString(sum[:])
}

// APNsKey is a test APNs auth key (.p8) written to Path.
type APNsKey struct {
	Path   string
	Key    *ecdsa.PrivateKey
	KeyID  string
	TeamID string
}

// WriteAPNsKey makes an ECDSA P-256 key and writes it to dir as Apple
// delivers a .p8: PKCS#8 in a "PRIVATE KEY" PEM block.
func WriteAPNsKey(tb testing.TB, dir string) APNsKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("pushtest: generate APNs key: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("pushtest: marshal APNs key: %v", err)
	}
	path := filepath.Join(dir, "AuthKey_ABC123DEFG.p8")
	writeFile(tb, path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return APNsKey{Path: path, Key: key, KeyID: "ABC123DEFG", TeamID: "DEF123GHIJ"}
}

// ClientCert is a test APNs client certificate signed by its own CA.
type ClientCert struct {
	Leaf    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
	CAs     *x509.CertPool // for APNsMockConfig.ClientCAs
}

// NewClientCert makes a CA and a client certificate it signs, named like
// Apple's ("Apple VoIP Services: <topic>").
func NewClientCert(tb testing.TB, topic string) ClientCert {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("pushtest: generate CA key: %v", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pushtest Apple Worldwide Developer Relations CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("pushtest: create CA: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatalf("pushtest: parse CA: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("pushtest: generate client key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "Apple VoIP Services: " + topic, OrganizationalUnit: []string{"DEF123GHIJ"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("pushtest: create client certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("pushtest: parse client certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("pushtest: marshal client key: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return ClientCert{
		Leaf:    leaf,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CAs:     pool,
	}
}

// WritePEM writes the certificate and its key to one PEM file, as APNs
// certificates are usually kept.
func (c ClientCert) WritePEM(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "apns-cert.pem")
	writeFile(tb, path, append(append([]byte{}, c.CertPEM...), c.KeyPEM...))
	return path
}

// WriteP12 writes the certificate and key as a password-protected .p12 in
// the legacy encoding (3DES) that Keychain exports and apns2 reads.
func (c ClientCert) WriteP12(tb testing.TB, dir, password string) string {
	tb.Helper()
	return c.writeP12(tb, filepath.Join(dir, "apns-cert.p12"), gopkcs12.LegacyDES, password)
}

// WriteModernP12 writes a .p12 in the modern encoding (PBES2, AES-256),
// which newer tools export.
func (c ClientCert) WriteModernP12(tb testing.TB, dir, password string) string {
	tb.Helper()
	return c.writeP12(tb, filepath.Join(dir, "apns-cert-modern.p12"), gopkcs12.Modern2023, password)
}

func (c ClientCert) writeP12(tb testing.TB, path string, enc *gopkcs12.Encoder, password string) string {
	tb.Helper()
	data, err := enc.Encode(c.Key, c.Leaf, nil, password)
	if err != nil {
		tb.Fatalf("pushtest: encode .p12: %v", err)
	}
	writeFile(tb, path, data)
	return path
}

// ServiceAccount is a test FCM service-account key written to Path.
type ServiceAccount struct {
	Path        string
	Key         *rsa.PrivateKey
	ProjectID   string
	ClientEmail string
}

var (
	saKeyOnce sync.Once
	saKey     *rsa.PrivateKey
	saKeyErr  error
)

// WriteServiceAccount writes a service-account JSON for projectID whose
// token_uri is tokenURL (FCMMock.TokenURL), with a fresh RSA key (made
// once per test binary: RSA generation is slow).
func WriteServiceAccount(tb testing.TB, dir, projectID, tokenURL string) ServiceAccount {
	tb.Helper()
	saKeyOnce.Do(func() { saKey, saKeyErr = rsa.GenerateKey(rand.Reader, 2048) })
	if saKeyErr != nil {
		tb.Fatalf("pushtest: generate service account key: %v", saKeyErr)
	}
	der, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		tb.Fatalf("pushtest: marshal service account key: %v", err)
	}
	email := "callwake-push@" + projectID + ".iam.gserviceaccount.com"
	data, err := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  projectID,
		"private_key_id":              "0123456789abcdef0123456789abcdef01234567",
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                email,
		"client_id":                   "100000000000000000001",
		"auth_uri":                    "https://accounts.google.invalid/o/oauth2/auth",
		"token_uri":                   tokenURL,
		"auth_provider_x509_cert_url": "https://www.googleapis.invalid/oauth2/v1/certs",
	}, "", "  ")
	if err != nil {
		tb.Fatalf("pushtest: marshal service account: %v", err)
	}
	path := filepath.Join(dir, "service-account.json")
	writeFile(tb, path, data)
	return ServiceAccount{Path: path, Key: saKey, ProjectID: projectID, ClientEmail: email}
}

func writeFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatalf("pushtest: write %s: %v", path, err)
	}
}
