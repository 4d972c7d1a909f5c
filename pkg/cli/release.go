package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/bootstrap"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/spf13/cobra"
)

func (a *app) newReleaseCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "List the releases on GitHub and which env would take each",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.newReleaseListCommand(), a.newReleasePublishCommand(), a.newReleasePinCommand(), a.newReleaseUnpinCommand(), a.newReleaseUnrefuseCommand(),
		a.newReleaseWithdrawCommand(), a.newReleaseRotateKeysCommand(), a.newReleaseCheckNowCommand())
	return cmd
}

// withGitHub runs fn with the fleet's config and a release source for
// github-repo. GitHub calls get a longer bound than one etcd request.
func (a *app) withGitHub(cmd *cobra.Command, fn func(ctx context.Context, cfg *fleet.Config, src *release.Source) error) error {
	var cfg *fleet.Config
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

// trust is what this machine trusts, as a worker on it would: the release
// keys of its bootstrap config's trusted-keys, and the channels of env (any
// channel for env none).
func (a *app) trust(env fleet.Env) (release.Trust, error) {
	keys, err := trust.LoadKeys(a.cfg.TrustedKeys)
	if err != nil && !(a.cfg.Unsigned() && errors.Is(err, fs.ErrNotExist)) {
		return release.Trust{}, usagef("%v (set trusted-keys in %s, or --trusted-keys)", err, bootstrap.DefaultPath)
	}
	if env == fleet.EnvNone {
		env = fleet.EnvDev
	}
	return release.Trust{Keys: keys, Channels: release.Channels(env), AllowUnsigned: a.cfg.Unsigned()}, nil
}

func (a *app) newReleasePublishCommand() *cobra.Command {
	var staging, production bool
	var keyFile, passwordEnv string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "publish VERSION (--staging | --production) --key FILE",
		Short: "Promote a release: test- to staging, or staging to production",
		Long: `Promote a release, one deliberate step at a time, signing the manifest of
the new channel with the release key. A GitHub writer without the key cannot
promote a build: servers take a release only with a manifest for their
channel, signed by a key in their trusted-keys.

  --staging     creates release-VERSION from test-VERSION (same commit) as a
                pre-release with the same package, SHA256SUMS and signature,
                and a new manifest-staging.json; env staging takes it.
  --production  adds manifest-production.json to release-VERSION and marks
                it a full release; env prod takes it.

Both first check the release being promoted: its package, SHA256SUMS and
SHA256SUMS.minisig must be there, and its manifest for the channel it is on
must verify against this machine's trusted keys (bootstrap trusted-keys)
and must not have expired. Nothing is changed otherwise.

The key comes from --key or FERRY_SIGNING_KEY; an encrypted key's password
from the variable named by --password-env. Neither is printed.`,
		Example: `  ferry release publish 2026.01.02-1 --staging --key release.key
  ferry release publish 2026.01.02-1 --production --key release.key --valid-for 8760h`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			version := args[0]
			if _, err := release.ParseVersion(version); err != nil {
				return &usageError{err}
			}
			if staging == production {
				return usagef("give exactly one of --staging and --production")
			}
			if keyFile == "" {
				keyFile = a.getenv("FERRY_SIGNING_KEY")
			}
			if keyFile == "" {
				return usagef("no release key: give --key FILE or set FERRY_SIGNING_KEY; promoting signs the new channel's manifest")
			}
			key, err := trust.LoadPrivateKey(keyFile, a.getenv(passwordEnv))
			if err != nil {
				return &usageError{err}
			}
			return a.withGitHub(cmd, func(ctx context.Context, cfg *fleet.Config, src *release.Source) error {
				tr, err := a.trust(fleet.EnvDev)
				if err != nil {
					return err
				}
				if tr.Keys.Len() == 0 {
					return usagef("no trusted keys in %s: a release cannot be checked", a.cfg.TrustedKeys)
				}
				dir, err := os.MkdirTemp("", "ferry-publish-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				if production {
					return a.publishProduction(ctx, src, tr, key, version, dir, validFor)
				}
				return a.publishStaging(ctx, src, tr, key, version, dir, validFor)
			})
		},
	}
	cmd.Flags().BoolVar(&staging, "staging", false, "create release-VERSION from test-VERSION as a pre-release")
	cmd.Flags().BoolVar(&production, "production", false, "mark release-VERSION as a full release")
	cmd.Flags().StringVar(&keyFile, "key", "", "minisign private key that signs the new manifest (default $FERRY_SIGNING_KEY)")
	cmd.Flags().StringVar(&passwordEnv, "password-env", "FERRY_SIGNING_KEY_PASSWORD", "environment variable that holds the key's password")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the new manifest is valid (default 90 days for staging, 365 for production)")
	return cmd
}

