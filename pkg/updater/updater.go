// Package updater runs ferry-updater: an etcd leader election among the
// boot servers, whose leader finds new releases, starts rollouts, watches
// them, stops the fleet when something breaks, notifies and keeps history.
package updater

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/ferry-cd/ferry/pkg/statuspage"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ReleaseSource finds the newest release an env may take. An answer of "no
// release" is release.ErrNoRelease; any other error is a failure.
type ReleaseSource interface {
	// Latest finds the newest release env may take that skip does not
	// leave out.
	Latest(ctx context.Context, env fleet.Env, skip func(version string) bool) (*release.Release, error)
	// Resolve finds the release of a version once for the fleet (see
	// release.Source.Resolve), for the rollout request.
	Resolve(ctx context.Context, env fleet.Env, version string) (*fleet.ReleaseRef, error)
}

// Options configure an Updater.
type Options struct {
	Storage *storage.Storage
	// ID identifies this updater in the election; the server id.
	ID string
	// SessionTTL is the lease of the election session: how long a dead
	// leader keeps the lead. Default 10s.
	SessionTTL time.Duration
	Logger     *slog.Logger
	Metrics    *Metrics
	// Notifier sends notifications; default a WebhookNotifier.
	Notifier Notifier
	// NewSource builds the release source for the configured repository;
	// default release.NewSource.
	NewSource func(release.Options) (ReleaseSource, error)
	// CheckTimeout bounds one release check. Default 1m.
	CheckTimeout time.Duration
	// RetryBase and RetryMax bound the backoff after a failed check.
	// Defaults 5s and 10m; a rate limit's own wait is honoured when longer.
	RetryBase, RetryMax time.Duration
	// MaxWait bounds how long the leader sleeps without looking again.
	// Default 1m.
	MaxWait time.Duration
	// Etcd, if set, names the cause when /healthz finds etcd unreachable.
	Etcd *storage.Monitor
	// TrustedKeys is this server's key directory (bootstrap
	// trusted-keys): a withdrawals statement that one of its keys signed
	// keeps the leader from picking a withdrawn version. "" trusts none.
	TrustedKeys string
	// Channels are the release channels this server takes (bootstrap
	// channels): the leader looks only for releases of an env no wider
	// than they allow, since the workers refuse the others. Nil: any.
	Channels []string
}

// Updater is one ferry-updater.
type Updater struct {
	opts    Options
	st      *storage.Storage
	log     *slog.Logger
	metrics *Metrics
	notify  *dispatcher
	page    *statuspage.Server
	leading atomic.Bool
}

// New builds an Updater; Run starts it.
func New(o Options) *Updater {
	if o.SessionTTL <= 0 {
		o.SessionTTL = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Notifier == nil {
		o.Notifier = &WebhookNotifier{}
	}
	if o.NewSource == nil {
		o.NewSource = func(ro release.Options) (ReleaseSource, error) { return release.NewSource(ro) }
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = time.Minute
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 5 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 10 * time.Minute
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Minute
	}
	log := o.Logger.With("updater", o.ID)
	return &Updater{
		opts: o, st: o.Storage, log: log, metrics: o.Metrics,
		notify: newDispatcher(o.Notifier, log, o.Metrics),
		page:   statuspage.New(statuspage.Options{Store: o.Storage, Etcd: o.Etcd, ServedBy: o.ID, Logger: log}),
	}
}

// IsLeader reports whether this updater leads now.
func (u *Updater) IsLeader() bool { return u.leading.Load() }

// Handler serves /metrics, /healthz, /webhook and the status page at /.
func (u *Updater) Handler() http.Handler {
	mux := u.opsMux()
	mux.Handle("/", u.page.Handler())
	return mux
}

// OpsHandler serves /metrics, /healthz and /webhook without the status
// page, for an updater that serves the page on an address of its own.
func (u *Updater) OpsHandler() http.Handler { return u.opsMux() }

// StatusPage serves the read-only status page (package statuspage) at /.
func (u *Updater) StatusPage() http.Handler { return u.page.Handler() }

func (u *Updater) opsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(u.metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", u.st.HealthHandler(u.opts.Etcd, func() string { return fmt.Sprintf("leader=%v", u.IsLeader()) }))
	mux.Handle("/webhook", WebhookHandler(u.st, u.log))
	return mux
}

// Run takes part in the election until ctx ends. While it leads, it runs
// the leader loop. It returns nil when ctx ends.
func (u *Updater) Run(ctx context.Context) error {
	go u.notify.run(ctx)
	waits := retry.Policy{Base: 500 * time.Millisecond, Max: 30 * time.Second}.BackOff()
	for {
		err := u.campaignAndLead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			waits.Reset()
		}
		wait := waits.NextBackOff()
		u.log.Warn("not leading; campaigning again", "error", err, "in", wait)
		if !retry.Sleep(ctx, wait) {
			return nil
		}
	}
}

