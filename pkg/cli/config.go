package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

func (a *app) newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and change the fleet's configuration in etcd",
		Long: `The fleet's configuration lives in etcd under <prefix>/config/. Every value
is checked when it is set; a refused value changes nothing. The running
daemons pick up a change within seconds.

Keys:
` + configKeysHelp(),
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.newConfigSetCommand(), a.newConfigGetCommand(), a.newConfigListCommand(), a.newConfigUnsetCommand())
	return cmd
}

func configKeysHelp() string {
	var b strings.Builder
	for _, k := range fleet.ConfigKeys() {
		def := ""
		if k.Default != "" {
			def = " (default " + k.Default + ")"
		}
		fmt.Fprintf(&b, "  %-22s %s%s\n", k.Name, k.Help, def)
	}
	return b.String()
}

type configEntry struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Set     bool   `json:"set"`
	Default string `json:"default,omitempty"`
	Secret  bool   `json:"secret,omitempty"`
}

func newConfigEntry(k fleet.ConfigKey, value string, set bool) configEntry {
	return configEntry{Key: k.Name, Value: k.Display(value), Set: set, Default: k.Default, Secret: k.Secret}
}

func (a *app) newConfigSetCommand() *cobra.Command {
	return &cobra.Command{
		ValidArgsFunction: completeFirst(configKeyNames),
		Use:               "set KEY VALUE [VALUE...]",
		Short:             "Check and store a config value",
		Long: `Check and store a config value. Keys that hold several lines
(release-time) take one argument a line. A VALUE of "-" reads
the value from standard input, which keeps secrets out of shell history:

  ferry config set github-token - < token.txt`,
		Example: `  ferry config set env staging
  ferry config set worker-timeout 90m
  ferry config set release-time "* 9-16 * * 1-5" "* 20-21 * * 6"`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := fleet.LookupConfigKey(args[0])
			if err != nil {
				return err
			}
			values := args[1:]
			if len(values) > 1 && !k.Multi {
				return usagef("%s takes one value, got %d; quote a value that has spaces", k.Name, len(values))
			}
			if len(values) == 1 && values[0] == "-" {
				data, err := io.ReadAll(a.stdin)
				if err != nil {
					return fmt.Errorf("read the value from standard input: %w", err)
				}
				values = []string{string(data)}
			}
			value := strings.Join(values, "\n")
			if strings.TrimSpace(value) == "" && k.Default == "" {
				return usagef("%s: the value is empty; to clear it run `ferry config unset %s`", k.Name, k.Name)
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				stored, err := st.SetConfig(ctx, k.Name, value)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(newConfigEntry(k, stored, true))
				}
				fmt.Fprintf(a.stdout, "%s = %s\n", k.Name, strings.ReplaceAll(k.Display(stored), "\n", "; "))
				return nil
			})
		},
	}
}

// keyCommand builds a command that takes one config KEY and acts on it.
func (a *app) keyCommand(use, short string, fn func(ctx context.Context, st *storage.Storage, k fleet.ConfigKey) error) *cobra.Command {
	return &cobra.Command{
		Use:               use + " KEY",
		Short:             short,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFirst(configKeyNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := fleet.LookupConfigKey(args[0])
			if err != nil {
				return err
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				return fn(ctx, st, k)
			})
		},
	}
}

func (a *app) newConfigGetCommand() *cobra.Command {
	return a.keyCommand("get", "Print a config value (secrets are masked)", func(ctx context.Context, st *storage.Storage, k fleet.ConfigKey) error {
		v, set, err := st.GetConfigValue(ctx, k.Name)
		if err != nil {
			return err
		}
		if a.output == "json" {
			return a.printJSON(newConfigEntry(k, v, set))
		}
		fmt.Fprintln(a.stdout, k.Display(v))
		return nil
	})
}

func (a *app) newConfigListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Print every config key, its value and whether it is set or a default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				values, err := st.ConfigValues(ctx)
				if err != nil {
					return err
				}
				entries := make([]configEntry, 0, len(values))
				for _, k := range fleet.ConfigKeys() {
					v, set := values[k.Name]
					if !set {
						v = k.Default
					}
					entries = append(entries, newConfigEntry(k, v, set))
				}
				if a.output == "json" {
					return a.printJSON(entries)
				}
				t := a.newTable("KEY", "VALUE", "SOURCE")
				for _, e := range entries {
					src := "default"
					if e.Set {
						src = "set"
					}
					t.row(e.Key, orDash(e.Value), src)
				}
				return t.flush()
			})
		},
	}
}

func (a *app) newConfigUnsetCommand() *cobra.Command {
	cmd := a.keyCommand("unset", "Remove a config value, so that the key takes its default", func(ctx context.Context, st *storage.Storage, k fleet.ConfigKey) error {
		if err := st.UnsetConfig(ctx, k.Name); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s unset (now %s)\n", k.Name, orDash(k.Display(k.Default)))
		return nil
	})
	cmd.Long = `Remove a config value, so that the key takes its default. A key that
left etcd for each server's own files (signing-keys, allow-unsigned,
github-api-url) is removed too: an older version may have left a value
under it, which nothing reads.`
	keyed := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		where, retired := fleet.RetiredConfigKey(args[0])
		if !retired {
			return keyed(cmd, args)
		}
		return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
			if err := st.UnsetConfig(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s removed from etcd: it no longer lives there, and nothing read it (%s)\n", args[0], where)
			return nil
		})
	}
	return cmd
}
