package main

import (
	"context"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/callwake/callwake/api"
	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/config"
	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
)

// pushService is the push senders as the daemon and the CLI use them.
type pushService struct {
	*push.Pusher
	*bridge.TestPusher
}

func pushOptions(cfg *config.Config) push.Options {
	a, f := cfg.Push.APNs, cfg.Push.FCM
	return push.Options{
		APNs: push.APNsOptions{
			KeyFile: a.KeyFile.Path, KeyID: a.KeyID, TeamID: a.TeamID,
			CertFile: a.CertFile.Path, CertPassword: string(a.CertPassword),
			Endpoint: a.Endpoint, SandboxEndpoint: a.SandboxEndpoint,
		},
		FCM: push.FCMOptions{CredentialsFile: f.CredentialsFile.Path, ProjectID: f.ProjectID, Endpoint: f.Endpoint},
	}
}

// registrarURI is the SIP URI an app registers to for ext.
func registrarURI(cfg *config.Config) func(string) string {
	return func(ext string) string { return fmt.Sprintf("sip:%s@%s", ext, cfg.Realm()) }
}

func newPusher(ctx context.Context, cfg *config.Config, store *db.Store, logger *slog.Logger, reg prometheus.Registerer) (*pushService, error) {
	p, err := push.New(pushOptions(cfg), bridge.PushStore{Store: store}, logger, reg)
	if err != nil {
		return nil, fmt.Errorf("starting push senders: %w", err)
	}
	return &pushService{Pusher: p, TestPusher: &bridge.TestPusher{
		Pusher: p, Store: store, Registrar: registrarURI(cfg), Window: cfg.Calls.RingTimeout.Std(),
		Now: time.Now, Logger: logger.With("component", "push"), Background: ctx,
	}}, nil
}

// healthCheck reports the providers for /healthz: an enabled provider that
// is unhealthy makes the whole answer unhealthy.
func (s *pushService) healthCheck(context.Context) (any, error) {
	out := map[string]any{}
	var err error
	for name, h := range s.Health() {
		status := "disabled"
		if h.Enabled {
			status = "ok"
			if !h.Healthy {
				status = "unhealthy"
				err = fmt.Errorf("push provider %s is unhealthy: %s", name, h.LastError)
			}
		}
		entry := map[string]any{"status": status}
		if h.LastError != "" {
			entry["last_error"] = h.LastError
			entry["last_error_at"] = h.LastErrorAt
		}
		out[name] = entry
	}
	return out, err
}

var _ api.PushTester = (*pushService)(nil)

func newPushCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "push", Short: "Send pushes by hand"}
	var window time.Duration
	test := &cobra.Command{
		Use:   "test EXTENSION",
		Short: "Push every device of an extension as a test call, then cancel it",
		Long: `Sends an incoming_call push marked "test": "true" to every device of the
extension with the config's credentials, prints what each provider said, waits
for the ring window (--window, default calls.ring_timeout) and sends the
call_cancelled push that dismisses the call screen. Exits 1 when no push was
delivered.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			return g.withStore(cmd, false, func(cfg *config.Config, store *db.Store) error {
				svc, err := newPusher(cmd.Context(), cfg, store, logger, nil)
				if err != nil {
					return err
				}
				defer svc.Close()
				if cmd.Flags().Changed("window") {
					svc.Window = window
				}
				if _, err := store.GetExtension(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "pushing %s; call_cancelled follows in %s\n", args[0], svc.Window)
				results, err := svc.TestPush(cmd.Context(), args[0], true)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DEVICE\tPROVIDER\tOUTCOME\tREASON\tATTEMPTS\tLATENCY")
				ok := 0
				for _, r := range api.TestPushView(results) {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", r.DeviceID, r.Provider, r.Outcome, r.Reason, r.Attempts, r.Latency)
					if r.Outcome == push.OutcomeDelivered || r.Outcome == push.OutcomeDisabled {
						ok++
					}
				}
				tw.Flush()
				if len(results) == 0 {
					return fmt.Errorf("extension %s has no devices to push", args[0])
				}
				if ok == 0 {
					return fmt.Errorf("no push was delivered")
				}
				return nil
			})
		},
	}
	test.Flags().DurationVar(&window, "window", 0, "ring window before the call_cancelled push (default calls.ring_timeout)")
	cmd.AddCommand(test)
	return cmd
}
