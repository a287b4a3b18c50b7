package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/config"
	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/sip"
	"github.com/callwake/callwake/sip/upstream"
)

// sipSide is the SIP service, the phones' registrar and the bridge, wired
// together.
type sipSide struct {
	service   *sip.Service
	registrar *sip.Registrar
	bridge    *bridge.Bridge
	bound     []sip.Listener
}

func startSIP(ctx context.Context, cfg *config.Config, store *db.Store, pusher bridge.Pusher, logger *slog.Logger, reg prometheus.Registerer) (*sipSide, error) {
	declineSecret, err := store.Secret(ctx, "decline")
	if err != nil {
		return nil, err
	}
	nonceSecret, err := store.Secret(ctx, "nonce")
	if err != nil {
		return nil, err
	}
	declineBase := cfg.HTTP.PublicURL
	if declineBase == "" {
		declineBase = "http://" + cfg.HTTP.Listen
		logger.Warn("http.public_url is empty: decline URLs in pushes point at http.listen, which phones cannot reach", "url", declineBase)
	}
	b, err := bridge.New(bridge.Config{
		Store: store, Pusher: pusher, Domain: cfg.Realm(),
		RingTimeout: cfg.Calls.RingTimeout.Std(), WakeTimeout: cfg.Calls.WakeTimeout.Std(),
		TimeoutStatus: cfg.Calls.TimeoutStatus, BusyOnBusy: cfg.Calls.BusyOnBusy,
		MaxDevices: cfg.Devices.MaxPerExtension, ForwardHeaders: cfg.Push.ForwardHeaders,
		DeclineBaseURL: declineBase, DeclineSecret: declineSecret, Logger: logger, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}

	var svc *sip.Service
	registrar, err := sip.NewRegistrar(sip.RegistrarConfig{
		Domain: cfg.Realm(), Credentials: b, Handler: b, NonceSecret: nonceSecret, Logger: logger,
		DigestAlgorithms: cfg.SIP.DigestAlgorithms,
		ConnAlive:        func(transport, addr string) bool { return sip.ConnAliveFunc(svc.TransportLayer())(transport, addr) },
	})
	if err != nil {
		return nil, fmt.Errorf("starting registrar: %w", err)
	}
	var tlsConfig *tls.Config
	if cfg.SIP.TLSCertFile.Path != "" {
		cert, err := tls.LoadX509KeyPair(cfg.SIP.TLSCertFile.Path, cfg.SIP.TLSKeyFile.Path)
		if err != nil {
			return nil, fmt.Errorf("sip.tls_cert_file: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	listeners := make([]sip.Listener, 0, len(cfg.SIP.Listen))
	for _, l := range cfg.SIP.Listen {
		listeners = append(listeners, sip.Listener{Transport: l.Transport, Addr: l.Addr})
	}
	trusted := make([]netip.Prefix, 0, len(cfg.PBX.Trusted))
	for _, p := range cfg.PBX.Trusted {
		trusted = append(trusted, p.Prefix)
	}
	svc, err = sip.NewService(sip.ServiceConfig{
		Listeners: listeners, PublicHost: cfg.SIP.PublicHost, TLSConfig: tlsConfig,
		Trusted: trusted, TrunkUsername: cfg.PBX.TrunkUsername, TrunkPassword: string(cfg.PBX.TrunkPassword),
		Realm: cfg.Realm(), Registrar: registrar, Calls: b, Logger: logger, Draining: b.Draining,
	})
	if err != nil {
		return nil, err
	}
	bound, err := svc.Start(ctx)
	if err != nil {
		return nil, err
	}
	b.Attach(svc, registrar, registrarURIFor(svc, bound))
	return &sipSide{service: svc, registrar: registrar, bridge: b, bound: bound}, nil
}

// registrarURIFor is the URI pushes tell apps to register to: the most
// secure stream transport callwake listens on.
func registrarURIFor(svc *sip.Service, bound []sip.Listener) string {
	for _, t := range []string{"tls", "tcp", "wss", "ws", "udp"} {
		for _, l := range bound {
			if strings.EqualFold(l.Transport, t) {
				c := svc.Contact(t)
				c.User = ""
				return c.String()
			}
		}
	}
	return ""
}

// startRegisterMode builds register mode: callwake registers to the PBX as
// every extension with PBX credentials. With none, it only watches the store.
func startRegisterMode(cfg *config.Config, store *db.Store, side *sipSide, logger *slog.Logger, reg prometheus.Registerer) (*bridge.RegisterMode, error) {
	var rm *bridge.RegisterMode
	manager, err := upstream.New(upstream.Config{
		Client:           side.service.Client(),
		DefaultRegistrar: cfg.PBX.Registrar,
		Expires:          cfg.PBX.RegisterExpires.Std(),
		Logger:           logger,
		Registerer:       reg,
		// The Contact's user is the extension: the PBX's INVITE to it names
		// the extension in its Request-URI, as in trunk mode.
		Contact: func(ext string) sipgo.Uri {
			c := side.service.Contact(rm.Transport(ext))
			c.User = ext
			return c
		},
	})
	if err != nil {
		return nil, fmt.Errorf("starting register mode: %w", err)
	}
	rm = bridge.NewRegisterMode(bridge.RegisterModeConfig{
		Manager: manager, Store: store, Logger: logger, DefaultRegistrar: cfg.PBX.Registrar,
		Trust: side.service.TrustHosts,
	})
	if cfg.PBX.Registrar != "" {
		logger.Info("register mode on", "registrar", cfg.PBX.Registrar, "expires", cfg.PBX.RegisterExpires.Std())
	}
	return rm, nil
}
