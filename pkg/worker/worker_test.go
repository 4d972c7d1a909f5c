package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/cli"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/ferry-cd/ferry/pkg/updater"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

const (
	v1 = "2026.01.01-1"
	v2 = "2026.01.02-1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type testFleet struct {
	t      testing.TB
	prefix string
	st     *storage.Storage
	dir    string
	// local is what the servers' own config says of the fleet config
	// (github-api-url): every storage of the fleet uses it.
	local func() map[string]string
	// timelineQuiet is the workers' TimelineQuiet.
	timelineQuiet time.Duration
}

// useGitHub makes the servers' own config name api as the GitHub API.
func (f *testFleet) useGitHub(api string) {
	f.local = func() map[string]string { return map[string]string{fleet.ConfigGitHubAPIURL: api} }
	f.st.UseLocal(f.local)
}

func newFleet(t testing.TB) *testFleet {
	t.Helper()
	prefix := etcdtest.Prefix(t)
	st, err := storage.New(etcdtest.Client(t), prefix)
	require.NoError(t, err)
	return &testFleet{t: t, prefix: prefix, st: st, dir: t.TempDir()}
}

func (f *testFleet) ctx() context.Context { return fleettest.Ctx(f.t) }

func (f *testFleet) set(kv ...string) { fleettest.SetConfig(f.t, f.st, kv...) }

type runningWorker struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // what Run returned
}

// start runs a worker with an etcd client of its own, as a process would.
func (f *testFleet) start(id, ver string, plan *artifacts.Plan, ops Operator) *runningWorker {
	f.t.Helper()
	return f.startOn(etcdtest.Client(f.t), id, ver, plan, ops)
}

// startOn is start with the etcd client cli.
func (f *testFleet) startOn(cli *clientv3.Client, id, ver string, plan *artifacts.Plan, ops Operator) *runningWorker {
	f.t.Helper()
	st, err := storage.New(cli, f.prefix)
	require.NoError(f.t, err)
	if f.local != nil {
		st.UseLocal(f.local)
	}
	var metrics *Metrics
	if o, ok := ops.(*Ops); ok {
		metrics = o.Metrics
	}
	w := New(Options{Storage: st, ID: id, Version: ver, Plan: plan, Operator: ops, DataDir: filepath.Join(f.dir, id), Logger: quiet, LeaseTTL: 2 * time.Second, Metrics: metrics,
		TimelineQuiet: f.timelineQuiet})
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningWorker{w: w, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = w.Run(ctx)
	}()
	f.t.Cleanup(func() { r.kill() })
	return r
}

// kill ends the worker at once, wherever it is, as SIGKILL would: a
// running action's process is killed and nothing more is reported.
func (r *runningWorker) kill() {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
	}
}

func (f *testFleet) leader(fn func(*storage.Leader) error) { fleettest.AsLeader(f.t, f.st, fn) }

