package cli

import (
	"context"
	"fmt"
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
	cmd.AddCommand(a.newReleaseListCommand())
	return cmd
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
