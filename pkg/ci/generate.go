package ci

import (
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
pre-releases. The output is canonical (sorted), so an unchanged upstream
gives a byte-identical file. If any source fails, the file is left as it was.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := artifacts.Load(file)
			if err != nil {
				return err
			}
			if ignoreFile == "" {
				ignoreFile = filepath.Join(filepath.Dir(file), "artifacts_ignore.yaml")
			}
			ignore, err := artifacts.LoadIgnore(ignoreFile)
			if err != nil {
				return err
			}
			next, err := artifacts.Generate(cmd.Context(), set, artifacts.Sources{
				GitHubAPIURL: apiURL, GitHubToken: getenv(tokenEnv), Proxy: proxy,
				Release: releaseOnly, Ignore: ignore, WorkDir: os.TempDir(),
			})
			if err != nil {
				return fmt.Errorf("%s left unchanged: %w", file, err)
			}
			data, err := next.Marshal()
			if err != nil {
				return err
			}
			wrote, err := artifacts.WriteFile(file, data)
			if err != nil {
				return err
			}
			if !wrote {
				fmt.Fprintf(stdout, "%s is up to date\n", file)
				return nil
			}
			fmt.Fprintf(stdout, "updated %s:\n", file)
			printDiff(stdout, set, next)
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
func printDiff(w io.Writer, from, to *artifacts.Set) {
	for _, line := range artifacts.Diff(from, to) {
		fmt.Fprintln(w, "  "+line)
	}
}