func (f *testFleet) request(v string, servers ...string) *fleet.UpdateRequest {
	f.t.Helper()
	for _, s := range servers {
		_, err := f.st.JoinServer(f.ctx(), s, &fleet.ServerInfo{})
		require.NoError(f.t, err)
	}
	req := &fleet.UpdateRequest{Version: v, Servers: servers, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	f.leader(func(l *storage.Leader) error { return l.StartRequest(f.ctx(), req) })
	f.coordinate(req)
	return req
}

// coordinate plays the updater leader's barrier coordinator for req, until
// the test ends; a real updater's, when one runs, writes the same.
func (f *testFleet) coordinate(req *fleet.UpdateRequest) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	stand := fleettest.StandIn(f.t, f.st)
	go func() { defer close(done); stand.Coordinate(ctx, req) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

func (f *testFleet) stop(reason string) {
	f.t.Helper()
	req, _, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(f.t, err)
	req.Stop, req.StopReason = true, reason
	f.leader(func(l *storage.Leader) error { return fleettest.PutRequest(f.ctx(), f.st, l, req) })
}

// startUpdater runs the real updater, which stops the fleet on an abort.
func (f *testFleet) startUpdater() {
	st, err := storage.New(etcdtest.Client(f.t), f.prefix)
	require.NoError(f.t, err)
	if f.local != nil {
		st.UseLocal(f.local)
	}
	u := updater.New(updater.Options{Storage: st, ID: "u", Logger: quiet, SessionTTL: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

// waitRunning waits until the server runs step k, as `ferry status` would
// say it (see fleet.Snapshot.Phase).
func (f *testFleet) waitRunning(id string, k int) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		snap, err := f.st.Snapshot(f.ctx())
		return err == nil && snap.Statuses[id] != nil && snap.Statuses[id].Step == k && snap.Phase(id) == fleet.PhaseRunning
	}, 30*time.Second, 10*time.Millisecond, "%s never ran step %d", id, k)
}

func (f *testFleet) waitStatus(id string, ok func(*fleet.UpdateStatus) bool) *fleet.UpdateStatus {
	defer func() {
		if f.t.Failed() {
			st, _ := fleettest.GetStatuses(f.ctx(), f.st)
			for k, v := range st {
				f.t.Logf("status %s: %+v", k, v)
			}
		}
	}()
	f.t.Helper()
	var got *fleet.UpdateStatus
	require.Eventually(f.t, func() bool {
		statuses, err := fleettest.GetStatuses(f.ctx(), f.st)
		if err != nil {
			return false
		}
		got = statuses[id]
		return got != nil && ok(got)
	}, 30*time.Second, 20*time.Millisecond, "status of %s never matched", id)
	return got
}

// stepRecords are the step records that server id wrote beside its
// status st, about st's rollout.
func (f *testFleet) stepRecords(st *fleet.UpdateStatus, id string) []fleet.StepRecord {
	f.t.Helper()
	recs, err := f.st.ServerTimeline(f.ctx(), st.Rollout, id)
	require.NoError(f.t, err)
	return recs
}

func cond(c fleet.Cond) func(*fleet.UpdateStatus) bool {
	return func(s *fleet.UpdateStatus) bool { return s.Cond == c }
}

// journal is a file that the plan's run actions append timestamped lines
// to: "<server> <step> <event> <unix nanos>".
type journal string

type entry struct {
	server string
	step   int
	event  string
	at     int64
}

func (j journal) entries(t *testing.T) []entry {
	t.Helper()
	f, err := os.Open(string(j))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		require.Len(t, parts, 4, sc.Text())
		step, _ := strconv.Atoi(parts[1])
		at, _ := strconv.ParseInt(parts[3], 10, 64)
		out = append(out, entry{parts[0], step, parts[2], at})
	}
	return out
}

// stepAction appends start and end lines around body.
func stepAction(j journal, body string) artifacts.Action {
	script := fmt.Sprintf(`echo "$FERRY_SERVER $FERRY_STEP start $(date +%%s%%N)" >> %[1]s
%[2]s
echo "$FERRY_SERVER $FERRY_STEP end $(date +%%s%%N)" >> %[1]s`, j, body)
	return artifacts.Action{Run: &artifacts.RunAction{Command: "sh", Args: []string{"-c", script}}}
}

func lockstepPlan(j journal, bodies ...string) *artifacts.Plan {
	p := &artifacts.Plan{}
	for i, b := range bodies {
		p.Steps = append(p.Steps, artifacts.Step{Name: fmt.Sprintf("step%d", i+1), Strategy: artifacts.Lockstep, Actions: []artifacts.Action{stepAction(j, b)}})
	}
	return p
}

func ops(f *testFleet) *Ops {
	return &Ops{DataDir: f.dir, Log: quiet, Metrics: NewMetrics()}
}

func TestLockstep(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	// Servers take different times, so a missing barrier would show.
	plan := lockstepPlan(j,
		`case $FERRY_SERVER in boot-0) sleep 0.3;; esac`,
		`case $FERRY_SERVER in boot-1) sleep 0.3;; esac`,
		`case $FERRY_SERVER in boot-2) sleep 0.3;; esac`)
	servers := []string{"boot-0", "boot-1", "boot-2"}
	for _, s := range servers {
		f.start(s, v1, plan, ops(f))
	}
	f.request(v1, servers...)
	for _, s := range servers {
		st := f.waitStatus(s, cond(fleet.CondCompleted))
		require.Equal(t, 3, st.Step)
	}
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.NotNil(t, snap.Plan, "the first server recorded the plan's steps")
	require.Len(t, snap.Plan.Steps, 3)
	require.Equal(t, plan.Steps[0].Name, snap.Plan.Steps[0])

	entries := j.entries(t)
	require.Len(t, entries, 3*3*2)
	for k := 1; k < 3; k++ {
		var lastEnd, firstStart int64 = 0, 1 << 62
		for _, e := range entries {
			if e.step == k && e.event == "end" {
				lastEnd = max(lastEnd, e.at)
			}
			if e.step == k+1 && e.event == "start" {
				firstStart = min(firstStart, e.at)
			}
		}
		require.Less(t, lastEnd, firstStart, "a server started step %d before every server finished step %d", k+1, k)
	}
}

func TestStepFailureStopsEveryServer(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.set(fleet.ConfigEnv, "none")
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j,
		`true`,
		`if [ "$FERRY_SERVER" = boot-1 ]; then echo "E: disk full on /var" >&2; exit 4; fi; sleep 0.2`,
		`true`)
	servers := []string{"boot-0", "boot-1", "boot-2"}
	for _, s := range servers {
		f.start(s, v1, plan, ops(f))
	}
	f.request(v1, servers...)
	// The updater watches the request written above, as if it had made it.
	f.startUpdater()

	failed := f.waitStatus("boot-1", cond(fleet.CondAborted))
	require.Equal(t, 2, failed.Step)
	require.Contains(t, failed.Message, "step 2 (step2) failed")
	require.Contains(t, failed.Message, "E: disk full on /var", "the last output lines reach the status")

	req := func() *fleet.UpdateRequest {
		r, _, err := fleettest.GetRequest(f.ctx(), f.st)
		require.NoError(t, err)
		return r
	}
	require.Eventually(t, func() bool { return req().Stop }, 20*time.Second, 20*time.Millisecond, "the updater stops the fleet")
	require.Contains(t, req().StopReason, "boot-1 aborted")
	for _, s := range []string{"boot-0", "boot-2"} {
		st := f.waitStatus(s, cond(fleet.CondAborted))
		require.Contains(t, st.Message, "stopped before this step")
		// At the barrier of step 2 or 3, depending on when the abort came.
		require.GreaterOrEqual(t, st.Step, 2)
	}
	for _, e := range j.entries(t) {
		require.Less(t, e.step, 3, "no server ran a later step: %+v", e)
	}

	// The operator sees why in `ferry status`.
	var out, errOut strings.Builder
	code := cli.Main(f.ctx(), []string{"--config", os.DevNull, "--endpoints", etcdtest.Endpoint(), "--prefix", f.prefix, "status"},
		strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	require.Equal(t, cli.ExitOK, code, errOut.String())
	require.Contains(t, out.String(), "STOPPED")
	require.Regexp(t, `boot-1\s+yes\s+`+v1+`\s+`+v1+`\s+2 step2\s+aborted.*E: disk full on /var`, out.String())
	require.Regexp(t, `boot-0\s+yes\s+`+v1+`\s+`+v1+`\s+\d \S+\s+stopped \(the rollout stopped\)`, out.String(), "the servers that did not fail stopped")
}

func TestStopAtTheNextSafePoint(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	gate := filepath.Join(f.dir, "gate")
	plan := lockstepPlan(j,
		fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.02; done`, gate),
		`true`)
	servers := []string{"boot-0", "boot-1"}
	for _, s := range servers {
		f.start(s, v1, plan, ops(f))
	}
	f.request(v1, servers...)
	for _, s := range servers {
		f.waitRunning(s, 1)
	}

	// Stop while step 1 runs: it is not interrupted, and step 2 never runs.
	f.stop("operator test")
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	for _, s := range servers {
		st := f.waitStatus(s, cond(fleet.CondAborted))
		require.Equal(t, 2, st.Step)
		require.Contains(t, st.Message, "operator test")
	}
	var ends int
	for _, e := range j.entries(t) {
		require.Equal(t, 1, e.step)
		if e.event == "end" {
			ends++
		}
	}
	require.Equal(t, 2, ends, "the running step finished on both servers")
}

func TestKilledWorkerResumesAndLeaderStepRunsOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	counter := filepath.Join(f.dir, "leader-runs")
	firstRun := filepath.Join(f.dir, "boot-1-first-run")
	require.NoError(t, os.WriteFile(firstRun, nil, 0o644))
	plan := &artifacts.Plan{Steps: []artifacts.Step{
		{Name: "publish", Strategy: artifacts.Leader, Actions: []artifacts.Action{
			{Run: &artifacts.RunAction{Command: "sh", Args: []string{"-c", "echo $FERRY_SERVER >> " + counter}}},
		}},
		// On its first run, boot-1 hangs in this step until it is killed.
		{Name: "install", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{stepAction(j,
			fmt.Sprintf(`if [ "$FERRY_SERVER" = boot-1 ] && [ -e %s ]; then rm %[1]s; sleep 300; fi`, firstRun))}},
		{Name: "finish", Strategy: artifacts.Rolling, Parallel: 1, Actions: []artifacts.Action{stepAction(j, "sleep 0.05")}},
	}}
	servers := []string{"boot-0", "boot-1", "boot-2"}
	workers := map[string]*runningWorker{}
	for _, s := range servers {
		workers[s] = f.start(s, v1, plan, ops(f))
	}
	f.request(v1, servers...)
	f.waitRunning("boot-1", 2)
	require.Eventually(t, func() bool { _, err := os.Stat(firstRun); return err != nil }, 10*time.Second, 10*time.Millisecond)

	workers["boot-1"].kill()
	f.start("boot-1", v1, plan, ops(f))
	for _, s := range servers {
		f.waitStatus(s, cond(fleet.CondCompleted))
	}

	runs, err := os.ReadFile(counter)
	require.NoError(t, err)
	require.Len(t, strings.Fields(string(runs)), 1, "the once-per-fleet step ran once: %q", runs)
	c, err := f.st.GetContents(f.ctx(), "publish")
	require.NoError(t, err)
	require.True(t, c.Success)
	require.Equal(t, v1, c.Version)

	// Rolling with parallel 1: the "finish" steps never overlap.
	var spans [][2]int64
	starts := map[string]int64{}
	for _, e := range j.entries(t) {
		if e.step != 3 {
			continue
		}
		if e.event == "start" {
			starts[e.server] = e.at
		} else {
			spans = append(spans, [2]int64{starts[e.server], e.at})
		}
	}
	require.Len(t, spans, 3)
	sort.Slice(spans, func(a, b int) bool { return spans[a][0] < spans[b][0] })
	for i := 1; i < len(spans); i++ {
		require.LessOrEqual(t, spans[i-1][1], spans[i][0], "two servers ran a parallel-1 rolling step at once")
	}
}

func TestNonMemberAndFinishedRequestsAreIgnored(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j, `true`)
	f.start("boot-9", v1, plan, ops(f))
	f.start("boot-0", v1, plan, ops(f))
	f.request(v1, "boot-0")
	f.waitStatus("boot-0", cond(fleet.CondCompleted))
	statuses, err := fleettest.GetStatuses(f.ctx(), f.st)
	require.NoError(t, err)
	require.NotContains(t, statuses, "boot-9", "a server that is not in the request does nothing")
	alive, err := f.st.GetAlive(f.ctx())
	require.NoError(t, err)
	require.Equal(t, v1, alive["boot-9"].Version)
}

// --- self-upgrade ---

func TestSelfUpgrade(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	e.publish(v2, publishOptions{})
	e.gh.fake.CutDownload(release.DebAsset(v2), int64(len(e.gh.debs[v2])/2))

	e.request(v2, "boot-0")
	e.installsAndExits("boot-0", v1)
	v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
	require.NoError(t, err)
	require.Equal(t, v2, v)
	marker, err := os.ReadFile(filepath.Join(e.root, "usr/share/ferry/marker"))
	require.NoError(t, err)
	require.Equal(t, v2, string(marker))
	c := e.gh.fake.Counters()
	require.Equal(t, 1, c.RangeRequests[release.DebAsset(v2)], "the broken download resumed with Range")
	require.Equal(t, int64(len(e.gh.debs[v2])), c.BytesServed[release.DebAsset(v2)], "and did not start over")
	requireNoDownloads(t, e.ops.DataDir)

	// The new binary (same id, version v2) takes it from there, with
	// metrics of its own, as a new process has: it counts the self-upgrade
	// and its download that the old process did.
	ops2 := *e.ops
	ops2.Metrics = NewMetrics()
	w2 := e.start("boot-0", v2, &artifacts.Plan{}, &ops2)
	e.waitStatus("boot-0", cond(fleet.CondCompleted))

	rec := httptest.NewRecorder()
	w2.w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), `ferry_worker_self_upgrades_total{result="ok"} 1`)
	require.Contains(t, rec.Body.String(), fmt.Sprintf("ferry_worker_download_bytes_total %d\n", len(e.gh.debs[v2])), "the old process's download, counted once")
	require.Contains(t, rec.Body.String(), "ferry_worker_download_duration_seconds_count 1\n", "and its time")
	rec = httptest.NewRecorder()
	w2.w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	require.Equal(t, http.StatusOK, rec.Code)
}

func TestSelfUpgradeRefusesBadReleases(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		opts   publishOptions
		noKeys bool
		want   string
	}{
		{name: "corrupted package", opts: publishOptions{corrupt: true}, want: "checksum mismatch"},
		{name: "manifest signed by an untrusted key", opts: publishOptions{wrongKey: true}, want: "signature not valid"},
		{name: "no manifest", opts: publishOptions{noManifest: true}, want: "has no signed manifest for a channel this server takes ([production])"},
		{name: "manifest of the test channel", opts: publishOptions{channel: trust.ChannelTest}, want: "has no signed manifest for a channel this server takes"},
		{name: "expired manifest", opts: publishOptions{expired: true}, want: "expired at"},
		{name: "no trusted keys on the server", noKeys: true, want: "no trusted release key"},
		{name: "package of another version", opts: publishOptions{otherVersion: true}, want: "holds version"},
		{name: "larger package, announced", opts: publishOptions{bigger: 1 << 20}, want: "the signed manifest says"},
		{name: "larger package, misannounced", opts: publishOptions{bigger: 8 << 20, misannounce: true}, want: "larger than its signed size"},
	}
	// Each case is refused both when the worker looks the release up
	// itself and when the request carries it, as the updater resolved it.
	for _, c := range cases {
		for _, resolved := range []bool{false, true} {
			name := c.name
			if resolved {
				name += ", resolved by the updater"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := newUpgradeEnv(t)
				if c.noKeys {
					e.ops.TrustedKeys = t.TempDir()
				}
				e.publish(v2, c.opts)
				if resolved {
					e.requestResolved(v2, "boot-0")
				} else {
					e.request(v2, "boot-0")
				}
				w := e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
				st := e.waitStatus("boot-0", cond(fleet.CondAborted))
				require.Contains(t, st.Message, "self-upgrade to "+v2+" failed")
				require.Contains(t, st.Message, c.want)

				v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
				require.NoError(t, err)
				require.Equal(t, v1, v, "nothing was installed")
				requireNoDownloads(t, e.ops.DataDir)
				if c.opts.misannounce {
					// What the worker read, not what the server wrote: the
					// kernel's socket buffers take megabytes that nobody reads.
					// The count holds the small signed files too: 64 KiB
					// of slack, against 8 MiB more that the server offers.
					signed := int64(len(e.gh.debs[v2]) - c.opts.bigger)
					require.Less(t, e.ops.Metrics.downloaded.Load(), signed+64<<10, "the download read past the signed size")
				}
				select {
				case <-w.done:
					t.Fatalf("the worker exited: %v", w.err)
				default:
				}
			})
		}
	}
}

func requireNoDownloads(t testing.TB, dataDir string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "downloads"))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	require.NoError(t, err)
	require.Empty(t, entries, "downloaded or temporary files were left behind")
}

// --- dpkg's database is the truth ---

// TestUnfinishedInstallIsRepairedFirst: the worker runs the requested
// version, but the dpkg run that installed it was killed in the postinst.
// The worker finishes it before it runs or reports anything done.
func TestUnfinishedInstallIsRepairedFirst(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	gate := filepath.Join(e.dir, "gate")
	t.Cleanup(func() { os.WriteFile(gate, nil, 0o644) })
	p := ferryPackage(v2)
	p.Postinst = fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done`, gate)
	pkg := debtest.Build(t, e.dir, p)
	inst := e.ops.Installer
	killed := exec.Command(inst.Command[0], append(inst.Command[1:], pkg)...)
	killed.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, killed.Start())
	// The new version's postinst: an upgrade passes through the old
	// version's states first, and a kill there leaves something else.
	require.Eventually(t, func() bool {
		s, err := inst.Query(e.ctx(), "ferry")
		return err == nil && s.Condition() == "half-configured" && s.Version == v2
	}, 30*time.Second, 20*time.Millisecond)
	// dpkg alone dies, at once: killing its postinst too could let dpkg
	// see the script fail first and unwind the upgrade.
	require.NoError(t, killed.Process.Kill())
	killed.Wait()

	j := journal(filepath.Join(e.dir, "journal"))
	e.request(v2, "boot-0")
	w := e.start("boot-0", v2, lockstepPlan(j, "true"), e.ops)
	st := e.waitStatus("boot-0", func(s *fleet.UpdateStatus) bool { return s.Phase == fleet.PhaseRepairing })
	require.Contains(t, st.Message, "dpkg has ferry half-configured "+v2)
	require.Empty(t, j.entries(t), "no step ran over a half-configured package")

	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	e.waitStatus("boot-0", cond(fleet.CondCompleted))
	s, err := inst.Query(e.ctx(), "ferry")
	require.NoError(t, err)
	require.NoError(t, s.Expect(v2))
	require.Len(t, j.entries(t), 2, "the step ran once the package was installed")
	rec := httptest.NewRecorder()
	w.w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), "ferry_worker_dpkg_repairs_total 1")
}