// signManifest signs the manifest of version for channel over the package
// at debPath and uploads it to rel, replacing an older one.
func (a *app) signManifest(ctx context.Context, src *release.Source, rel *release.Release, key minisign.PrivateKey, version, channel, debPath string, validFor time.Duration) error {
	m, err := release.NewManifest(version, channel, debPath, a.now(), validFor)
	if err != nil {
		return err
	}
	files, err := release.ManifestFiles(m, key)
	if err != nil {
		return err
	}
	for name, data := range files {
		if old, ok := rel.Asset(name); ok {
			if err := src.DeleteAsset(ctx, old); err != nil {
				return err
			}
		}
		if err := src.UploadAsset(ctx, rel, name, data); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) publishProduction(ctx context.Context, src *release.Source, tr release.Trust, key minisign.PrivateKey, version, dir string, validFor time.Duration) error {
	rel, err := src.ByTag(ctx, release.PrefixRelease+version)
	if err != nil {
		return fmt.Errorf("%w (publish it with --staging first)", err)
	}
	if err := src.VerifyRelease(ctx, rel, version, tr); err != nil {
		return err
	}
	if !rel.Prerelease {
		fmt.Fprintf(a.stdout, "%s is a full release already: env prod takes it\n", rel.Tag)
		return nil
	}
	tr.Channels = []string{trust.ChannelStaging}
	path, _, err := src.FetchPackage(ctx, rel, version, tr, dir, release.DownloadOptions{})
	if err != nil {
		return err
	}
	if err := a.signManifest(ctx, src, rel, key, version, trust.ChannelProduction, path, validFor); err != nil {
		return err
	}
	if err := src.SetPrerelease(ctx, rel, false); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "signed the production manifest of %s with key %X and marked it a full release: env prod takes it\n", rel.Tag, key.ID())
	return nil
}

func (a *app) publishStaging(ctx context.Context, src *release.Source, tr release.Trust, key minisign.PrivateKey, version, dir string, validFor time.Duration) error {
	test, err := src.ByTag(ctx, release.PrefixTest+version)
	if err != nil {
		return err
	}
	if err := src.VerifyRelease(ctx, test, version, tr); err != nil {
		return err
	}
	if _, err := src.ByTag(ctx, release.PrefixRelease+version); err == nil {
		return fmt.Errorf("%s%s exists already", release.PrefixRelease, version)
	} else if !errors.Is(err, release.ErrNotFound) {
		return err
	}
	tr.Channels = []string{trust.ChannelTest}
	path, _, err := src.FetchPackage(ctx, test, version, tr, dir, release.DownloadOptions{})
	if err != nil {
		return err
	}
	rel, err := src.CreateRelease(ctx, release.PrefixRelease+version, test.Commitish, true, "Promoted from "+test.Tag+" by ferry release publish.")
	if err != nil {
		return err
	}
	if err := src.CopyAssets(ctx, test, rel, version, path); err != nil {
		return fmt.Errorf("created %s but copying its assets failed; delete it and publish again: %w", rel.Tag, err)
	}
	if err := a.signManifest(ctx, src, rel, key, version, trust.ChannelStaging, path, validFor); err != nil {
		return fmt.Errorf("created %s but its manifest could not be added; delete it and publish again: %w", rel.Tag, err)
	}
	fmt.Fprintf(a.stdout, "created %s (pre-release, commit %s) with %s and a staging manifest signed with key %X: env staging takes it\n", rel.Tag, test.Commitish, strings.Join(release.Assets(version), ", "), key.ID())
	return nil
}

