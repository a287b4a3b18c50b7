package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/callwake/callwake/internal/workers"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Listener is one address to serve SIP on.
type Listener struct {
	Transport string // udp, tcp, tls, ws, wss
	Addr      string // host:port; port 0 picks a free one
}

// CallHandler takes new calls: the bridge implements it.
type CallHandler interface {
	// OnInvite is called on its own goroutine for each new INVITE that
	// passed the trunk checks. The handler owns the call from then on: it
	// must give it a final answer, and call Release once it no longer needs
	// the transaction. It need not block until then: a ringing call
	// need hold no goroutine (see InboundCall.OnDone).
	OnInvite(call *InboundCall)
}

// ServiceConfig configures the SIP service.
type ServiceConfig struct {
	Listeners  []Listener
	PublicHost string // host for Contact and Via; default: the listener's address
	TLSConfig  *tls.Config
	UserAgent  string

	// Trunk mode: INVITEs from Trusted sources pass; others are challenged
	// when TrunkUsername is set, refused with 403 otherwise.
	Trusted       []netip.Prefix
	TrunkUsername string
	TrunkPassword string
	Realm         string

	Registrar *Registrar // phones' REGISTERs; nil answers 405
	Calls     CallHandler
	Logger    *slog.Logger

	// Draining, when it returns true, makes new INVITEs get 503.
	Draining func() bool
}

// Service is callwake's SIP endpoint: the registrar for phones, the UAS for
// the PBX's INVITEs and the UAC toward the phones, with the dialogs that
// join them.
type Service struct {
	cfg    ServiceConfig
	log    *slog.Logger
	ua     *sipgo.UserAgent
	routes map[sip.RequestMethod]route
	client *sipgo.Client
	trunk  *DigestAuth

	trustedHosts atomic.Pointer[map[netip.Addr]struct{}] // register mode's registrars

	mu       sync.Mutex
	contacts map[string]*sip.Uri // transport (lower case) -> our Contact; never modified
	dialogs  map[string]*Dialog  // Call-ID + our tag
	conns    []closer
}

type closer interface{ Close() error }

type route func(req *sip.Request, tx sip.ServerTransaction)

// NewService builds the SIP service; Start listens.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "callwake"
	}
	log := cfg.Logger.With("component", "sip")
	s := &Service{cfg: cfg, log: log, contacts: map[string]*sip.Uri{}, dialogs: map[string]*Dialog{}}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(cfg.UserAgent), sipgo.WithUserAgenTLSConfig(cfg.TLSConfig),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerUnhandledResponseHandler(s.onUnhandledResponse)))
	if err != nil {
		return nil, fmt.Errorf("creating SIP user agent: %w", err)
	}
	s.ua = ua
	ua.TransactionLayer().OnRequest(s.handleRequest)
	if cfg.TrunkUsername != "" {
		ha1 := Credentials{Realm: cfg.Realm,
			HA1MD5:    HA1(AlgorithmMD5, cfg.TrunkUsername, cfg.Realm, cfg.TrunkPassword),
			HA1SHA256: HA1(AlgorithmSHA256, cfg.TrunkUsername, cfg.Realm, cfg.TrunkPassword)}
		s.trunk, err = NewDigestAuth(DigestConfig{Realm: cfg.Realm, Logger: log,
			Store: staticCredentials{user: cfg.TrunkUsername, creds: ha1}})
		if err != nil {
			return nil, err
		}
	}
	s.routes = map[sip.RequestMethod]route{
		sip.ACK: s.onAck, sip.BYE: s.inDialog, sip.INFO: s.inDialog, sip.UPDATE: s.inDialog,
		sip.REFER: s.inDialog, sip.NOTIFY: s.inDialog, sip.MESSAGE: s.inDialog,
		sip.CANCEL: func(req *sip.Request, tx sip.ServerTransaction) {
			// A CANCEL that matched its INVITE was answered by the transaction
			// layer; this one matched nothing.
			s.respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		},
		sip.OPTIONS: func(req *sip.Request, tx sip.ServerTransaction) {
			res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
			res.AppendHeader(sip.NewHeader("Allow", allowedMethods))
			res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
			_ = tx.Respond(res)
		},
	}
	if cfg.Registrar != nil {
		s.routes[sip.REGISTER] = cfg.Registrar.HandleRegister
	}
	return s, nil
}