// TestPackageDpkgDisagreesWithIsReinstalled: the binary says v2 but dpkg
// has v1 installed; the worker installs the verified v2 package again.
func TestPackageDpkgDisagreesWithIsReinstalled(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	e.publish(v2, publishOptions{})
	e.request(v2, "boot-0")
	e.installsAndExits("boot-0", v2)
	v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
	require.NoError(t, err)
	require.Equal(t, v2, v)
}

// TestSelfUpgradeLoopGuardIsPerRollout: a worker whose installs do not
// change its binary gives up after two in one rollout, but a later rollout
// to the same version (after a rollback, say) installs it again.
func TestSelfUpgradeLoopGuardIsPerRollout(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	e.publish(v2, publishOptions{})
	upgraded := func() { e.installsAndExits("boot-0", v1) }
	e.request(v2, "boot-0")
	upgraded()
	upgraded()
	gaveUp := e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
	st := e.waitStatus("boot-0", cond(fleet.CondAborted))
	require.Contains(t, st.Message, "installed 2 times in this rollout")
	gaveUp.kill()

	e.request(v2, "boot-0")
	upgraded()
}

// --- transient errors ---

// flaky fails the actions of one server with a GitHub-like 502 a few times.
type flaky struct {
	Operator
	server string
	fails  atomic.Int32
}