func (u *Updater) campaignAndLead(ctx context.Context) error {
	ttl := int(u.opts.SessionTTL.Round(time.Second) / time.Second)
	// A session needs etcd to grant a lease; say so while it does not.
	waiting := time.AfterFunc(5*time.Second, func() {
		u.log.Warn("waiting for an election session: etcd does not grant the lease yet")
	})
	sess, err := concurrency.NewSession(u.st.Client(), concurrency.WithTTL(max(ttl, 1)), concurrency.WithContext(ctx))
	waiting.Stop()
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer func() {
		// Revoke the lease even when ctx has ended, so that another
		// updater leads at once instead of after the TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		sess.Orphan()
		u.st.Client().Revoke(rctx, sess.Lease())
	}()

	// The session may die while we wait in Campaign; stop waiting then.
	sctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancelCause(fmt.Errorf("the election session ended: etcd did not renew its lease within session-ttl %s", u.opts.SessionTTL))
		case <-sctx.Done():
		}
	}()

	elec := concurrency.NewElection(sess, u.st.UpdaterElectionPrefix())
	// A Campaign that is cancelled resigns with the client's own context,
	// which waits for etcd however long it is away: shutdown does not
	// wait for that.
	campaigned := make(chan error, 1)
	go func() { campaigned <- elec.Campaign(sctx, u.opts.ID) }()
	select {
	case err = <-campaigned:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err != nil {
		if cause := context.Cause(sctx); ctx.Err() == nil && cause != nil {
			err = cause
		}
		return fmt.Errorf("campaign: %w", err)
	}
	leaderKey := elec.Key()
	// Step down the moment the election key goes (lease revoked or
	// expired), without waiting for the session's keepalive to notice.
	go func() {
		for resp := range u.st.Client().Watch(sctx, leaderKey, clientv3.WithFilterPut(), clientv3.WithRev(elec.Rev()+1)) {
			if err := resp.Err(); err != nil {
				cancelCause(fmt.Errorf("watching the election key: %w", err))
				return
			}
			if len(resp.Events) > 0 {
				cancelCause(errors.New("the election key was deleted: the lease expired or was revoked"))
				return
			}
		}
	}()
	u.leading.Store(true)
	u.metrics.leader.Set(1)
	u.log.Info("leading", "key", leaderKey)
	defer func() {
		u.leading.Store(false)
		u.metrics.leader.Set(0)
		u.metrics.rolloutDuration.Set(0)
		u.metrics.rolloutStart.Set(0)
		u.metrics.observeFleet(nil)
	}()

	err = u.lead(sctx, u.st.AsLeader(leaderKey))
	if errors.Is(err, storage.ErrNoLeader) {
		u.log.Warn("lost the lead: a write was refused by the fence")
	}
	if cause := context.Cause(sctx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// readEvery bounds how often the leader reads a snapshot of the fleet.
const readEvery = 100 * time.Millisecond

// leaderState is what a leader remembers between loop turns. A new leader
// starts afresh: grace periods restart, and it checks for a release at once.
type leaderState struct {
	lastGood  *fleet.Config
	configErr string
	// withdrawals is the withdrawals statement with the highest serial
	// this leader verified.
	withdrawals *trust.Statement
	// narrowed is the env of etcd that this server's channels narrowed,
	// logged once; "" when they did not.
	narrowed     fleet.Env
	missingSince map[string]time.Time
	lastWhy      string
	// pausedNow is the pause the fleet waits in, "rollout/pause", or "".
	pausedNow string

	source      ReleaseSource
	sourceKey   [32]byte
	triggerRev  int64
	lastCheckAt time.Time
	failures    int
	retryAfter  time.Duration
	// checkWaits are the waits after failed checks, from the first.
	checkWaits backoff.BackOff
	// staleNotified is the release last reported as stale.
	staleNotified string
	// resolveAt is when a release that could not be resolved for a new
	// rollout is tried again; resolveFailures counts the tries.
	resolveAt       time.Time
	resolveFailures int
	resolveWaits    backoff.BackOff
	// coordFor is the rollout whose barriers this leader coordinates, and
	// stopCoord ends that.
	coordFor    time.Time
	coordFailed int
	stopCoord   context.CancelFunc
}

// coordinate keeps a barrier coordinator (storage.Coordinate) running for
// the running request, and none otherwise.
func (u *Updater) coordinate(ctx context.Context, ls *leaderState, snap *fleet.Snapshot, leader *storage.Leader) {
	req := snap.Request
	running := req != nil && !req.Finished() && !req.Stop
	// A revised request (a server the rollout goes on without) changes
	// whom the barriers wait for: the coordinator starts again with it.
	if running && ls.stopCoord != nil && ls.coordFor.Equal(req.StartedAt) && ls.coordFailed == len(req.Failed) {
		return
	}
	if ls.stopCoord != nil {
		ls.stopCoord()
		ls.stopCoord, ls.coordFor = nil, time.Time{}
	}
	if !running {
		return
	}
	cctx, cancel := context.WithCancel(ctx)
	ls.stopCoord, ls.coordFor, ls.coordFailed = cancel, req.StartedAt, len(req.Failed)
	r := *req
	go func() {
		if err := leader.Coordinate(cctx, &r); err != nil && cctx.Err() == nil {
			u.log.Warn("the barrier coordinator stopped", "version", r.Version, "error", err)
		}
	}()
}

func (u *Updater) lead(ctx context.Context, leader *storage.Leader) error {
	defaults, _ := fleet.ParseConfig(nil)
	ls := &leaderState{lastGood: defaults, missingSince: map[string]time.Time{}}
	defer func() {
		if ls.stopCoord != nil {
			ls.stopCoord()
		}
	}()
	var lastRead time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// A large fleet's statuses change many times a second during a
		// rollout; reading the whole fleet at most every readEvery keeps
		// the leader's cost from growing with the square of the fleet.
		retry.Sleep(ctx, time.Until(lastRead.Add(readEvery)))
		lastRead = time.Now()
		snap, err := u.st.Snapshot(ctx)
		if err != nil {
			u.log.Warn("cannot read etcd", "error", err)
			retry.Sleep(ctx, time.Second)
			continue
		}
		now := time.Now()
		cfg, ok := u.config(ls, snap)
		u.coordinate(ctx, ls, snap, leader)
		u.metrics.observeFleet(snap)

		if err := u.maybeCheck(ctx, ls, snap, cfg, ok, now, leader); err != nil {
			return err
		}
		ls.trackMissing(snap, now)
		act := NextAction(Input{Snap: snap, Config: cfg, ConfigOK: ok, Now: now, MissingSince: ls.missingSince})
		if act.Kind == NewRequest {
			act = u.resolve(ctx, ls, act, cfg, now)
		}
		if err := u.notePause(ctx, ls, snap, act, cfg, now, leader); err != nil {
			if errors.Is(err, storage.ErrNoLeader) {
				return err
			}
			u.log.Warn("cannot record the pause or resume in the rollout", "error", err)
		}
		if act.Why != ls.lastWhy {
			u.log.Info(act.Why, "action", act.Kind.String(), "version", requestVersion(snap))
			ls.lastWhy = act.Why
		}
		if act.Kind != Wait {
			if err := u.execute(ctx, act, snap, cfg, now, leader); err != nil {
				if errors.Is(err, storage.ErrNoLeader) || ctx.Err() != nil {
					return err
				}
				u.log.Error("cannot carry out the action", "action", act.Kind.String(), "error", err)
				retry.Sleep(ctx, time.Second)
			}
			continue
		}
		if r := snap.Request; r != nil && !r.Finished() {
			u.metrics.rolloutDuration.Set(now.Sub(r.StartedAt).Seconds())
			u.metrics.rolloutStart.Set(float64(r.StartedAt.Unix()))
		} else {
			u.metrics.rolloutDuration.Set(0)
			u.metrics.rolloutStart.Set(0)
		}

		wake := now.Add(u.opts.MaxWait)
		if !act.Until.IsZero() && act.Until.Before(wake) {
			wake = act.Until
		}
		if next := ls.nextCheck(cfg, now); !next.IsZero() && next.Before(wake) {
			wake = next
		}
		u.waitChanges(ctx, snap.Revision, wake)
	}
}

func requestVersion(snap *fleet.Snapshot) string {
	if snap.Request == nil {
		return ""
	}
	return snap.Request.Version
}

// config returns the config to act on: the stored one, or the last valid
// one (ok=false) while the stored one is broken.
func (u *Updater) config(ls *leaderState, snap *fleet.Snapshot) (*fleet.Config, bool) {
	if snap.ConfigErr != nil {
		if msg := snap.ConfigErr.Error(); msg != ls.configErr {
			u.log.Error("the stored config is broken; no new rollout starts until it is fixed", "error", msg)
			ls.configErr = msg
		}
		return ls.lastGood, false
	}
	ls.configErr = ""
	cfg := snap.Config
	if u.opts.Channels != nil {
		if env := release.EnvWithin(cfg.Env, u.opts.Channels); env != cfg.Env {
			if ls.narrowed != cfg.Env {
				u.log.Warn("the fleet's env asks for releases of channels this server does not take; looking for a narrower env", "env", cfg.Env, "channels", strings.Join(u.opts.Channels, ","), "looks_for", env)
			}
			narrowed := *cfg
			narrowed.Env, ls.narrowed = env, cfg.Env
			cfg = &narrowed
		} else {
			ls.narrowed = ""
		}
	}
	ls.lastGood = cfg
	return cfg, true
}

func (ls *leaderState) trackMissing(snap *fleet.Snapshot, now time.Time) {
	req := snap.Request
	if req == nil || req.Finished() {
		clear(ls.missingSince)
		return
	}
	for id := range ls.missingSince {
		if !req.IsMember(id) || snap.Alive[id] != nil {
			delete(ls.missingSince, id)
		}
	}
	for _, id := range req.Servers {
		if _, seen := ls.missingSince[id]; !seen && snap.Alive[id] == nil {
			ls.missingSince[id] = now
		}
	}
}

func (u *Updater) waitChanges(ctx context.Context, rev int64, wake time.Time) {
	wctx, cancel := context.WithDeadline(ctx, wake)
	defer cancel()
	err := u.st.WaitChange(wctx, rev)
	if err != nil && wctx.Err() == nil && !errors.Is(err, storage.ErrCompacted) {
		u.log.Warn("watch failed", "error", err)
		retry.Sleep(ctx, time.Second)
	}
}

// --- release checks ---

// sourceKey identifies the settings a source was built from; a change
// rebuilds the source and checks at once.
func sourceKey(cfg *fleet.Config) [32]byte {
	return sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s", cfg.Env, cfg.GitHubRepo, cfg.GitHubAPIURL, cfg.GitHubToken, cfg.Proxy)))
}

// nextCheck is when the next scheduled check is due: check-update-interval
// after the last one (or the retry delay after a failure), and not before
// the next release-time window. Zero when no check is scheduled.
func (ls *leaderState) nextCheck(cfg *fleet.Config, now time.Time) time.Time {
	if ls.source == nil || cfg.Env == fleet.EnvNone {
		return time.Time{}
	}
	if ls.lastCheckAt.IsZero() {
		return now
	}
	next := ls.lastCheckAt.Add(cfg.CheckUpdateInterval)
	if ls.failures > 0 {
		next = ls.lastCheckAt.Add(ls.retryAfter)
	}
	if w := cfg.NextReleaseWindow(next); w.After(next) && ls.failures == 0 {
		next = w
	}
	return next
}

func (u *Updater) maybeCheck(ctx context.Context, ls *leaderState, snap *fleet.Snapshot, cfg *fleet.Config, ok bool, now time.Time, leader *storage.Leader) error {
	if !ok || cfg.Env == fleet.EnvNone || cfg.GitHubRepo == "" {
		return nil
	}
	due := false
	if key := sourceKey(cfg); ls.source == nil || key != ls.sourceKey {
		src, err := u.opts.NewSource(release.Options{
			APIURL: cfg.GitHubAPIURL, Repo: cfg.GitHubRepo, Token: cfg.GitHubToken, Proxy: cfg.Proxy,
			ObserveStatus: u.metrics.observeGitHub,
		})
		if err != nil {
			u.log.Error("cannot build the release source", "error", err)
			return nil
		}
		ls.source, ls.sourceKey, ls.failures, ls.lastCheckAt = src, key, 0, time.Time{}
		due = true
	}
	trigger := int64(0)
	if snap.TriggerRev > ls.triggerRev {
		ls.triggerRev, trigger = snap.TriggerRev, snap.TriggerRev
		due = true
	}
	if next := ls.nextCheck(cfg, now); !next.After(now) {
		due = true
	}
	if !due {
		return nil
	}
	return u.check(ctx, ls, snap, cfg, now, trigger, leader)
}

// withdrawn lists the versions that a withdrawals statement, signed by a
// key of this server's and newer than any seen before, withdrew. What
// cannot be read or verified is logged, and the last one verified holds.
func (u *Updater) withdrawn(ctx context.Context, ls *leaderState) []string {
	if u.opts.TrustedKeys == "" {
		return nil
	}
	sd, err := u.st.GetWithdrawals(ctx)
	if err == nil {
		var keys trust.KeyRing
		if keys, err = trust.LoadKeys(u.opts.TrustedKeys); err == nil {
			var s *trust.Statement
			if s, err = sd.Verify(trust.KindWithdrawals, keys.Any); err == nil && (ls.withdrawals == nil || s.Serial > ls.withdrawals.Serial) {
				ls.withdrawals = s
			}
		}
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		u.log.Warn("cannot use the withdrawals statement; keeping the last one verified", "error", err)
	}
	if ls.withdrawals == nil {
		return nil
	}
	return ls.withdrawals.Withdrawn
}

// check asks GitHub for the newest release; trigger is the revision of the
// trigger/check it answers, 0 for a scheduled check.
func (u *Updater) check(ctx context.Context, ls *leaderState, snap *fleet.Snapshot, cfg *fleet.Config, now time.Time, trigger int64, leader *storage.Leader) error {
	cctx, cancel := context.WithTimeout(ctx, u.opts.CheckTimeout)
	withdrawn := u.withdrawn(cctx, ls)
	rel, err := ls.source.Latest(cctx, cfg.Env, func(v string) bool { return slices.Contains(withdrawn, v) })
	cancel()
	ls.lastCheckAt = now
	u.metrics.lastCheck.Set(float64(now.Unix()))
	if err == nil || errors.Is(err, release.ErrNoRelease) {
		u.metrics.lastCheckOK.Set(1)
	} else {
		u.metrics.lastCheckOK.Set(0)
	}
	defer func() { u.recordCheck(ctx, snap, rel, err, now, trigger, leader) }()
	switch {
	case err == nil:
		u.metrics.checks.WithLabelValues("found").Inc()
		ls.failures = 0
		u.checkFreshness(ls, rel.Version.String(), rel.PublishedAt, cfg, now)
		info := &fleet.ReleaseInfo{Env: cfg.Env, Version: rel.Version.String(), Tag: rel.Tag, Prerelease: rel.Prerelease, PublishedAt: rel.PublishedAt}
		if old := snap.Release; old != nil && old.Env == info.Env && old.Version == info.Version && old.Tag == info.Tag && old.Prerelease == info.Prerelease {
			return nil
		}
		if err := leader.PutReleaseInfo(ctx, info); err != nil {
			if errors.Is(err, storage.ErrNoLeader) {
				return err
			}
			// Not recorded, not done: retry soon rather than after a
			// whole check-update-interval.
			u.checkFailed(ls, err, now)
			u.log.Error("cannot record the release; will check again", "version", info.Version, "error", err, "retry_in", ls.retryAfter)
			return nil
		}
		u.log.Info("release found", "version", info.Version, "tag", info.Tag, "env", cfg.Env, "prerelease", info.Prerelease)
	case errors.Is(err, release.ErrNoRelease):
		u.metrics.checks.WithLabelValues("none").Inc()
		ls.failures = 0
		u.log.Debug("no release for this env", "env", cfg.Env, "detail", err)
	default:
		result := "error"
		if _, limited := retry.After(err, now); limited {
			result = "rate_limited"
		}
		u.metrics.checks.WithLabelValues(result).Inc()
		u.checkFailed(ls, err, now)
		// A failed check says nothing about releases: info/release and any
		// request stay as they are.
		u.log.Warn("release check failed; will retry", "error", err, "result", result, "retry_in", ls.retryAfter, "failures", ls.failures)
	}
	return nil
}

// checkFailed schedules the next release check after a failed one: a
// backoff from RetryBase to RetryMax, or what GitHub asked for when longer.
func (u *Updater) checkFailed(ls *leaderState, err error, now time.Time) {
	if ls.failures == 0 {
		ls.checkWaits = retry.Policy{Base: u.opts.RetryBase, Max: u.opts.RetryMax}.BackOff()
	}
	ls.retryAfter = retry.Delay(ls.checkWaits, err, now)
	ls.failures++
}

// recordCheck writes info/check, so that `ferry status` can say how the
// leader's last check went: when the outcome changed, for a check that a
// trigger asked for, and otherwise at most once a minute, so that a
// frequent check does not write etcd each time.
func (u *Updater) recordCheck(ctx context.Context, snap *fleet.Snapshot, rel *release.Release, err error, now time.Time, trigger int64, leader *storage.Leader) {
	c := &fleet.CheckInfo{At: now.UTC(), Result: "found", Leader: u.opts.ID, Trigger: trigger}
	switch {
	case err == nil:
		c.Version = rel.Version.String()
	case errors.Is(err, release.ErrNoRelease):
		c.Result = "none"
	default:
		c.Result, c.Error = "error", err.Error()
		if _, limited := retry.After(err, now); limited {
			c.Result = "rate_limited"
		}
	}
	if old := snap.Check; trigger == 0 && old != nil && old.Result == c.Result && old.Version == c.Version && old.Error == c.Error && old.Leader == c.Leader && now.Sub(old.At) < time.Minute {
		return
	}
	if err := leader.PutCheckInfo(ctx, c); err != nil && ctx.Err() == nil {
		u.log.Warn("cannot record the release check", "error", err)
	}
}

// checkFreshness sets the newest release's metrics and notifies once per
// release when it is older than release-max-age: a mirror that stopped
// updating, or a nightly that stopped publishing.
func (u *Updater) checkFreshness(ls *leaderState, version string, published time.Time, cfg *fleet.Config, now time.Time) {
	u.metrics.releaseTime.Set(float64(published.Unix()))
	age := now.Sub(published)
	if cfg.ReleaseMaxAge <= 0 || published.IsZero() || age <= cfg.ReleaseMaxAge {
		u.metrics.releaseStale.Set(0)
		return
	}
	u.metrics.releaseStale.Set(1)
	if ls.staleNotified == version {
		return
	}
	ls.staleNotified = version
	msg := fmt.Sprintf("published %s ago (%s), release-max-age is %s", age.Truncate(time.Hour), published.UTC().Format(time.RFC3339), cfg.ReleaseMaxAge)
	u.log.Warn("the newest release is stale", "version", version, "published_at", published, "age_seconds", age.Seconds(), "release_max_age_seconds", cfg.ReleaseMaxAge.Seconds())
	u.notifyOf(cfg, Event{Kind: EventStale, Version: version, Message: msg})
}

// --- actions ---

// resolve looks the release of a new rollout up once, for every worker (see
// release.Source.Resolve). A transient error postpones the rollout, with
// backoff; a permanent one (no such release) starts it without: each
// worker then looks the release up itself and fails loudly.
func (u *Updater) resolve(ctx context.Context, ls *leaderState, act Action, cfg *fleet.Config, now time.Time) Action {
	req := act.Request
	if ls.source == nil {
		return act
	}
	wait := Action{Kind: Wait, Until: ls.resolveAt, Why: fmt.Sprintf("the rollout to %s waits to look its release up again after a transient error", req.Version)}
	if now.Before(ls.resolveAt) {
		return wait
	}
	rctx, cancel := context.WithTimeout(ctx, u.opts.CheckTimeout)
	ref, err := ls.source.Resolve(rctx, cfg.Env, req.Version)
	cancel()
	switch {
	case err == nil:
		req.Release, ls.resolveFailures = ref, 0
	case ctx.Err() != nil:
		return Action{Kind: Wait, Why: "stopping"}
	case retry.Transient(err):
		// A rollout waits on this: back off as a worker does, from 1s to
		// 1m, unless GitHub asks for longer.
		if ls.resolveFailures == 0 {
			ls.resolveWaits = retry.Policy{Base: min(u.opts.RetryBase, time.Second), Max: min(u.opts.RetryMax, time.Minute)}.BackOff()
		}
		delay := retry.Delay(ls.resolveWaits, err, now)
		ls.resolveFailures++
		ls.resolveAt = now.Add(delay)
		u.log.Warn("cannot look the release up for the rollout; will try again", "version", req.Version, "error", err, "retry_in_seconds", delay.Seconds())
		wait.Until = ls.resolveAt
		return wait
	default:
		ls.resolveFailures = 0
		u.log.Warn("cannot look the release up; the rollout starts without it, and each worker looks it up itself", "version", req.Version, "error", err)
	}
	return act
}

// notePause records in the request, and notifies, when the fleet comes to
// wait in a pause (behind a canary, or ferry rollout pause) and when it goes
// on again.
func (u *Updater) notePause(ctx context.Context, ls *leaderState, snap *fleet.Snapshot, act Action, cfg *fleet.Config, now time.Time, leader *storage.Leader) error {
	req := snap.Request
	if req == nil || req.Finished() {
		ls.pausedNow = ""
		return nil
	}
	rollout := req.StartedAt.String() + "/"
	key := ""
	if act.Paused != "" {
		key = rollout + act.Paused
	}
	if key == ls.pausedNow {
		return nil
	}
	ev := fleet.RolloutEvent{At: now.UTC(), Kind: "paused", Message: act.Why}
	kind, notify := EventPaused, true
	switch {
	case key == "" && !strings.HasPrefix(ls.pausedNow, rollout):
		ls.pausedNow = "" // a pause of an earlier rollout
		return nil
	case key == "":
		ev.Kind, ev.Message, kind = "resumed", "resumed by an operator (ferry rollout resume)", EventResumed
		if r := snap.Resume; r != nil && strings.HasPrefix(r.By, "ferry-updater") {
			// The leader that resumed it has notified.
			ev.Message, notify = "resumed by "+r.By, false
		}
	default:
		if n := len(req.Events); n > 0 && req.Events[n-1].Kind == ev.Kind && req.Events[n-1].Message == ev.Message {
			ls.pausedNow = key // recorded and notified by an earlier leader
			return nil
		}
	}
	revised := *req
	revised.Events = append(slices.Clone(req.Events), ev)
	if err := leader.ReviseRequest(ctx, &revised, snap.RequestRev); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil // pausedNow is unchanged: the next look records it
		}
		return err
	}
	ls.pausedNow = key
	if notify {
		u.notifyOf(cfg, Event{Kind: kind, Version: req.Version, Reason: req.Reason, Servers: req.Servers, Message: ev.Message, StartedAt: req.StartedAt})
	}
	return nil
}

