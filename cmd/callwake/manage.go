package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/callwake/callwake/api"
	"github.com/callwake/callwake/config"
	"github.com/callwake/callwake/db"
)

func newConfigCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the configuration file"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the config and print the effective values, secrets redacted",
		Long: `Loads --config the way "serve" does (defaults, then the file, then secrets from
the environment), prints the effective configuration with secrets redacted and
exits 0; or prints every error with its file and line and exits 2.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# %s is valid; effective configuration:\n%s", cfg.File, cfg)
			return nil
		},
	})
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newExtCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ext", Short: "Add, change, list, show and remove mobile extensions"}
	add := &cobra.Command{
		Use:   "add EXTENSION",
		Short: "Add an extension (the phone app's SIP user)",
		Long: `Adds a mobile extension. Its password is what the phone app uses for digest
auth and for POST /api/v1/devices; only its digest hashes are stored.
Without --password, the password is read from the first line of standard input.
--pbx-username/--pbx-password make callwake register to the PBX as this
extension (register mode).`,
		Example: "  callwake ext add 1001 --display-name Alice --password 's3cret-pass'",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			input := changedFields(cmd)
			if input.Password == nil {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return usageError("no password: pass --password or write it on standard input")
				}
				password := strings.TrimRight(line, "\r\n")
				input.Password = &password
			}
			if err := db.ValidateExtensionID(args[0]); err != nil {
				return usageError("%v", err)
			}
			return g.withStore(cmd, true, func(cfg *config.Config, store *db.Store) error {
				e := db.Extension{Extension: args[0]}
				if err := input.Apply(&e, cfg.Realm()); err != nil {
					return usageError("%v", err)
				}
				if _, err := store.CreateExtension(cmd.Context(), e); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "extension %s added: register the app as sip:%s@%s\n", e.Extension, e.Extension, cfg.Realm())
				return nil
			})
		},
	}
	extensionFlags(add)

	set := &cobra.Command{
		Use:   "set EXTENSION",
		Short: "Change an extension: password, name, PBX credentials",
		Long: `Changes the fields given as flags and leaves the others. A running callwake