func (f *flaky) RunAction(ctx context.Context, rc RunContext, a *artifacts.Action) error {
	if rc.Server == f.server && f.fails.Add(-1) >= 0 {
		return &release.StatusError{Code: http.StatusBadGateway, Status: "download answered 502 Bad Gateway"}
	}
	return f.Operator.RunAction(ctx, rc, a)
}

// TestTransientStepErrorsAreRetried: a step that meets 502s on one server
// is retried there, shown as retrying, and the rollout completes with no
// stop.
func TestTransientStepErrorsAreRetried(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j, "true", "true")
	bad := &flaky{Operator: ops(f), server: "boot-1"}
	bad.fails.Store(2)
	f.request(v1, "boot-0", "boot-1")
	f.startUpdater()
	f.start("boot-0", v1, plan, ops(f))
	w := f.start("boot-1", v1, plan, bad)
	st := f.waitStatus("boot-1", func(s *fleet.UpdateStatus) bool { return s.Phase == fleet.PhaseRetrying })
	require.Contains(t, st.Message, "retrying: step 1 (step1)")
	require.Contains(t, st.Message, "502")
	for _, id := range []string{"boot-0", "boot-1"} {
		f.waitStatus(id, cond(fleet.CondCompleted))
	}
	req, _, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(t, err)
	require.False(t, req.Stop, "a transient error never stops the fleet")
	rec := httptest.NewRecorder()
	w.w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), "ferry_worker_transient_errors_total 2")
	require.Contains(t, rec.Body.String(), "ferry_worker_retrying 0")
}