// notifyOf sends e to notify-url, if set, with a link to status-url.
func (u *Updater) notifyOf(cfg *fleet.Config, e Event) {
	e.Link = cfg.StatusURL
	u.notify.enqueue(cfg.NotifyURL, e)
}

func (u *Updater) execute(ctx context.Context, act Action, snap *fleet.Snapshot, cfg *fleet.Config, now time.Time, leader *storage.Leader) error {
	switch act.Kind {
	case NewRequest:
		req := act.Request
		if err := leader.StartRequest(ctx, req); err != nil {
			return err
		}
		u.log.Info("rollout started", "version", req.Version, "reason", req.Reason, "servers", req.Servers)
		u.notifyOf(cfg, Event{Kind: EventStart, Version: req.Version, Reason: req.Reason, Servers: req.Servers, StartedAt: req.StartedAt})
	case RollBack:
		// The request's From, and the on-failure in a status, are etcd's
		// word: go back only to the version the fleet last completed.
		last, err := u.st.LastCompleted(ctx, snap.Request.StartedAt)
		if err != nil {
			return err
		}
		if last != act.Request.Version {
			cause := *act.Cause
			cause.Message += fmt.Sprintf("; no rollback: the rollout says it came from %s, but the last completed rollout was to %s", act.Request.Version, cmp.Or(last, "nothing"))
			u.log.Error("refusing a rollback whose target is not the last completed version", "from", act.Request.Version, "last_completed", last)
			return u.execute(ctx, Action{Kind: Stop, Why: cause.String(), Cause: &cause}, snap, cfg, now, leader)
		}
		failed := *snap.Request
		failed.FinishedAt = now.UTC()
		c := act.Cause
		failed.StopReason = fmt.Sprintf("%s; rolled back to %s", c, failed.From)
		timeline, err := u.st.Timeline(ctx, failed.StartedAt)
		if err != nil {
			return err
		}
		hist := fleet.NewHistoryRecord(&failed, snap.Statuses, timeline, fleet.ResultFailed, failed.FinishedAt)
		hist.StopReason = failed.StopReason
		refused := &fleet.Refused{Version: failed.Version, At: now.UTC(), Reason: c.String(), Rollout: failed.StartedAt}
		next := act.Request
		if err := leader.RollBack(ctx, hist, refused, next, snap.RequestRev); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				u.log.Info("the rollout changed before it could be rolled back; deciding again", "version", failed.Version)
				return nil
			}
			return err
		}
		u.metrics.rollouts.WithLabelValues(fleet.ResultFailed).Inc()
		u.log.Error("rollout FAILED; rolling back", "version", failed.Version, "to", next.Version, "reason", c.String(), "server", c.Server)
		u.notifyOf(cfg, Event{Kind: EventRollback, Version: failed.Version, Reason: failed.Reason, Servers: failed.Servers, Server: c.Server,
			Message: fmt.Sprintf("%s; rolling back to %s; %s is refused until a newer release or `ferry release unrefuse %s`", c, next.Version, failed.Version, failed.Version), StartedAt: failed.StartedAt})
	case ResumeCanary:
		req := snap.Request
		if err := leader.PutResume(ctx, &fleet.Resume{Rollout: req.StartedAt, Step: act.Step, At: now.UTC(), By: "ferry-updater " + u.opts.ID + ": " + act.Why}); err != nil {
			return err
		}
		u.log.Info("the rest of the servers go on after the canary", "version", req.Version, "step", act.Step, "why", act.Why)
		if req.Reason == fleet.ReasonRollback {
			// No pause was recorded, so no resume will be: the record
			// says here why nobody was waited for.
			revised := *req
			revised.Events = append(slices.Clone(req.Events), fleet.RolloutEvent{At: now.UTC(), Kind: "resumed", Message: act.Why})
			if err := leader.ReviseRequest(ctx, &revised, snap.RequestRev); err != nil && !errors.Is(err, storage.ErrConflict) {
				return err
			}
		}
		u.notifyOf(cfg, Event{Kind: EventResumed, Version: req.Version, Reason: req.Reason, Servers: req.Servers, Message: act.Why, StartedAt: req.StartedAt})
	case GoOnWithout:
		req := *snap.Request
		c := act.Cause
		reason := c.Message
		if c.Result == fleet.ResultDead {
			reason = "no live worker for " + c.Message
		}
		req.Failed = append(append([]fleet.FailedServer(nil), req.Failed...), fleet.FailedServer{ID: c.Server, Step: c.Step, StepName: c.StepName, Reason: reason, At: now.UTC()})
		if err := leader.ReviseRequest(ctx, &req, snap.RequestRev); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				u.log.Info("the rollout changed before the leader could go on without a server; deciding again", "version", req.Version)
				return nil
			}
			return err
		}
		msg := fmt.Sprintf("%s (%d of max-failures %d at step %d %s)", reason, req.FailuresAt(c.Step), c.MaxFailures, c.Step, c.StepName)
		u.log.Error("a server failed; the rollout goes on without it", "version", req.Version, "server", c.Server, "step", c.Step, "reason", reason, "max_failures", c.MaxFailures)
		u.notifyOf(cfg, Event{Kind: EventServerFailed, Version: req.Version, Reason: req.Reason, Servers: req.Servers, Server: c.Server, Message: msg, StartedAt: req.StartedAt})
	case Stop, Complete:
		req := *snap.Request
		req.FinishedAt = now.UTC()
		timeline, err := u.st.Timeline(ctx, req.StartedAt)
		if err != nil {
			return err
		}
		hist := fleet.NewHistoryRecord(&req, snap.Statuses, timeline, fleet.ResultCompleted, req.FinishedAt)
		ev := Event{Kind: EventSuccess, Version: req.Version, Reason: req.Reason, Servers: req.Servers, StartedAt: req.StartedAt, Duration: req.FinishedAt.Sub(req.StartedAt)}
		for _, f := range req.Failed {
			ev.Failed = append(ev.Failed, f.ID)
		}
		if act.Kind == Stop {
			req.Stop, req.StopReason = true, act.Cause.String()
			hist.Result, hist.StopReason = act.Cause.Result, req.StopReason
			ev.Server, ev.Message = act.Cause.Server, act.Cause.Message
			ev.Kind = map[string]EventKind{fleet.ResultAborted: EventAbort, fleet.ResultTimeout: EventTimeout, fleet.ResultDead: EventDeadServer}[act.Cause.Result]
		}
		if err := leader.FinishRequest(ctx, &req, hist, snap.RequestRev); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				// Recovered or replaced since the snapshot: decide again.
				u.log.Info("the rollout changed before it could be finished; deciding again", "version", req.Version)
				return nil
			}
			return err
		}
		u.metrics.rollouts.WithLabelValues(hist.Result).Inc()
		if act.Kind == Stop {
			u.log.Error("rollout STOPPED", "version", req.Version, "reason", req.StopReason, "server", act.Cause.Server)
		} else {
			u.log.Info("rollout completed", "version", req.Version, "duration", hist.Duration())
		}
		u.notifyOf(cfg, ev)
	}
	return nil
}