picks the change up within seconds: with new PBX credentials it registers to
the PBX again; with empty ones (--pbx-username "" --pbx-password "") it
un-registers.`,
		Example: "  callwake ext set 1001 --pbx-username 1001 --pbx-password 'pbx-secret'",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			input := changedFields(cmd)
			if input == (api.ExtensionInput{}) {
				return usageError("nothing to change: give at least one flag (see callwake ext set --help)")
			}
			return g.withStore(cmd, false, func(cfg *config.Config, store *db.Store) error {
				if _, err := store.UpdateExtension(cmd.Context(), args[0], func(e *db.Extension) error {
					return input.Apply(e, cfg.Realm())
				}); err != nil {
					var invalid interface{ Unprocessable() }
					if errors.As(err, &invalid) {
						return usageError("%v", err)
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "extension %s changed\n", args[0])
				return nil
			})
		},
	}
	extensionFlags(set)

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List extensions with their device counts",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withStore(cmd, false, func(_ *config.Config, store *db.Store) error {
				exts, err := store.ListExtensions(cmd.Context())
				if err != nil {
					return err
				}
				type row struct {
					Extension   string `json:"extension"`
					DisplayName string `json:"display_name"`
					Devices     int    `json:"devices"`
					PBXUsername string `json:"pbx_username,omitempty"`
				}
				rows := make([]row, 0, len(exts))
				for _, e := range exts {
					devs, err := store.ListDevices(cmd.Context(), e.Extension)
					if err != nil {
						return err
					}
					rows = append(rows, row{e.Extension, e.DisplayName, len(devs), e.PBXUsername})
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), rows)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "EXTENSION\tNAME\tDEVICES\tPBX USER")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Extension, r.DisplayName, r.Devices, r.PBXUsername)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show EXTENSION",
		Short: "Show an extension and its devices",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, false, func(_ *config.Config, store *db.Store) error {
				e, err := store.GetExtension(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				devs, err := store.ListDevices(cmd.Context(), e.Extension)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "extension:    %s\ndisplay name: %s\ncreated:      %s\n", e.Extension, e.DisplayName, e.CreatedAt.Format(time.RFC3339))
				if e.PBXUsername != "" {
					fmt.Fprintf(w, "pbx user:     %s\n", e.PBXUsername)
				}
				if e.PBXRegistrar != "" {
					fmt.Fprintf(w, "pbx registrar: %s\n", e.PBXRegistrar)
				}
				if reg, err := store.GetRegistration(cmd.Context(), e.Extension); err == nil {
					fmt.Fprintf(w, "pbx registration: %s", reg.Status)
					if !reg.ExpiresAt.IsZero() && reg.Status == "registered" {
						fmt.Fprintf(w, " until %s", reg.ExpiresAt.Local().Format(time.RFC3339))
					}
					if reg.Registrar != "" {
						fmt.Fprintf(w, " at %s", reg.Registrar)
					}
					fmt.Fprintln(w)
					if reg.LastError != "" {
						fmt.Fprintf(w, "last error:   %s (%s)\n", reg.LastError, reg.LastErrorAt.Local().Format(time.RFC3339))
					}
				} else if !errors.Is(err, db.ErrNotFound) {
					return err
				}
				fmt.Fprintf(w, "devices:      %d\n", len(devs))
				printDevices(w, devs)
				return nil
			})
		},
	}

	rm := &cobra.Command{
		Use:   "rm EXTENSION",
		Short: "Remove an extension and its devices (the call log stays)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, false, func(_ *config.Config, store *db.Store) error {
				if err := store.DeleteExtension(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "extension %s removed\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(add, set, list, show, rm)
	return cmd
}

// extensionFlags are the fields of an extension, for ext add and ext set.
func extensionFlags(cmd *cobra.Command) {
	cmd.Flags().String("password", "", "the app's SIP password (8-128 characters)")
	cmd.Flags().String("display-name", "", "name shown for the extension")
	cmd.Flags().String("pbx-username", "", "username callwake registers to the PBX with (register mode)")
	cmd.Flags().String("pbx-password", "", "password callwake registers to the PBX with")
	cmd.Flags().String("pbx-registrar", "", "this extension's PBX registrar (default pbx.registrar)")
}

// changedFields is the extension input made of the flags given.
func changedFields(cmd *cobra.Command) api.ExtensionInput {
	var in api.ExtensionInput
	for flag, dst := range map[string]**string{"password": &in.Password, "display-name": &in.DisplayName,
		"pbx-username": &in.PBXUsername, "pbx-password": &in.PBXPassword, "pbx-registrar": &in.PBXRegistrar} {
		if v, err := cmd.Flags().GetString(flag); err == nil && cmd.Flags().Changed(flag) {
			*dst = &v
		}
	}
	return in
}

func printDevices(w io.Writer, devs []db.Device) {
	if len(devs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROVIDER\tTOKEN\tTOPIC/PROJECT\tLAST SEEN\tLAST PUSH\tLAST ERROR")
	for _, d := range devs {
		lastPush := "-"
		if !d.LastPushAt.IsZero() {
			lastPush = d.LastPushAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Provider, shorten(d.Token, 16),
			d.Topic+d.ProjectID, d.LastSeenAt.Format(time.RFC3339), lastPush, d.LastError)
	}
	tw.Flush()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func newDeviceCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "List and remove an extension's push devices"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list EXTENSION",
		Short: "List the devices callwake pushes for an extension",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, false, func(_ *config.Config, store *db.Store) error {
				if _, err := store.GetExtension(cmd.Context(), args[0]); err != nil {
					return err
				}
				devs, err := store.ListDevices(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), devs)
				}
				if len(devs) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "extension %s has no devices\n", args[0])
				}
				printDevices(cmd.OutOrStdout(), devs)
				return nil
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm EXTENSION DEVICE-ID",
		Short: "Remove a device: it is no longer pushed",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil {
				return usageError("device id %q is not a number (see callwake device list %s)", args[1], args[0])
			}
			return g.withStore(cmd, false, func(_ *config.Config, store *db.Store) error {
				if err := store.DeleteDevice(cmd.Context(), args[0], id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "device %d of %s removed\n", id, args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(list, rm)
	return cmd
}

func newCallsCmd(g *globalFlags) *cobra.Command {
	var limit int
	var ext string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "Show the call log, newest first, with outcomes and timings",
		Long: `Shows the call log, newest first. PUSH, REG and ANSWER are milliseconds from
the PBX's INVITE to the first push, the first woken device's REGISTER and the
answer; DURATION is the talk time.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return usageError("--limit must be 1-1000")
			}
			return g.withStore(cmd, false, func(_ *config.Config, store *db.Store) error {
				calls, err := store.ListCalls(cmd.Context(), db.CallQuery{Limit: limit, Extension: ext})
				if err != nil {
					return err
				}
				if asJSON {
					views := make([]any, 0, len(calls))
					for _, c := range calls {
						views = append(views, api.CallView(c))
					}
					return printJSON(cmd.OutOrStdout(), views)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tEXT\tCALLER\tOUTCOME\tSTATUS\tPUSH\tREG\tANSWER\tDURATION\tCALL ID")
				for _, c := range calls {
					caller := c.CallerNumber
					if c.CallerName != "" {
						caller = fmt.Sprintf("%s <%s>", c.CallerName, c.CallerNumber)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", c.InviteAt.Local().Format("2006-01-02 15:04:05"),
						c.Extension, caller, c.Outcome, c.Status, msSince(c.InviteAt, c.PushAt), msSince(c.InviteAt, c.FirstRegisterAt),
						msSince(c.InviteAt, c.AnswerAt), durationOf(c.AnswerAt, c.EndAt), c.ID)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "how many calls (1-1000)")
	cmd.Flags().StringVar(&ext, "ext", "", "only this extension's calls")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func msSince(from, to time.Time) string {
	if from.IsZero() || to.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%dms", to.Sub(from).Milliseconds())
}

func durationOf(from, to time.Time) string {
	if from.IsZero() || to.IsZero() {
		return "-"
	}
	return to.Sub(from).Round(time.Second).String()
}