// handleRequest takes every request the transaction layer passes up: it
// stands for sipgo's Server, which terminates a server transaction when its
// handler returns without a final answer. A ringing call would then keep
// its handler's goroutine parked, with that goroutine's deep stack (sipgo's
// frames under callwake's), for the whole ring; here a new INVITE handed to
// the CallHandler is the call's to finish (InboundCall.Release), and the
// handler may return.
//
// sipgo calls it on a new goroutine per request, whose small stack the
// registrar and a call's handling would grow: the request is handled on a
// kept one (internal/workers).
func (s *Service) handleRequest(req *sip.Request, tx *sip.ServerTx) {
	workers.Go(func() { s.handle(req, tx) })
}

func (s *Service) handle(req *sip.Request, tx *sip.ServerTx) {
	if req.IsInvite() {
		if s.onInvite(req, tx) {
			return
		}
	} else if handle, ok := s.routes[req.Method]; ok {
		handle(req, tx)
	} else {
		res := sip.NewResponseFromRequest(req, sip.StatusMethodNotAllowed, "Method Not Allowed", nil)
		res.AppendHeader(sip.NewHeader("Allow", allowedMethods))
		_ = tx.Respond(res)
	}
	// As sipgo's Server: a transaction with no final answer ends here; one
	// with an answer stays for its retransmission timers.
	if tx != nil {
		tx.TerminateGracefully()
	}
}

// udpReadBuffer is the receive buffer asked for each UDP listener.
const udpReadBuffer = 4 << 20

const allowedMethods = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, REFER, NOTIFY, MESSAGE"

// Start listens on every listener and serves until ctx ends. It returns the
// bound addresses (transport:host:port) once every listener is up.
func (s *Service) Start(ctx context.Context) ([]Listener, error) {
	var bound []Listener
	for _, l := range s.cfg.Listeners {
		addr, err := s.listen(ctx, l)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("sip.listen %s:%s: %w", l.Transport, l.Addr, err)
		}
		bound = append(bound, Listener{Transport: l.Transport, Addr: addr})
		s.log.Info("SIP listening", "transport", l.Transport, "addr", addr)
	}
	client, err := sipgo.NewClient(s.ua, sipgo.WithClientLogger(s.log), sipgo.WithClientHostname(s.contactHost("udp")))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("creating SIP client: %w", err)
	}
	s.client = client
	return bound, nil
}

func (s *Service) listen(ctx context.Context, l Listener) (string, error) {
	t := strings.ToLower(l.Transport)
	var addr string
	switch t {
	case "udp":
		conn, err := net.ListenPacket("udp", l.Addr)
		if err != nil {
			return "", err
		}
		addr = conn.LocalAddr().String()
		// Bursts of INVITEs and REGISTERs outrun the default socket buffer
		// (the load harness saw drops): ask for more; the kernel caps it at
		// net.core.rmem_max.
		if udp, ok := conn.(*net.UDPConn); ok {
			_ = udp.SetReadBuffer(udpReadBuffer)
		}
		s.track(conn)
		go s.serve(ctx, t, func() error { return s.ua.TransportLayer().ServeUDP(conn) })
	default:
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			return "", err
		}
		addr = ln.Addr().String()
		tp := s.ua.TransportLayer()
		serveFn := map[string]func(net.Listener) error{"tcp": tp.ServeTCP, "ws": tp.ServeWS,
			"tls": tp.ServeTLS, "wss": tp.ServeWSS}[t]
		if t == "tls" || t == "wss" {
			if s.cfg.TLSConfig == nil {
				ln.Close()
				return "", errors.New("no TLS certificate configured")
			}
			ln = tls.NewListener(ln, s.cfg.TLSConfig)
		}
		if serveFn == nil {
			ln.Close()
			return "", fmt.Errorf("unknown transport %q", l.Transport)
		}
		s.track(ln)
		go s.serve(ctx, t, func() error { return serveFn(ln) })
	}
	host, port, _ := net.SplitHostPort(addr)
	if s.cfg.PublicHost != "" {
		host = s.cfg.PublicHost
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = outboundIP()
	}
	uri := sip.Uri{Scheme: "sip", User: "callwake", Host: host, UriParams: sip.NewParams(), Headers: sip.NewParams()}
	fmt.Sscan(port, &uri.Port)
	if t != "udp" {
		uri.UriParams.Add("transport", t)
	}
	s.mu.Lock()
	if _, ok := s.contacts[t]; !ok {
		s.contacts[t] = &uri
	}
	s.mu.Unlock()
	return addr, nil
}

