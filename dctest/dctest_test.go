// Package dctest is ferry's datacenter test: every scenario brings up a
// virtual datacenter (dctest/harness) and drives it through the public
// programs only: real .debs of two versions installed by real dpkg, a
// 3-member etcd cluster of separate processes, the daemons run from the
// servers' roots under a supervisor, a registry and containerd.
package dctest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Two versions: the fleet starts at N and upgrades to N1. By default both
// are built from this tree. The nightly job passes the package it built as
// FERRY_DCTEST_TO_DEB (version FERRY_DCTEST_TO_VERSION) and, when a release
// exists, the newest release as FERRY_DCTEST_FROM_DEB/_VERSION.
var (
	N  = "2026.01.01-1"
	N1 = "2026.01.02-1"
)

// older is a version below any N.
const older = "1999.12.31-1"

var build *harness.Build

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-dctest-build-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	began := time.Now()
	toDeb, fromDeb := os.Getenv("FERRY_DCTEST_TO_DEB"), os.Getenv("FERRY_DCTEST_FROM_DEB")
	var versions []string
	switch {
	case toDeb != "" && fromDeb != "":
		N, N1 = os.Getenv("FERRY_DCTEST_FROM_VERSION"), os.Getenv("FERRY_DCTEST_TO_VERSION")
	case toDeb != "":
		// No release yet: start from this tree at a version below any.
		N, N1 = "2000.01.01-1", os.Getenv("FERRY_DCTEST_TO_VERSION")
		versions = []string{N}
	default:
		versions = []string{N, N1}
	}
	build, err = harness.BuildAll("..", dir, versions...)
	if err == nil && toDeb != "" {
		build.Debs[N1] = toDeb
		if fromDeb != "" {
			build.Debs[N] = fromDeb
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dctest: build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "dctest: built ferry %s and %s in %s\n", N, N1, time.Since(began).Round(time.Second))
	unlimitGoParallel()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// dc is one scenario's datacenter.
type dc struct {
	*harness.Datacenter
	t   *testing.T
	ctx context.Context
}

func start(t *testing.T) *dc {
	t.Helper()
	return startFor(t, within(4*time.Minute))
}

// startFor starts a datacenter for a scenario that may take up to limit.
func startFor(t *testing.T, limit time.Duration) *dc {
	t.Helper()
	return startWith(t, limit, harness.Options{})
}

// startWith starts a datacenter shaped by o (Dir and Build are filled in).
func startWith(t *testing.T, limit time.Duration, o harness.Options) *dc {
	t.Helper()
	runs.run(t)
	began := time.Now()
	t.Cleanup(func() { t.Logf("scenario took %s", time.Since(began).Round(100*time.Millisecond)) })
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	o.Dir, o.Build = t.TempDir(), build
	d, err := harness.Start(o)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for id, s := range d.Servers {
				t.Logf("=== %s worker log (tail)\n%s", id, tail(s.Log("ferry-worker"), 30))
				t.Logf("=== %s updater log (tail)\n%s", id, tail(s.Log("ferry-updater"), 15))
			}
			for id, m := range d.Machines {
				for _, unit := range []string{"ferry-worker", "ferry-updater"} {
					j, _ := m.Journal(context.Background(), unit)
					t.Logf("=== %s journal of %s (tail)\n%s", id, unit, tail(j, 30))
				}
				w, _ := m.Exec(context.Background(), "journalctl", "--no-pager", "-p", "warning", "-o", "short-precise")
				t.Logf("=== %s journal, warnings and worse (tail)\n%s", id, tail(w, 20))
			}
		}
		d.Close()
	})
	return &dc{Datacenter: d, t: t, ctx: ctx}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (d *dc) ferry(args ...string) string {
	d.t.Helper()
	out, stderr, code := d.Ferry(d.ctx, args...)
	require.Equal(d.t, 0, code, "ferry %v: %s", args, stderr)
	return out
}

