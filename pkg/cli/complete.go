package cli

import (
	"context"
	"os"
	"sort"
	"time"

	"github.com/ferry-cd/ferry/internal/manpage"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

// Shell completion: config keys, server ids and release versions are
// offered from what they are, never file names. A completion that needs
// etcd gives up after completeTimeout and offers nothing.
const completeTimeout = 2 * time.Second

type completer func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective)

// completeFirst completes the first argument with values, and nothing
// after it.
func completeFirst(values func(cmd *cobra.Command) []string) completer {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return values(cmd), cobra.ShellCompDirectiveNoFileComp
	}
}

func configKeyNames(*cobra.Command) []string {
	var out []string
	for _, k := range fleet.ConfigKeys() {
		out = append(out, k.Name)
	}
	return out
}

// fromEtcd runs fn against the fleet's etcd for at most completeTimeout.
func (a *app) fromEtcd(fn func(ctx context.Context, st *storage.Storage) []string) []string {
	st, closeFn, err := a.open()
	if err != nil {
		return nil
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	return fn(ctx, st)
}

func (a *app) serverIDs(*cobra.Command) []string {
	return a.fromEtcd(func(ctx context.Context, st *storage.Storage) []string {
		servers, err := st.GetServers(ctx)
		if err != nil {
			return nil
		}
		return fleet.SortedIDs(servers)
	})
}

// releaseVersions are the versions the fleet ran (its history) and the
// newest the updater has seen: what a pin usually names. GitHub is not
// asked: completion must be quick and cost no rate limit.
func (a *app) releaseVersions(*cobra.Command) []string {
	return a.fromEtcd(func(ctx context.Context, st *storage.Storage) []string {
		seen := map[string]bool{}
		if info, err := st.GetReleaseInfo(ctx); err == nil {
			seen[info.Version] = true
		}
		if hist, err := st.GetHistory(ctx, 50); err == nil {
			for _, h := range hist {
				seen[h.Version] = true
			}
		}
		var out []string
		for v := range seen {
			out = append(out, v)
		}
		sort.Slice(out, func(i, j int) bool { return release.CompareStrings(out[i], out[j]) > 0 })
		return out
	})
}

// newGenDocsCommand writes ferry's man pages and shell completions into a
// directory, for the package build. It is hidden: operators get the
// results installed.
func (a *app) newGenDocsCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write man pages (DIR/man1) and shell completions (DIR/completions) for the package",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			if err := manpage.WriteTree(root, "1", args[0]+"/man1"); err != nil {
				return err
			}
			if err := manpage.WriteCompletions(root, args[0]+"/completions"); err != nil {
				return err
			}
			return os.Chmod(args[0], 0o755)
		},
	}
}