func (s *Service) serve(ctx context.Context, transport string, fn func() error) {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case <-ctx.Done():
	case err := <-done:
		if err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("SIP listener stopped", "transport", transport, "err", err)
		}
	}
}

func (s *Service) track(c closer) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

// Close stops the listeners and the user agent.
func (s *Service) Close() error {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if s.client != nil {
		s.client.Close()
	}
	return s.ua.Close()
}

// TrustHosts sets the hosts, besides sip.trusted, whose INVITEs pass the
// trunk check: in register mode, the PBX that callwake registers to sends
// the calls. Names are resolved now; a name that does not resolve is
// skipped with a warning.
func (s *Service) TrustHosts(ctx context.Context, hosts []string) {
	set := map[netip.Addr]struct{}{}
	for _, h := range hosts {
		if ip, err := netip.ParseAddr(h); err == nil {
			set[ip.Unmap()] = struct{}{}
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		if err != nil {
			s.log.Warn("cannot resolve PBX registrar: its INVITEs are not trusted", "host", h, "err", err)
			continue
		}
		for _, ip := range ips {
			set[ip.Unmap()] = struct{}{}
		}
	}
	s.trustedHosts.Store(&set)
}

// Client is the SIP client the service sends with (register mode uses it).
func (s *Service) Client() *sipgo.Client { return s.client }

// TransportLayer is the shared transport layer (connection liveness).
func (s *Service) TransportLayer() *sip.TransportLayer { return s.ua.TransportLayer() }

// Contact is callwake's Contact URI for a transport (udp when unknown).
func (s *Service) Contact(transport string) sip.Uri {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.contactLocked(strings.ToLower(transport)); u != nil {
		return *u.Clone()
	}
	return sip.Uri{Scheme: "sip", User: "callwake", Host: "127.0.0.1"}
}

// contactLocked finds the Contact for a lower-case transport, else for udp
// or tcp, else any; nil before any listener.
func (s *Service) contactLocked(transport string) *sip.Uri {
	if u, ok := s.contacts[transport]; ok {
		return u
	}
	for _, fallback := range []string{"udp", "tcp"} {
		if u, ok := s.contacts[fallback]; ok {
			return u
		}
	}
	for _, u := range s.contacts {
		return u
	}
	return nil
}

func (s *Service) contactHost(transport string) string { return s.Contact(transport).Host }

// outboundIP is this host's first global unicast address, for a listener
// bound to 0.0.0.0 with no public_host.
func outboundIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

func (s *Service) respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, headers ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range headers {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		s.log.Debug("responding failed", "code", code, "err", err)
	}
}

type staticCredentials struct {
	user  string
	creds Credentials
}

func (c staticCredentials) PhoneCredentials(_ context.Context, user string) (Credentials, bool, error) {
	return c.creds, user == c.user, nil
}