// TestRetryBudget: a worker that keeps meeting transient errors past
// worker-retry-budget keeps retrying, never aborts, and says so in its
// status and metrics; when the errors end, the rollout completes and the
// alarm clears.
func TestRetryBudget(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.set(fleet.ConfigWorkerRetryBudget, "1ms")
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j, "true")
	bad := &flaky{Operator: ops(f), server: "boot-0"}
	bad.fails.Store(1_000_000)
	f.request(v1, "boot-0")
	f.startUpdater()
	w := f.start("boot-0", v1, plan, bad)
	st := f.waitStatus("boot-0", func(s *fleet.UpdateStatus) bool {
		return strings.Contains(s.Message, "past worker-retry-budget 1ms")
	})
	require.Equal(t, fleet.PhaseRetrying, st.Phase)
	require.Equal(t, fleet.CondRunning, st.Cond, "a blip is never a stop")
	require.Contains(t, st.Message, "502")
	metrics := func() string {
		rec := httptest.NewRecorder()
		w.w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	require.Contains(t, metrics(), "ferry_worker_retry_budget_exceeded 1")
	require.Regexp(t, `ferry_worker_retrying_since_timestamp_seconds [1-9]`, metrics())

	bad.fails.Store(0)
	f.waitStatus("boot-0", cond(fleet.CondCompleted))
	require.Contains(t, metrics(), "ferry_worker_retry_budget_exceeded 0")
	require.Contains(t, metrics(), "ferry_worker_retrying_since_timestamp_seconds 0")
	req, _, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(t, err)
	require.False(t, req.Stop)
}

