package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

func (a *app) newReleaseCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "List the releases on GitHub and which env would take each",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.newReleaseListCommand(), a.newReleasePublishCommand(), a.newReleasePinCommand(), a.newReleaseUnpinCommand())
	return cmd
}

// withGitHub runs fn with the fleet's config and a release source for
// github-repo. GitHub calls get a longer bound than one etcd request.
func (a *app) withGitHub(cmd *cobra.Command, fn func(ctx context.Context, cfg *storage.Config, src *release.Source) error) error {
	var cfg *storage.Config
	err := a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
		var err error
		cfg, err = st.GetConfig(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if cfg.GitHubRepo == "" {
		return usagef("github-repo is not set; run `ferry config set github-repo OWNER/NAME`")
	}
	src, err := release.NewSource(release.Options{APIURL: cfg.GitHubAPIURL, Repo: cfg.GitHubRepo, Token: cfg.GitHubToken, Proxy: cfg.Proxy})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
	defer cancel()
	return fn(ctx, cfg, src)
}

func (a *app) newReleasePublishCommand() *cobra.Command {
	var staging, production bool
	cmd := &cobra.Command{
		Use:   "publish VERSION (--staging | --production)",
		Short: "Promote a release: test- to staging, or staging to production",
		Long: `Promote a release, one deliberate step at a time.

  --staging     creates release-VERSION from test-VERSION (same commit) as a
                pre-release carrying the same three assets; env staging takes it.
  --production  marks release-VERSION as a full release; env prod takes it.

Both refuse a release whose .deb, SHA256SUMS or SHA256SUMS.minisig is
missing, or whose signature does not verify against the fleet's
signing-keys. Nothing is changed then.`,
		Example: `  ferry release publish 2026.01.02-1 --staging
  ferry release publish 2026.01.02-1 --production`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			version := args[0]
			if _, err := release.ParseVersion(version); err != nil {
				return &usageError{err}
			}
			if staging == production {
				return usagef("give exactly one of --staging and --production")
			}
			return a.withGitHub(cmd, func(ctx context.Context, cfg *storage.Config, src *release.Source) error {
				trust := release.Trust{Keys: cfg.SigningKeys}
				if len(trust.Keys) == 0 {
					return usagef("signing-keys is not set: a release cannot be checked; run `ferry config set signing-keys ...`")
				}
				if production {
					rel, err := src.ByTag(ctx, release.PrefixRelease+version)
					if err != nil {
						return fmt.Errorf("%w (publish it with --staging first)", err)
					}
					if err := src.VerifyRelease(ctx, rel, version, trust); err != nil {
						return err
					}
					if !rel.Prerelease {
						fmt.Fprintf(a.stdout, "%s is a full release already: env prod takes it\n", rel.Tag)
						return nil
					}
					if err := src.SetPrerelease(ctx, rel, false); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "marked %s as a full release: env prod takes it\n", rel.Tag)
					return nil
				}
				test, err := src.ByTag(ctx, release.PrefixTest+version)
				if err != nil {
					return err
				}
				if err := src.VerifyRelease(ctx, test, version, trust); err != nil {
					return err
				}
				if _, err := src.ByTag(ctx, release.PrefixRelease+version); err == nil {
					return fmt.Errorf("%s%s exists already", release.PrefixRelease, version)
				} else if !errors.Is(err, release.ErrNotFound) {
					return err
				}
				rel, err := src.CreateRelease(ctx, release.PrefixRelease+version, test.Commitish, true, "Promoted from "+test.Tag+" by ferry release publish.")
				if err != nil {
					return err
				}
				dir, err := os.MkdirTemp("", "ferry-publish-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				if err := src.CopyAssets(ctx, test, rel, version, dir); err != nil {
					return fmt.Errorf("created %s but copying its assets failed; delete it and publish again: %w", rel.Tag, err)
				}
				fmt.Fprintf(a.stdout, "created %s (pre-release, commit %s) with %s: env staging takes it\n", rel.Tag, test.Commitish, strings.Join(release.Assets(version), ", "))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&staging, "staging", false, "create release-VERSION from test-VERSION as a pre-release")
	cmd.Flags().BoolVar(&production, "production", false, "mark release-VERSION as a full release")
	return cmd
}

func (a *app) newReleasePinCommand() *cobra.Command {
	var downgrade bool
	cmd := &cobra.Command{
		Use:   "pin VERSION",
		Short: "Hold the fleet at a version: never newer, older only with --allow-downgrade",
		Long: `Pin the fleet to VERSION. The updater never goes past it. A fleet that runs
something newer stays there, unless --allow-downgrade is given: then the
fleet goes to VERSION.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := release.ParseVersion(args[0]); err != nil {
				return &usageError{err}
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				p := &storage.Pin{Version: args[0], AllowDowngrade: downgrade, PinnedAt: a.now().UTC()}
				if err := st.PutPin(ctx, p); err != nil {
					return err
				}
				extra := ""
				if downgrade {
					extra = " (downgrade allowed)"
				}
				fmt.Fprintf(a.stdout, "pinned to %s%s\n", p.Version, extra)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&downgrade, "allow-downgrade", false, "let the fleet go back to VERSION if it runs something newer")
	return cmd
}

func (a *app) newReleaseUnpinCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unpin",
		Short: "Remove the pin: the fleet follows its env again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				if err := st.DeletePin(ctx); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "unpinned")
				return nil
			})
		},
	}
}

type releaseView struct {
	Tag        string    `json:"tag"`
	Version    string    `json:"version"`
	Kind       string    `json:"kind"`
	Envs       []string  `json:"envs"`
	Eligible   bool      `json:"eligible"`
	Current    bool      `json:"current"`
	Latest     bool      `json:"latest"`
	Pinned     bool      `json:"pinned"`
	CreatedAt  time.Time `json:"created_at"`
	AssetCount int       `json:"assets"`
}

func releaseKind(r *release.Release) string {
	switch {
	case r.Draft:
		return "draft"
	case r.Prefix == release.PrefixTest:
		return "test"
	case r.Prerelease:
		return "pre-release"
	}
	return "release"
}

func (a *app) newReleaseListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List ferry releases, marking current, latest and pinned",
		Long: `List the ferry releases of github-repo (test-, pre-release and release tags),
newest first, with the envs that would take each. Marks: * eligible for the
fleet's env, current (the version of the last rollout), latest (the newest
release the updater has seen) and pinned.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				snap, err := st.Snapshot(ctx)
				if err != nil {
					return err
				}
				if snap.ConfigErr != nil {
					return snap.ConfigErr
				}
				cfg := snap.Config
				if cfg.GitHubRepo == "" {
					return usagef("github-repo is not set; run `ferry config set github-repo OWNER/NAME`")
				}
				src, err := release.NewSource(release.Options{APIURL: cfg.GitHubAPIURL, Repo: cfg.GitHubRepo, Token: cfg.GitHubToken, Proxy: cfg.Proxy})
				if err != nil {
					return err
				}
				rels, err := src.List(ctx)
				if err != nil {
					return fmt.Errorf("cannot list releases: %w", err)
				}
				views := buildReleaseViews(rels, snap)
				if a.output == "json" {
					return a.printJSON(views)
				}
				fmt.Fprintf(a.stdout, "%s, env %s\n", cfg.GitHubRepo, cfg.Env)
				t := a.newTable("", "TAG", "KIND", "ENVS", "CREATED", "ASSETS", "MARKS")
				for _, v := range views {
					star := ""
					if v.Eligible {
						star = "*"
					}
					var marks []string
					for _, m := range []struct {
						on   bool
						name string
					}{{v.Current, "current"}, {v.Latest, "latest"}, {v.Pinned, "pinned"}} {
						if m.on {
							marks = append(marks, m.name)
						}
					}
					t.row(star, v.Tag, v.Kind, orDash(strings.Join(v.Envs, ",")), v.CreatedAt.Format("2006-01-02 15:04"), fmt.Sprint(v.AssetCount), orDash(strings.Join(marks, ",")))
				}
				return t.flush()
			})
		},
	}
}

