package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/callwake/callwake/api"
	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/config"
	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/internal/logging"
)

type logFlags struct {
	format string
	level  string
}

func (f logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return nil, usageError("--log-level %q: use debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.format {
	case "text":
		return slog.New(logging.Lazy(slog.NewTextHandler(w, opts))), nil
	case "json":
		return slog.New(logging.Lazy(slog.NewJSONHandler(w, opts))), nil
	}
	return nil, usageError("--log-format %q: use text or json", f.format)
}

func newServeCmd(g *globalFlags) *cobra.Command {
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the bridge: SIP, pushes and the HTTP API",
		Long: `Runs callwake with the configuration of --config until SIGTERM or SIGINT, then
shuts down cleanly: new calls are refused, ringing calls finish, and the
database is closed.`,
		Example: "  callwake serve --config configs/callwake.yaml --log-format json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := lf.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, logger, nil)
		},
	}
	cmd.Flags().StringVar(&lf.format, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&lf.level, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// serve runs every component until ctx ends. ready, when not nil, receives the
// HTTP address once the server listens (tests).
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger, ready chan<- string) error {
	slog.SetDefault(logger)
	logger.Info("callwake starting", "config", cfg.File, "db", cfg.DB.Path)

	store, err := db.Open(ctx, cfg.DB.Path, db.WithLogger(logger))
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error("closing database", "err", err)
		} else {
			logger.Info("database closed")
		}
	}()
	// Extensions and devices changed by the CLI reach calls within a second.
	go store.WatchDirectory(ctx, time.Second)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	pusher, err := newPusher(ctx, cfg, store, logger, reg)
	if err != nil {
		return err
	}
	defer pusher.Close()

	sipSide, err := startSIP(ctx, cfg, store, pusher, logger, reg)
	if err != nil {
		return err
	}
	defer sipSide.service.Close()

	// Register mode runs on its own context: its un-REGISTERs need the SIP
	// service, which outlives the server context.
	registerMode, err := startRegisterMode(cfg, store, sipSide, logger, reg)
	if err != nil {
		return err
	}
	upstreamCtx, stopUpstream := context.WithCancel(context.Background())
	defer stopUpstream()
	upstreamDone := make(chan error, 1)
	go func() { upstreamDone <- registerMode.Run(upstreamCtx) }()

	apiServer := api.New(api.Options{
		Store:      store,
		AdminToken: string(cfg.HTTP.AdminToken),
		Realm:      cfg.Realm(),
		MaxDevices: cfg.Devices.MaxPerExtension,
		PushTester: pusher,
		Health:     map[string]api.HealthChecker{"push": pusher.healthCheck},
		Gatherer:   reg,
		Logger:     logger,
		ExtraRoutes: map[string]http.Handler{
			bridge.DeclinePath: sipSide.bridge.DeclineHandler(),
		},
		ExtensionChange: func(string) { registerMode.Changed() },
	})
	if cfg.HTTP.AdminToken == "" {
		logger.Warn("http.admin_token is empty: the admin API refuses every call")
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	httpServer := &http.Server{
		Handler:           apiServer,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("HTTP API listening", "addr", ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}

	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error {
		if err := httpServer.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})
	group.Go(func() error {
		<-gctx.Done()
		// Drain: new INVITEs get 503, ringing calls run to their end. The
		// registrations to the PBX go first, so that the PBX stops sending
		// new calls here and handles them as for an unregistered phone;
		// calls in progress follow their route set, not the registration.
		sipSide.bridge.Drain()
		stopUpstream()
		if err := <-upstreamDone; err != nil {
			logger.Warn("register mode stopped with an error", "err", err)
		}
		drainFor := cfg.Calls.RingTimeout.Std() + 5*time.Second
		logger.Info("shutting down: waiting for calls to end", "calls", sipSide.bridge.ActiveCalls(), "at_most", drainFor)
		drainCtx, cancelDrain := context.WithTimeout(context.Background(), drainFor)
		defer cancelDrain()
		if err := sipSide.bridge.Wait(drainCtx); err != nil {
			logger.Warn("calls still up after the drain time; stopping anyway", "calls", sipSide.bridge.ActiveCalls())
		}
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return httpServer.Shutdown(shutdownCtx)
	})
	err = group.Wait()
	logger.Info("callwake stopped")
	return err
}