func (a *app) newReleasePinCommand() *cobra.Command {
	var downgrade, stopRunning, letRunning bool
	cmd := &cobra.Command{
		Use:   "pin VERSION",
		Short: "Hold the fleet at a version: never newer, older only with --allow-downgrade",
		Long: `Pin the fleet to VERSION. The updater never goes past it. A fleet that runs
something newer stays there, unless --allow-downgrade is given: then the
fleet goes to VERSION. Servers go back only one step: to the version they ran
before the current one, and never older. --allow-downgrade refuses any other
VERSION, by the fleet's history.

A rollout to another version that is running when the pin is set is not
touched by itself: pin asks whether to stop it at its next safe point, or
takes --stop-running (the updater stops it, and ` + "`ferry recover`" + ` then rolls out
VERSION) or --let-running (it finishes; the pin holds the rollouts after
it). Without an answer, or either flag, nothing is changed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := release.ParseVersion(args[0]); err != nil {
				return &usageError{err}
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				if downgrade {
					hist, err := st.GetHistory(ctx, 0)
					if err != nil {
						return err
					}
					if err := oneStepBack(hist, args[0]); err != nil {
						return &usageError{err}
					}
				}
				snap, err := st.Snapshot(ctx)
				if err != nil {
					return err
				}
				p := &fleet.Pin{Version: args[0], AllowDowngrade: downgrade, PinnedAt: a.now().UTC(), By: operator("ferry release pin")}
				running := snap.Request
				if running != nil && (running.Finished() || running.Version == p.Version) {
					running = nil
				}
				if running != nil && !stopRunning && !letRunning {
					var err error
					if stopRunning, err = a.askStopRunning(running, p.Version); err != nil {
						return err
					}
					letRunning = !stopRunning
				}
				p.StopRunning = running != nil && stopRunning
				if err := st.PutPin(ctx, p); err != nil {
					return err
				}
				extra := ""
				if downgrade {
					extra = " (downgrade allowed)"
				}
				fmt.Fprintf(a.stdout, "pinned to %s%s\n", p.Version, extra)
				switch {
				case p.StopRunning:
					fmt.Fprintf(a.stdout, "the updater stops the rollout to %s at its next safe point; then `ferry recover` rolls out %s\n", running.Version, p.Version)
				case running != nil:
					fmt.Fprintf(a.stdout, "the rollout to %s goes on; the pin holds the rollouts after it\n", running.Version)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&downgrade, "allow-downgrade", false, "let the fleet go back to VERSION if it runs something newer")
	cmd.Flags().BoolVar(&stopRunning, "stop-running", false, "a rollout to another version is running: stop it at its next safe point")
	cmd.Flags().BoolVar(&letRunning, "let-running", false, "a rollout to another version is running: let it finish; the pin holds the next ones")
	cmd.MarkFlagsMutuallyExclusive("stop-running", "let-running")
	return cmd
}

// askStopRunning asks whether to stop the running rollout for a pin.
func (a *app) askStopRunning(req *fleet.UpdateRequest, pinned string) (bool, error) {
	fmt.Fprintf(a.stdout, "A rollout to %s is running; the pin to %s holds only the rollouts after it.\n", req.Version, pinned)
	fmt.Fprintf(a.stdout, "Stop the running rollout at its next safe point? [y/N] ")
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	if err != nil && answer == "" {
		return false, usagef("a rollout to %s is running: pass --stop-running to stop it at its next safe point, or --let-running to let it finish; nothing was changed", req.Version)
	}
	return answer == "y" || answer == "yes", nil
}

// oneStepBack applies the servers' version floor to a pinned downgrade:
// below the version the fleet last completed, only the version it ran
// before that is allowed. hist is newest first.
func oneStepBack(hist []*fleet.HistoryRecord, target string) error {
	var floor trust.Floor
	for i := len(hist) - 1; i >= 0; i-- {
		if h := hist[i]; h.Result == fleet.ResultCompleted && h.Version != floor.Current {
			floor.Previous, floor.Current = floor.Current, h.Version
		}
	}
	if err := floor.Allows(target, release.CompareStrings); err != nil {
		return fmt.Errorf("refused: the fleet runs %s; servers go back only to the version they ran before, and would refuse %s: %w", floor.Current, target, err)
	}
	return nil
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

func (a *app) newReleaseUnrefuseCommand() *cobra.Command {
	return &cobra.Command{
		ValidArgsFunction: completeFirst(a.releaseVersions),
		Use:               "unrefuse VERSION",
		Short:             "Let the updater roll out a version that a failed rollout refused",
		Long: `A rollout whose plan says on-failure: rollback and that fails rolls the fleet
back and refuses its version: the updater does not roll it out again until
a newer release comes, or until an operator who fixed the cause (a broken
dependency, a health check that was wrong) clears it here. ` + "`ferry release list`" + `
marks refused versions.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				ok, err := st.Unrefuse(ctx, args[0])
				if err != nil {
					return err
				}
				if !ok {
					return usagef("%s is not refused; `ferry release list` marks the refused versions", args[0])
				}
				fmt.Fprintf(a.stdout, "%s is no longer refused; the updater may roll it out again\n", args[0])
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
	Refused    bool      `json:"refused"`
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
					}{{v.Current, "current"}, {v.Latest, "latest"}, {v.Pinned, "pinned"}, {v.Refused, "REFUSED"}} {
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

func buildReleaseViews(rels []*release.Release, snap *fleet.Snapshot) []releaseView {
	views := make([]releaseView, 0, len(rels))
	for _, r := range rels {
		v := releaseView{Tag: r.Tag, Version: r.Version.String(), Kind: releaseKind(r), CreatedAt: r.CreatedAt, AssetCount: len(r.Assets)}
		for _, env := range []fleet.Env{fleet.EnvDev, fleet.EnvStaging, fleet.EnvProd} {
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
		v.Refused = snap.Refused[v.Version] != nil
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
					result := h.Result
					if len(h.Failed) > 0 {
						result += fmt.Sprintf(" (%d failed)", len(h.Failed))
					}
					t.row(h.StartedAt.Format(time.RFC3339), h.Version, h.Reason, result, h.Duration().Truncate(time.Second).String(), fmt.Sprint(len(h.Servers)), orDash(h.StopReason))
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().Int64Var(&limit, "limit", 20, "how many records to show; 0 for all")
	cmd.AddCommand(a.newHistoryShowCommand())
	return cmd
}

func (a *app) newHistoryShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ROLLOUT",
		Short: "Show one rollout's timeline: per step and per server, start, end, attempts, result",
		Long: `Show one past rollout step by step: for each server, when the step began
(its barrier passed) and ended, relative to the start of the rollout, how
many attempts its actions took, the result, and the error of every failed
attempt.

ROLLOUT is the STARTED time that ` + "`ferry history`" + ` prints (e.g.
2026-01-02T10:00:00Z), or a version, for the newest rollout to it.`,
		Example: `  ferry history show 2026-01-02T10:00:00Z
  ferry history show 2026.01.02-1
  ferry -o json history show 2026.01.02-1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				h, err := findRollout(ctx, st, args[0])
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(h)
				}
				a.printTimeline(h)
				return nil
			})
		},
	}
}

// findRollout finds the history record that ROLLOUT names: a start time as
// `ferry history` prints it, or a version.
func findRollout(ctx context.Context, st *storage.Storage, arg string) (*fleet.HistoryRecord, error) {
	if at, err := time.Parse(time.RFC3339Nano, arg); err == nil {
		precision := time.Second
		if at.Nanosecond() != 0 {
			precision = time.Nanosecond
		}
		recs, err := st.GetHistoryStarted(ctx, at, at.Add(precision))
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return nil, usagef("no rollout started at %s; `ferry history` lists them", arg)
		}
		return recs[len(recs)-1], nil
	}
	hist, err := st.GetHistory(ctx, 0)
	if err != nil {
		return nil, err
	}
	for _, h := range hist {
		if h.Version == arg {
			return h, nil
		}
	}
	return nil, usagef("%q is neither a rollout's start time nor a version in the history; `ferry history` lists them", arg)
}

func (a *app) printTimeline(h *fleet.HistoryRecord) {
	w := a.stdout
	fmt.Fprintf(w, "Rollout:  %s to %s, started %s, %s after %s\n", h.Reason, h.Version, h.StartedAt.Format(time.RFC3339), h.Result, h.Duration().Truncate(100*time.Millisecond))
	fmt.Fprintf(w, "Servers:  %s\n", strings.Join(h.Servers, " "))
	if h.StopReason != "" {
		fmt.Fprintf(w, "Stopped:  %s\n", h.StopReason)
	}
	for _, f := range h.Failed {
		fmt.Fprintf(w, "Failed:   %s at step %d %s: %s (the rollout went on without it)\n", f.ID, f.Step, f.StepName, f.Reason)
	}
	for _, e := range h.Events {
		fmt.Fprintf(w, "%-9s %s (+%s): %s\n", eventTitle(e.Kind)+":", e.At.Format(time.RFC3339), e.At.Sub(h.StartedAt).Truncate(100*time.Millisecond), e.Message)
	}
	fmt.Fprintln(w)
	if len(h.Timeline) == 0 {
		fmt.Fprintln(w, "No step timeline was recorded for this rollout (its workers predate timelines, or no step ran).")
		return
	}
	type row struct {
		server string
		rec    fleet.StepRecord
	}
	var rows []row
	for _, id := range h.Servers {
		for _, r := range h.Timeline[id] {
			rows = append(rows, row{id, r})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].rec.Step < rows[j].rec.Step })
	since := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return "+" + t.Sub(h.StartedAt).Truncate(100*time.Millisecond).String()
	}
	t := a.newTable("STEP", "SERVER", "START", "END", "TOOK", "ATTEMPTS", "RESULT", "MESSAGE")
	last := 0
	for _, r := range rows {
		step := ""
		if r.rec.Step != last {
			step, last = fmt.Sprintf("%d %s", r.rec.Step, r.rec.Name), r.rec.Step
		}
		took := "-"
		if !r.rec.End.IsZero() {
			took = r.rec.End.Sub(r.rec.Start).Truncate(100 * time.Millisecond).String()
		}
		var errs []string
		for i, at := range r.rec.Attempts {
			if at.Error != "" {
				errs = append(errs, fmt.Sprintf("attempt %d: %s", i+1, at.Error))
			}
		}
		if r.rec.Message != "" && len(errs) == 0 {
			errs = append(errs, r.rec.Message)
		}
		t.row(step, r.server, since(r.rec.Start), since(r.rec.End), took, fmt.Sprint(len(r.rec.Attempts)), r.rec.Result, orDash(strings.Join(errs, "; ")))
	}
	t.flush()
}

// eventTitle is a history event's kind as a title ("Paused"); "Event" for
// a record that has none.
func eventTitle(kind string) string {
	if kind == "" {
		return "Event"
	}
	r, size := utf8.DecodeRuneInString(kind)
	return string(unicode.ToUpper(r)) + kind[size:]
}

func (a *app) newReleaseCheckNowCommand() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "check-now",
		Short: "Have the updater leader look for a new release now, and say what it found",
		Long: `Ask the updater leader to look for a new release now, instead of at its
next check-update-interval, and print what the check found. The request is
trigger/check in etcd, as a GitHub webhook writes it; the leader answers it
within a second or so and records the outcome (` + "`ferry status`" + ` shows it as Last
check). --wait bounds how long to wait for the answer: with no updater
leading, nobody answers, and the command says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, closeStorage, err := a.open()
			if err != nil {
				return err
			}
			defer closeStorage()
			ctx, cancel := context.WithTimeout(cmd.Context(), a.commandTimeout)
			rev, err := st.PutCheckTrigger(ctx, &fleet.CheckTrigger{At: a.now().UTC(), Delivery: operator("ferry release check-now")})
			cancel()
			if err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			for {
				snap, err := st.Snapshot(wctx)
				if err != nil && wctx.Err() == nil {
					return err
				}
				if err == nil && snap.Check != nil && snap.Check.Trigger >= rev {
					c := snap.Check
					switch c.Result {
					case "found":
						fmt.Fprintf(a.stdout, "%s checked at %s: the newest release the fleet may take is %s\n", c.Leader, c.At.Format(time.RFC3339), c.Version)
					case "none":
						fmt.Fprintf(a.stdout, "%s checked at %s: no release for the fleet's env\n", c.Leader, c.At.Format(time.RFC3339))
					default:
						return fmt.Errorf("%s checked at %s: %s: %s", c.Leader, c.At.Format(time.RFC3339), c.Result, c.Error)
					}
					return nil
				}
				if wctx.Err() != nil {
					leader := "no updater leads (`ferry status` says Leader: -)"
					if err == nil && snap.Leader != "" {
						leader = snap.Leader + " leads, but did not answer"
					}
					return fmt.Errorf("asked for a release check; %s within %s; the check runs when a leader sees the request", leader, wait)
				}
				if err == nil {
					st.WaitChange(wctx, snap.Revision)
				}
			}
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the leader's answer")
	return cmd
}