// TestTransientSelfUpgradeErrorsAreRetried: GitHub answers 502 to the
// worker's release lookups for a while; the self-upgrade goes through.
func TestTransientSelfUpgradeErrorsAreRetried(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	e.publish(v2, publishOptions{})
	e.gh.fake.FailNext(3, http.StatusBadGateway)
	e.request(v2, "boot-0")
	e.installsAndExits("boot-0", v1)
	st, err := fleettest.GetStatuses(e.ctx(), e.st)
	require.NoError(t, err)
	require.NotEqual(t, fleet.CondAborted, st["boot-0"].Cond)
	v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
	require.NoError(t, err)
	require.Equal(t, v2, v)
}

// TestForgedStatusDoesNotSkipSteps: whoever writes etcd forges this
// server's status for the running rollout, as done with step 2, or as
// completed. The worker trusts its own record of the steps it ran: it runs
// every step, and reports completed only then.
func TestForgedStatusDoesNotSkipSteps(t *testing.T) {
	t.Parallel()
	forgeries := map[string]fleet.UpdateStatus{
		"step 2 done": {Step: 2, StepName: "step2", Phase: fleet.PhaseDone, Cond: fleet.CondRunning},
		"completed":   {Step: 3, StepName: "step3", Phase: fleet.PhaseDone, Cond: fleet.CondCompleted},
	}
	for name, forged := range forgeries {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t)
			j := journal(filepath.Join(f.dir, "journal"))
			plan := lockstepPlan(j, "true", "true", "true")
			req := f.request(v1, "boot-0")
			forged.Version, forged.Rollout, forged.UpdatedAt = req.Version, req.StartedAt, time.Now().UTC()
			require.NoError(t, f.st.PutStatus(f.ctx(), "boot-0", &forged))

			f.start("boot-0", v1, plan, ops(f))
			f.waitStatus("boot-0", func(st *fleet.UpdateStatus) bool {
				return st.Cond == fleet.CondCompleted && !st.UpdatedAt.Equal(forged.UpdatedAt)
			})
			var ran []int
			for _, e := range j.entries(t) {
				if e.event == "end" {
					ran = append(ran, e.step)
				}
			}
			require.Equal(t, []int{1, 2, 3}, ran, "every step ran, once")
		})
	}
}