// bootstrap is scenario 1: N installed by hand with dpkg on every server,
// the fleet configured and joined; it reaches N and runs the test plan.
func (d *dc) bootstrap(env string, servers ...string) {
	d.t.Helper()
	d.bootstrapAt(N, env, servers...)
}

// bootstrapAt is bootstrap with the servers installed at version.
func (d *dc) bootstrapAt(version, env string, servers ...string) {
	d.t.Helper()
	require.NoError(d.t, d.Publish(version, harness.PublishOptions{CreatedAt: day(1)}))
	// env none until every server has joined, so that the first rollout
	// has them all.
	require.NoError(d.t, d.Configure(d.ctx, "env", "none"))
	for _, id := range servers {
		_, err := d.AddServer(d.ctx, id, version)
		require.NoError(d.t, err)
		d.ferry("join", id)
	}
	d.ferry("config", "set", "env", env)
	d.waitCompleted(version)
	d.requireInstalled(version, servers...)
}

func day(n int) time.Time { return time.Date(2026, 1, n, 0, 0, 0, 0, time.UTC) }

func (d *dc) waitState(version string, states ...string) *harness.Status {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.ctx, within(3*time.Minute))
	defer cancel()
	s, err := d.WaitState(ctx, version, states...)
	require.NoError(d.t, err)
	return s
}

func (d *dc) waitCompleted(version string) *harness.Status {
	d.t.Helper()
	s := d.waitState(version, "completed")
	for _, srv := range s.Servers {
		if srv.Status != nil && srv.Status.Version == version {
			require.Equal(d.t, "completed", srv.Status.Cond, srv.ID)
		}
	}
	return s
}

func (d *dc) requireInstalled(version string, servers ...string) {
	d.t.Helper()
	for _, id := range servers {
		s, err := d.Server(id)
		require.NoError(d.t, err)
		v, err := s.InstalledVersion(d.ctx)
		require.NoError(d.t, err)
		require.Equal(d.t, version, v, "dpkg's database on %s", id)
		tools, err := s.PackageVersion(d.ctx, "acme-tools")
		require.NoError(d.t, err)
		require.Equal(d.t, "1.0.0", tools, "the plan's extra package on %s", id)
		require.Equal(d.t, version, s.Marker(), "the plan's last step ran at %s on %s", version, id)
	}
}

// waitStep waits until a server reports that it runs the named step.
func (d *dc) waitStep(id, step string) {
	d.t.Helper()
	waitFor(d.t, 3*time.Minute, id+" to run step "+step, func() (bool, string) {
		snap, err := d.Store.Snapshot(d.ctx)
		if err != nil {
			return false, err.Error()
		}
		st := snap.Statuses[id]
		return st != nil && st.StepName == step && snap.Phase(id) == fleet.PhaseRunning, phases(snap)
	})
}

// waitFleet is waitFor for a condition on what the fleet wrote to etcd:
// cond is asked again after each change there (and every few seconds),
// rather than many times a second, since it may run the CLI.
func (d *dc) waitFleet(limit time.Duration, what string, cond func() (ok bool, last string)) {
	d.t.Helper()
	limit = within(limit)
	ctx, cancel := context.WithTimeout(d.ctx, limit)
	defer cancel()
	changes := d.Changes(ctx)
	for {
		asked := time.Now()
		ok, last := cond()
		if ok {
			return
		}
		// A rollout changes etcd many times a second: ask twice a second at most.
		select {
		case <-ctx.Done():
			d.t.Fatalf("waited %s for %s; last seen: %s", limit, what, last)
		case <-changes:
			retry.Sleep(ctx, time.Until(asked.Add(500*time.Millisecond)))
		}
	}
}

// waitNote waits for a notification that contains every fragment.
func (d *dc) waitNote(what string, fragments ...string) {
	d.t.Helper()
	waitFor(d.t, time.Minute, what, func() (bool, string) {
		return d.Notes.Has(fragments...), fmt.Sprintf("notifications so far: %q", d.Notes.All())
	})
}

