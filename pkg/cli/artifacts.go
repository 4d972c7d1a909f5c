package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/spf13/cobra"
)

func (a *app) newArtifactsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifacts",
		Short: "Show a release's artifact set, or what a release would change",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.newArtifactsShowCommand(), a.newArtifactsDiffCommand())
	return cmd
}

func loadSet(file string) (*artifacts.Set, error) {
	if file == "" {
		return artifacts.Parse(artifacts.Embedded)
	}
	return artifacts.Load(file)
}

func (a *app) newArtifactsShowCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the artifact set built into this ferry (or --file)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			set, err := loadSet(file)
			if err != nil {
				return &usageError{err}
			}
			if a.output == "json" {
				return a.printJSON(set)
			}
			sum := set.Summary()
			t := a.newTable("COMPONENT", "VERSION")
			for _, k := range fleet.SortedIDs(sum) {
				t.row(k, sum[k])
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "artifact set file (default: the one built into this binary)")
	return cmd
}

func (a *app) newArtifactsDiffCommand() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "diff TO",
		Short: "Show what a release's artifact set changes against the installed one",
		Long: `Show what changes between the installed artifact set (built into this
binary, or --from FILE) and TO: an artifact set file, or a ferry version.
For a version, its package is downloaded from github-repo and verified
against the trusted keys of this machine exactly as a worker would, and its set is read from it.`,
		Example: `  ferry artifacts diff 2026.01.02-1
  ferry artifacts diff --from old.yaml new.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := loadSet(from)
			if err != nil {
				return &usageError{err}
			}
			var target *artifacts.Set
			if _, statErr := os.Stat(args[0]); statErr == nil {
				if target, err = artifacts.Load(args[0]); err != nil {
					return &usageError{err}
				}
			} else {
				if _, err := release.ParseVersion(args[0]); err != nil {
					return usagef("%s is neither a file nor a version: %v", args[0], err)
				}
				if target, err = a.releaseSet(cmd, args[0]); err != nil {
					return err
				}
			}
			lines := artifacts.Diff(base, target)
			if a.output == "json" {
				return a.printJSON(map[string]any{"changes": lines})
			}
			if len(lines) == 0 {
				fmt.Fprintln(a.stdout, "no change")
			}
			for _, l := range lines {
				fmt.Fprintln(a.stdout, l)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "artifact set to compare from (default: the one built into this binary)")
	return cmd
}

// releaseSet downloads and verifies a release's package and reads its set.
func (a *app) releaseSet(cmd *cobra.Command, version string) (*artifacts.Set, error) {
	var set *artifacts.Set
	err := a.withGitHub(cmd, func(ctx context.Context, cfg *fleet.Config, src *release.Source) error {
		rel, err := src.FindVersion(ctx, cfg.Env, version)
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "ferry-diff-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		tr, err := a.trust(cfg.Env)
		if err != nil {
			return err
		}
		path, _, err := src.FetchPackage(ctx, rel, version, tr, dir, release.DownloadOptions{})
		if err != nil {
			return err
		}
		root := filepath.Join(dir, "root")
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", path, root).CombinedOutput(); err != nil {
			return fmt.Errorf("unpack %s: %v: %s", filepath.Base(path), err, out)
		}
		set, err = artifacts.Load(filepath.Join(root, artifacts.InstalledPath))
		return err
	})
	return set, err
}