func buildReleaseViews(rels []*release.Release, snap *storage.Snapshot) []releaseView {
	views := make([]releaseView, 0, len(rels))
	for _, r := range rels {
		v := releaseView{Tag: r.Tag, Version: r.Version.String(), Kind: releaseKind(r), CreatedAt: r.CreatedAt, AssetCount: len(r.Assets)}
		for _, env := range []storage.Env{storage.EnvDev, storage.EnvStaging, storage.EnvProd} {
			if release.Eligible(r, env) {
				v.Envs = append(v.Envs, string(env))
				if env == snap.Config.Env {
					v.Eligible = true
				}
			}
		}
		v.Current = snap.Request != nil && snap.Request.Version == v.Version && v.Eligible
		v.Latest = snap.Release != nil && snap.Release.Tag == r.Tag
		v.Pinned = snap.Pin != nil && snap.Pin.Version == v.Version && v.Eligible
		views = append(views, v)
	}
	return views
}

func (a *app) newHistoryCommand() *cobra.Command {
	var limit int64
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show the outcome of past rollouts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("--limit must be 0 (all) or more")
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				hist, err := st.GetHistory(ctx, limit)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(hist)
				}
				t := a.newTable("STARTED", "VERSION", "REASON", "RESULT", "DURATION", "SERVERS", "STOP REASON")
				for _, h := range hist {
					t.row(h.StartedAt.Format(time.RFC3339), h.Version, h.Reason, h.Result, h.Duration().Truncate(time.Second).String(), fmt.Sprint(len(h.Servers)), orDash(h.StopReason))
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().Int64Var(&limit, "limit", 20, "how many records to show; 0 for all")
	return cmd
}