// TestResumesFromItsOwnRecord: a worker killed after step 1 starts again
// at step 2, as its own record says, and never runs step 1 twice.
func TestResumesFromItsOwnRecord(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	gate := filepath.Join(f.dir, "gate")
	plan := lockstepPlan(j, "true", fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done`, gate), "true")
	f.request(v1, "boot-0")
	w := f.start("boot-0", v1, plan, ops(f))
	f.waitRunning("boot-0", 2)
	w.kill()
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	f.start("boot-0", v1, plan, ops(f))
	f.waitStatus("boot-0", cond(fleet.CondCompleted))
	var ran []int
	for _, e := range j.entries(t) {
		if e.event == "end" {
			ran = append(ran, e.step)
		}
	}
	require.Equal(t, []int{1, 2, 3}, ran, "step 1 ran once; the killed step 2 ran again to its end")
}

// TestStepRecordThatCannotBeWrittenAborts: a worker that cannot record the
// step it finished stops there, saying why, instead of trying again (which
// would run the step again and again).
func TestStepRecordThatCannotBeWrittenAborts(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j, "true", "true")
	// A directory where the record's file belongs: it cannot be opened.
	require.NoError(t, os.MkdirAll(filepath.Join(f.dir, "boot-0", "rollout-steps.json"), 0o700))
	f.request(v1, "boot-0")
	f.start("boot-0", v1, plan, ops(f))
	st := f.waitStatus("boot-0", cond(fleet.CondAborted))
	require.Contains(t, st.Message, "step 1 (step1) is done, but record the steps done")
	require.Contains(t, st.Message, "ferry recover")
	var ran []int
	for _, e := range j.entries(t) {
		if e.event == "end" {
			ran = append(ran, e.step)
		}
	}
	require.Equal(t, []int{1}, ran, "step 1 ran once, step 2 not at all")
}
