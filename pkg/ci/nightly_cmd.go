package ci

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/spf13/cobra"
)

func newNightlyCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var (
		n                                            Nightly
		date, build, dctest, keyFile, pwEnv, trusted string
		apiURL, repo, tokenEnv, proxy                string
	)
	cmd := &cobra.Command{
		Use:   "nightly",
		Short: "Cut a test- release: merge, generate, build, sign, gate on dctest, tag, pre-release",
		Long: `Run the nightly job in a git working copy of this repository:

  1. fetch, check out the release branch and merge main into it (a merge
     conflict stops the job; nothing is pushed);
  2. generate-artifacts --release, committing the artifact set if it changed;
  3. compute the version YYYY.MM.DD-N (N = 1 + the highest N tagged that day),
     build the package, write SHA256SUMS and sign it;
  4. run dctest, upgrading from the newest release to the new package;
  5. only if dctest passed: push the release branch and the tag
     test-YYYY.MM.DD-N, and create that pre-release with the .deb,
     SHA256SUMS and SHA256SUMS.minisig;
  6. print what it did; exit non-zero on any failure.

A failed run leaves no tag and no release. A run cut off after pushing its
tag is finished by the next run (rebuilt at the tagged commit), not repeated.
Run it from cron or a CI service; see docs/release-flow.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyFile == "" {
				keyFile = getenv("FERRY_SIGNING_KEY")
			}
			if keyFile == "" && !n.DryRun {
				return usageError{errors.New("no signing key: give --signing-key FILE or set FERRY_SIGNING_KEY")}
			}
			if keyFile != "" {
				key, err := trust.LoadPrivateKey(keyFile, getenv(pwEnv))
				if err != nil {
					return err
				}
				n.Key = key
			}
			if trusted != "" {
				keys, err := trust.LoadKeys(trusted)
				if err != nil {
					return usageError{err}
				}
				n.Trusted = keys
			}
			n.Date = time.Now()
			if date != "" {
				d, err := time.Parse("2006-01-02", date)
				if err != nil {
					return usageError{fmt.Errorf("--date %q: want YYYY-MM-DD", date)}
				}
				n.Date = d
			}
			n.BuildCommand, n.DctestCommand = strings.Fields(build), strings.Fields(dctest)
			if len(n.BuildCommand) == 0 || len(n.DctestCommand) == 0 {
				return usageError{errors.New("--build-command and --dctest-command must not be empty")}
			}
			token := getenv(tokenEnv)
			src, err := release.NewSource(release.Options{APIURL: apiURL, Repo: repo, Token: token, Proxy: proxy})
			if err != nil {
				return usageError{err}
			}
			n.GitHub = src
			n.Generate = artifacts.Sources{GitHubAPIURL: apiURL, GitHubToken: token, Proxy: proxy, WorkDir: os.TempDir()}
			n.Out = stdout
			version, err := n.Run(cmd.Context())
			if err != nil {
				return err
			}
			if n.DryRun {
				fmt.Fprintf(stdout, "dry run: would release %s%s; nothing was pushed or created\n", release.PrefixTest, version)
			} else {
				fmt.Fprintf(stdout, "summary: %s%s released as a pre-release; promote it with `ferry release publish %s --staging`\n", release.PrefixTest, version, version)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&n.Dir, "repo-dir", ".", "git working copy of the ferry repository")
	f.StringVar(&n.Remote, "remote", "origin", "git remote to fetch from and push to")
	f.StringVar(&n.MainBranch, "main-branch", "main", "branch that is merged")
	f.StringVar(&n.ReleaseBranch, "release-branch", "release", "branch releases are cut from")
	f.StringVar(&n.ArtifactsFile, "artifacts-file", DefaultArtifactsFile, "artifact set, relative to --repo-dir")
	f.StringVar(&date, "date", "", "release date YYYY-MM-DD (default today, UTC)")
	f.StringVar(&build, "build-command", "make deb", "builds $DIST/ferry_$VERSION_amd64.deb")
	f.StringVar(&dctest, "dctest-command", "make dctest", "runs the datacenter test against $FERRY_DCTEST_TO_DEB")
	f.StringVar(&keyFile, "signing-key", "", "minisign private key file (default $FERRY_SIGNING_KEY)")
	f.StringVar(&pwEnv, "password-env", "FERRY_SIGNING_KEY_PASSWORD", "variable that holds the key's password")
	f.StringVar(&trusted, "trusted-keys", "", "public keys (a trusted-keys directory, or one .pub) that verify the release dctest upgrades from; default the signing key's own. Give the release key when the nightly signs with a CI key")
	f.StringVar(&apiURL, "github-api-url", release.DefaultAPIURL, "GitHub REST API base")
	f.StringVar(&repo, "github-repo", "ferry-cd/ferry", "GitHub repository of ferry's releases")
	f.StringVar(&tokenEnv, "github-token-env", "GITHUB_TOKEN", "variable that holds a GitHub token")
	f.StringVar(&proxy, "proxy", "", "HTTP proxy")
	f.BoolVar(&n.DryRun, "dry-run", false, "print every step without pushing or creating anything")
	return cmd
}
