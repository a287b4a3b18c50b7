// Command callwake is the SIP-to-push bridge: `callwake serve` runs it, the
// other commands manage its database.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/callwake/callwake/config"
	"github.com/callwake/callwake/db"
)

// Exit codes, so that scripts can tell failures apart.
const (
	exitOK       = 0
	exitError    = 1 // anything else went wrong
	exitUsage    = 2 // bad command line or invalid config
	exitNotFound = 3 // the extension, device or call does not exist
	exitExists   = 4 // the extension already exists
)

// exitError carries an exit code with the error.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &codedError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	var ce *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case strings.HasPrefix(err.Error(), "unknown command"):
		return exitUsage
	case errors.Is(err, db.ErrNotFound):
		return exitNotFound
	case errors.Is(err, db.ErrExists):
		return exitExists
	}
	return exitError
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line; it is main without the process around it,
// so that tests can drive the CLI.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "callwake:", err)
	}
	return exitCode(err)
}

type globalFlags struct {
	configFile string
	dbPath     string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "callwake",
		Short: "SIP-to-push bridge: wakes sleeping mobile softphones for PBX calls",
		Long: `callwake sits next to a PBX (Asterisk, FreeSWITCH, ...). The PBX sends a mobile
extension's calls to it; callwake sends a VoIP push (APNs PushKit, FCM) to the
user's phones, holds the call with 180 Ringing, and hands the call to the app
as soon as it wakes and registers.

Run the bridge with "callwake serve --config FILE". The other commands work on
the same database file and are safe to use while the bridge runs.

Exit codes: 0 ok, 1 error, 2 bad usage or invalid config, 3 not found,
4 already exists.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError("%v (see %s --help)", err, c.CommandPath())
	})
	root.PersistentFlags().StringVarP(&g.configFile, "config", "c", defaultConfigFile(),
		"configuration file (env CALLWAKE_CONFIG)")
	root.PersistentFlags().StringVar(&g.dbPath, "db", "", "database file (default: db.path of the config)")
	root.AddCommand(newServeCmd(g), newConfigCmd(g), newExtCmd(g), newDeviceCmd(g), newCallsCmd(g), newPushCmd(g))
	return root
}

func defaultConfigFile() string {
	if v := os.Getenv("CALLWAKE_CONFIG"); v != "" {
		return v
	}
	return "/etc/callwake/callwake.yaml"
}

// loadConfig reads the config named by --config; a bad one is a usage error.
func (g *globalFlags) loadConfig() (*config.Config, error) {
	cfg, err := config.LoadFile(g.configFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, usageError("config file %s not found: pass --config FILE (for example --config configs/callwake.yaml)", g.configFile)
	}
	if err != nil {
		return nil, &codedError{code: exitUsage, err: err}
	}
	if g.dbPath != "" {
		cfg.DB.Path = g.dbPath
	}
	return cfg, nil
}

// openStore loads the config and opens its database. Only a command that
// adds data may create the file: the others refuse a path with no database,
// which is most often a db.path that names the wrong file.
func (g *globalFlags) openStore(ctx context.Context, create bool) (*config.Config, *db.Store, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(cfg.DB.Path); !create && errors.Is(err, os.ErrNotExist) {
		return nil, nil, usageError("no database at %s (db.path of %s): check --config or --db", cfg.DB.Path, cfg.File)
	}
	store, err := db.Open(ctx, cfg.DB.Path)
	if err != nil {
		return nil, nil, err
	}
	return cfg, store, nil
}

// withStore runs fn with the config and the open database, then closes it.
func (g *globalFlags) withStore(cmd *cobra.Command, create bool, fn func(*config.Config, *db.Store) error) error {
	cfg, store, err := g.openStore(cmd.Context(), create)
	if err != nil {
		return err
	}
	defer store.Close()
	return fn(cfg, store)
}

// exactArgs is cobra.ExactArgs with a usage exit code and a pointer to --help.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError("%s takes %d argument(s), got %d (see %s --help)", cmd.CommandPath(), n, len(args), cmd.CommandPath())
		}
		return nil
	}
}
