package ci

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/spf13/cobra"
)

// DefaultArtifactsFile is the artifact set in this repository.
const DefaultArtifactsFile = "pkg/artifacts/artifacts.yaml"

func newGenerateCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var file, ignoreFile, apiURL, tokenEnv, proxy string
	var releaseOnly bool
	cmd := &cobra.Command{
		Use:   "generate-artifacts",
		Short: "Update the artifact set to the newest upstream versions",
		Long: `Update the artifact set file to the newest upstream version of every
component: the latest GitHub release of each deb (its asset picked by
assetGlob, hashed), the latest version tag of each image in its registry
(resolved to a digest), and the latest version in the OS channel's feed.
Versions listed in the ignore file are skipped; --release also skips
pre-releases. Only the values that changed are edited, where they stand:
comments, the order of components and keys, and the style of what a person
wrote stay, so an unchanged upstream gives a byte-identical file and a
hand edit of the plan merges with the nightly's. If any source fails, the
file is left as it was.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			changes, err := regenerate(cmd.Context(), file, ignoreFile, artifacts.Sources{
				GitHubAPIURL: apiURL, GitHubToken: getenv(tokenEnv), Proxy: proxy,
				Release: releaseOnly, WorkDir: os.TempDir(),
			})
			if err != nil {
				return fmt.Errorf("%s left unchanged: %w", file, err)
			}
			if changes == nil {
				fmt.Fprintf(stdout, "%s is up to date\n", file)
				return nil
			}
			fmt.Fprintf(stdout, "updated %s:\n", file)
			for _, line := range changes {
				fmt.Fprintln(stdout, "  "+line)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", DefaultArtifactsFile, "artifact set file to update")
	cmd.Flags().StringVar(&ignoreFile, "ignore", "", "ignore file (default artifacts_ignore.yaml next to --file)")
	cmd.Flags().BoolVar(&releaseOnly, "release", false, "skip pre-release versions")
	cmd.Flags().StringVar(&apiURL, "github-api-url", release.DefaultAPIURL, "GitHub REST API base")
	cmd.Flags().StringVar(&tokenEnv, "github-token-env", "GITHUB_TOKEN", "environment variable that holds a GitHub token")
	cmd.Flags().StringVar(&proxy, "proxy", "", "HTTP proxy for GitHub, registries and feeds")
	return cmd
}

// printDiff prints the components that differ between two sets.
// regenerate updates the artifact set file to the newest upstream
// versions from src, skipping those of the ignore file (by default
// artifacts_ignore.yaml beside it), and returns the changes; none when the
// file was up to date. A source that fails leaves the file as it was.
func regenerate(ctx context.Context, file, ignoreFile string, src artifacts.Sources) ([]string, error) {
	orig, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	set, err := artifacts.Parse(orig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if ignoreFile == "" {
		ignoreFile = filepath.Join(filepath.Dir(file), "artifacts_ignore.yaml")
	}
	if src.Ignore, err = artifacts.LoadIgnore(ignoreFile); err != nil {
		return nil, err
	}
	next, err := artifacts.Generate(ctx, set, src)
	if err != nil {
		return nil, err
	}
	// Only the values that changed are edited, where they stand: what a
	// person wrote (comments, order, style) stays.
	data, err := artifacts.Rewrite(orig, set, next)
	if err != nil {
		return nil, fmt.Errorf("edit %s: %w", file, err)
	}
	wrote, err := artifacts.WriteFile(file, data)
	if err != nil || !wrote {
		return nil, err
	}
	return artifacts.Diff(set, next), nil
}
