package ci

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/spf13/cobra"
)

// debName is a ferry package as `make deb` names it.
var debName = regexp.MustCompile(`^ferry_(\d{4}\.\d{2}\.\d{2}-\d+)_amd64\.deb$`)

func newServeReleasesCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var listen, repo, keyFile, passwordEnv string
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "serve-releases DIR",
		Short: "Serve ferry packages from a directory as a GitHub release API, to try ferry without GitHub",
		Long: `Serve the ferry packages in DIR (ferry_YYYY.MM.DD-N_amd64.deb, as ` + "`make deb\nVERSION=...`" + ` builds them) as releases of --repo on a GitHub-compatible REST
API, for a fleet tried out on one machine, or a lab without GitHub. Each
package becomes the full release release-VERSION, signed with --key for
the production channel as ` + "`ferry release publish`" + ` would: its SHA256SUMS, the
channel's manifest and their signatures. A package copied into DIR later
is served within --every. Set github-api-url in each server's config.yml
to the URL printed, github-repo in the fleet's config to --repo, and put
the key's public half in the servers' trusted-keys.

It serves on loopback unless --listen says otherwise, answers as GitHub
does (ETags, asset redirects), and keeps nothing: stop it with Ctrl-C.`,
		Example: `  ferry-ci keygen try                     # try.key, try.pub
  make deb VERSION=2026.12.06-1 && cp dist/ferry_2026.12.06-1_amd64.deb releases/
  ferry-ci serve-releases --key try.key releases/`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return usageError{fmt.Errorf("%s is not a directory of ferry packages", dir)}
			}
			if keyFile == "" {
				keyFile = getenv("FERRY_SIGNING_KEY")
			}
			if keyFile == "" {
				return usageError{errors.New("no signing key: give --key FILE (`ferry-ci keygen NAME` makes one) or set FERRY_SIGNING_KEY")}
			}
			key, err := trust.LoadPrivateKey(keyFile, getenv(passwordEnv))
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			gh := githubfake.NewOn(l)
			defer gh.Close()
			fmt.Fprintf(stdout, "serving the ferry packages in %s as releases of %s\n", dir, repo)
			fmt.Fprintf(stdout, "  github-api-url: %s   (each server's config.yml)\n", gh.APIURL())
			fmt.Fprintf(stdout, "  ferry config set github-repo %s\n", repo)
			fmt.Fprintf(stdout, "  trusted key: %X (its .pub in each server's trusted-keys)\n", key.ID())
			served := map[string]bool{}
			scan := func() error {
				entries, err := os.ReadDir(dir)
				if err != nil {
					return err
				}
				for _, e := range entries {
					m := debName.FindStringSubmatch(e.Name())
					if m == nil || served[m[1]] {
						continue
					}
					info, err := e.Info()
					if err != nil {
						return err
					}
					version := m[1]
					assets, err := release.SignedAssets(version, trust.ChannelProduction, filepath.Join(dir, e.Name()), key, time.Now(), 0)
					if err != nil {
						return fmt.Errorf("%s: %w", e.Name(), err)
					}
					gh.AddRelease(repo, githubfake.ReleaseSpec{Tag: release.PrefixRelease + version, CreatedAt: info.ModTime(), Assets: assets})
					served[version] = true
					fmt.Fprintf(stdout, "serving %s%s\n", release.PrefixRelease, version)
				}
				return nil
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				if err := scan(); err != nil {
					return err
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8480", "address to serve on")
	cmd.Flags().StringVar(&repo, "repo", "local/ferry", "the repository the releases belong to, as owner/name")
	cmd.Flags().StringVar(&keyFile, "key", "", "minisign private key that signs the releases (default $FERRY_SIGNING_KEY)")
	cmd.Flags().StringVar(&passwordEnv, "password-env", "FERRY_SIGNING_KEY_PASSWORD", "environment variable that holds the key's password")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "how often DIR is looked at for new packages")
	return cmd
}