// jsonOf is v as JSON, for a message that says what a wait saw last.
func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// phases says where each server of a snapshot is: its step and phase.
func phases(snap *fleet.Snapshot) string {
	ids := make([]string, 0, len(snap.Statuses))
	for id := range snap.Statuses {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for _, id := range ids {
		st := snap.Statuses[id]
		fmt.Fprintf(&b, "%s: %s step %d %s %s (%q); ", id, st.Version, st.Step, st.StepName, snap.Phase(id), st.Message)
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// waitFor waits until cond holds, asking every 100ms, for at most limit
// stretched by FERRY_DCTEST_SCALE. When it gives up, it says what it was
// waiting for and what cond saw last.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (ok bool, last string)) {
	t.Helper()
	limit = within(limit)
	deadline := time.Now().Add(limit)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last seen: %s", limit, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *dc) history() []fleet.HistoryRecord {
	d.t.Helper()
	var h []fleet.HistoryRecord
	require.NoError(d.t, json.Unmarshal([]byte(d.ferry("-o", "json", "history", "--limit", "0")), &h))
	return h
}

func (d *dc) leaderOfUpdaters() string {
	d.t.Helper()
	id, err := d.updaterLeader()
	require.NoError(d.t, err)
	require.NotEmpty(d.t, id, "no updater leads")
	return id
}

// updaterLeader is the id of the updater that leads, or "" while none
// does (an election in progress); safe to call from any goroutine.
func (d *dc) updaterLeader() (string, error) {
	resp, err := d.Store.Client().Get(d.ctx, d.Store.UpdaterElectionPrefix(), clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

var three = []string{"boot-0", "boot-1", "boot-2"}

func TestBootstrapAndUpgrade(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)

	// Scenario 2: N1 is published as a pre-release; staging takes it.
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
	for _, id := range three {
		s, _ := d.Server(id)
		require.GreaterOrEqual(t, s.Worker.Starts(), 2, "%s's worker restarted into the new version", id)
	}
	status := d.ferry("status")
	require.Contains(t, status, "COMPLETED to "+N1)
	hist := d.history()
	require.Len(t, hist, 2)
	require.Equal(t, N1, hist[0].Version)
	require.Equal(t, fleet.ResultCompleted, hist[0].Result)
	require.Equal(t, N, hist[1].Version)
	require.True(t, d.Notes.Has("completed", N1))
	require.Contains(t, d.ferry("history"), N1)
	// The site's uplink carried the package once: the first worker to
	// need it downloaded it, the others took it from that one.
	deb, _ := d.GitHub.Asset(harness.Repo, release.PrefixRelease+N1, release.DebAsset(N1))
	require.EqualValues(t, len(deb), d.GitHub.Counters().BytesServed[release.DebAsset(N1)], "bytes of %s that GitHub served to three servers", release.DebAsset(N1))
}

func TestWorkerKilledMidStep(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitStep("boot-1", "services")
	s, _ := d.Server("boot-1")
	before := s.Worker.Starts()
	require.True(t, s.KillWorker(), "the worker was running")
	d.waitCompleted(N1)
	require.Greater(t, s.Worker.Starts(), before, "the supervisor restarted the killed worker")
	d.requireInstalled(N1, three...)
	require.Len(t, d.history(), 2)
}

func TestUpdaterLeaderKilled(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitStep("boot-0", "services")
	leader := d.leaderOfUpdaters()
	s, err := d.Server(leader)
	require.NoError(t, err)
	require.True(t, s.KillUpdater())
	waitFor(t, time.Minute, "an updater to lead again", func() (bool, string) {
		// The restarted updater may well win the election again.
		id, err := d.updaterLeader()
		return id != "", fmt.Sprintf("no leader (%v)", err)
	})
	d.waitCompleted(N1)
	var n1 int
	for _, h := range d.history() {
		if h.Version == N1 {
			n1++
		}
	}
	require.Equal(t, 1, n1, "one history record for the rollout")
}

func TestEtcdMemberDown(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	// Kill a member as soon as the rollout starts: the self-upgrades, the
	// restarts and every step run on the other two.
	d.waitState(N1, "running")
	d.Etcd[1].Kill()
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
	require.NoError(t, d.Etcd[1].Restart())
}

func TestDeadServerStopsTheFleetThenRecover(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitStep("boot-2", "services")
	s, _ := d.Server("boot-2")
	s.StopWorker()

	st := d.waitState(N1, "stopped")
	require.Contains(t, st.Request.StopReason, "boot-2 has had no live worker")
	d.waitNote("the dead-server notification", "STOPPED", "boot-2")
	out := d.ferry("status")
	require.Contains(t, out, "STOPPED")
	require.Contains(t, out, "ferry recover")

	d.ferry("leave", "boot-2")
	d.ferry("recover", "--yes")
	done := d.waitCompleted(N1)
	require.ElementsMatch(t, []string{"boot-0", "boot-1"}, done.Request.Servers)
	d.requireInstalled(N1, "boot-0", "boot-1")
}

func TestJoinReconfigures(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", "boot-0", "boot-1")
	_, err := d.AddServer(d.ctx, "boot-3", N)
	require.NoError(t, err)
	d.ferry("join", "boot-3")
	d.waitFleet(time.Minute, "a rollout to reconfigure the fleet", func() (bool, string) {
		s, err := d.Status(d.ctx)
		return err == nil && s.Request != nil && s.Request.Reason == fleet.ReasonReconfigure, fmt.Sprintf("status %s (%v)", jsonOf(s), err)
	})
	s := d.waitCompleted(N)
	require.ElementsMatch(t, []string{"boot-0", "boot-1", "boot-3"}, s.Request.Servers)
	d.requireInstalled(N, "boot-0", "boot-1", "boot-3")
}

func TestTamperedReleasesAreNeverInstalled(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		opts harness.PublishOptions
		want string
	}{
		{"corrupted package", harness.PublishOptions{Corrupt: true}, "checksum mismatch"},
		{"bad signature", harness.PublishOptions{WrongKey: true}, "signature not valid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := start(t)
			d.bootstrap("staging", three...)
			c.opts.CreatedAt, c.opts.Prerelease = day(2), true
			require.NoError(t, d.Publish(N1, c.opts))
			st := d.waitState(N1, "stopped", "aborted")
			var msgs []string
			for _, s := range st.Servers {
				if s.Status != nil {
					msgs = append(msgs, s.Status.Message)
				}
			}
			require.Contains(t, strings.Join(msgs, "\n"), c.want, "the abort says why")
			d.requireInstalled(N, three...)
			require.Contains(t, d.ferry("status"), c.want)
		})
	}
}

func TestReleasesTheFleetMustNotTake(t *testing.T) {
	d := start(t)
	d.bootstrap("prod", three...)
	checks := func() int { return d.GitHub.Counters().Counted + d.GitHub.Counters().NotModified }
	// waitChecks lets the leader check GitHub a few more times.
	waitChecks := func() {
		t.Helper()
		n := checks()
		waitFor(t, time.Minute, "3 more release checks", func() (bool, string) {
			return checks() >= n+3, fmt.Sprintf("%d since", checks()-n)
		})
	}
	stillAt := func(v string) {
		t.Helper()
		s, err := d.Status(d.ctx)
		require.NoError(t, err)
		require.Equal(t, v, s.Request.Version)
		require.Equal(t, "completed", s.State)
	}

	// A release of an older version, published last, is ignored.
	require.NoError(t, d.Publish(N, harness.PublishOptions{Tag: "release-" + older, CreatedAt: day(3)}))
	waitChecks()
	stillAt(N)

	// prod ignores a pre-release.
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(4)}))
	waitChecks()
	stillAt(N)

	// staging would take it, but a pin holds the fleet at N.
	require.NoError(t, d.Store.PutPin(d.ctx, &fleet.Pin{Version: N, PinnedAt: time.Now()}))
	d.ferry("config", "set", "env", "staging")
	waitChecks()
	stillAt(N)

	// Without the pin, it goes.
	require.NoError(t, d.Store.DeletePin(d.ctx))
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
}
