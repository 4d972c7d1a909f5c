package updater

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

const (
	repo = "ferry-cd/ferry"
	v1   = "2026.01.01-1"
	v2   = "2026.01.02-1"
	v3   = "2026.01.03-1"
)

// fleet is one test's etcd prefix, GitHub fake and notification receiver.
type testFleet struct {
	t      *testing.T
	prefix string
	st     *storage.Storage
	gh     *githubfake.Server
	notes  *receiver
	// local is what the servers' own config says of the fleet config
	// (github-api-url); channels are the release channels they take.
	local    func() map[string]string
	channels []string
	// keys is the servers' trusted-keys directory, when set.
	keys string
}

func newFleet(t *testing.T, config ...string) *testFleet {
	t.Helper()
	prefix := etcdtest.Prefix(t)
	st, err := storage.New(etcdtest.Client(t), prefix)
	require.NoError(t, err)
	gh := githubfake.New()
	t.Cleanup(gh.Close)
	f := &testFleet{t: t, prefix: prefix, st: st, gh: gh, notes: newReceiver(t)}
	f.local = func() map[string]string { return map[string]string{fleet.ConfigGitHubAPIURL: gh.APIURL()} }
	f.set(fleet.ConfigGitHubRepo, repo, fleet.ConfigNotifyURL, f.notes.srv.URL)
	f.st.UseLocal(f.local)
	f.set(config...)
	return f
}

func (f *testFleet) ctx() context.Context { return fleettest.Ctx(f.t) }

func (f *testFleet) set(kv ...string) { fleettest.SetConfig(f.t, f.st, kv...) }

// join registers servers whose workers are alive at v1, for as long as the
// test runs.
func (f *testFleet) join(ids ...string) {
	f.t.Helper()
	ctx := f.ctx()
	lease, err := f.st.Client().Grant(ctx, 60)
	require.NoError(f.t, err)
	for _, id := range ids {
		_, err := f.st.JoinServer(ctx, id, &fleet.ServerInfo{})
		require.NoError(f.t, err)
		require.NoError(f.t, f.st.PutAlive(ctx, id, &fleet.Alive{Version: v1, PID: 1}, lease.ID))
	}
}

func (f *testFleet) addRelease(tag string, pre bool, day int) {
	f.gh.AddRelease(repo, githubfake.ReleaseSpec{Tag: tag, Prerelease: pre, CreatedAt: time.Date(2026, 1, day, 0, 0, 0, 0, time.UTC)})
}

type running struct {
	u      *Updater
	cancel context.CancelFunc
	done   chan struct{}
	cli    *clientv3.Client
}

// start runs an updater with an etcd client of its own, as a separate
// process would have.
func (f *testFleet) start(id string) *running {
	f.t.Helper()
	cli := etcdtest.Client(f.t)
	st, err := storage.New(cli, f.prefix)
	require.NoError(f.t, err)
	st.UseLocal(f.local)
	u := New(Options{
		Storage: st, ID: id, SessionTTL: 2 * time.Second, Channels: f.channels, TrustedKeys: f.keys,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	})
	u.notify.backoff = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{u: u, cancel: cancel, done: make(chan struct{}), cli: cli}
	go func() {
		defer close(r.done)
		u.Run(ctx)
	}()
	f.t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

func (f *testFleet) request() *fleet.UpdateRequest {
	req, _, err := fleettest.GetRequest(f.ctx(), f.st)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	require.NoError(f.t, err)
	return req
}

// waitRequest waits until the request satisfies ok and returns it.
func (f *testFleet) waitRequest(ok func(*fleet.UpdateRequest) bool) *fleet.UpdateRequest {
	f.t.Helper()
	var got *fleet.UpdateRequest
	require.Eventually(f.t, func() bool {
		got = f.request()
		return got != nil && ok(got)
	}, 20*time.Second, 20*time.Millisecond, "the request never matched")
	return got
}

func version(v string) func(*fleet.UpdateRequest) bool {
	return func(r *fleet.UpdateRequest) bool { return r.Version == v }
}

func (f *testFleet) report(id, v string, c fleet.Cond, msg string) {
	f.t.Helper()
	require.NoError(f.t, f.st.PutStatus(f.ctx(), id, &fleet.UpdateStatus{Version: v, Cond: c, Message: msg, UpdatedAt: time.Now().UTC()}))
}

// receiver is a Slack-compatible webhook that records what it is sent.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []slackMessage
	fail int // answer 500 to this many posts first
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m slackMessage
		if err := json.NewDecoder(req.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail > 0 {
			r.fail--
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		r.msgs = append(r.msgs, m)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// wait waits for a message whose text contains every fragment.
func (r *receiver) wait(t *testing.T, fragments ...string) slackMessage {
	t.Helper()
	var found slackMessage
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
	next:
		for _, m := range r.msgs {
			for _, f := range fragments {
				if !strings.Contains(m.Text, f) {
					continue next
				}
			}
			found = m
			return true
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, "no notification with %q", fragments)
	return found
}

func TestEnvSelection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		config   []string
		pin      string
		channels []string
		want     string
	}{
		{name: "staging takes the pre-release", config: []string{fleet.ConfigEnv, "staging"}, want: v2},
		{name: "prod takes the full release", config: []string{fleet.ConfigEnv, "prod"}, want: v1},
		{name: "dev follows test tags", config: []string{fleet.ConfigEnv, "dev"}, want: v3},
		{name: "a pin holds staging back", config: []string{fleet.ConfigEnv, "staging"}, pin: v1, want: v1},
		{name: "env dev in etcd, production servers: prod", config: []string{fleet.ConfigEnv, "dev"}, channels: []string{trust.ChannelProduction}, want: v1},
		{name: "env dev in etcd, staging servers: staging", config: []string{fleet.ConfigEnv, "dev"}, channels: []string{trust.ChannelStaging, trust.ChannelProduction}, want: v2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, c.config...)
			f.channels = c.channels
			f.addRelease("release-"+v1, false, 1)
			f.addRelease("release-"+v2, true, 2)
			f.addRelease("test-"+v3, true, 3)
			f.join("boot-0", "boot-1")
			if c.pin != "" {
				require.NoError(t, f.st.PutPin(f.ctx(), &fleet.Pin{Version: c.pin}))
			}
			f.start("u0")
			req := f.waitRequest(func(*fleet.UpdateRequest) bool { return true })
			require.Equal(t, c.want, req.Version)
			require.Equal(t, []string{"boot-0", "boot-1"}, req.Servers)
			require.Equal(t, fleet.ReasonUpdate, req.Reason)
			require.NotNil(t, req.Release, "the updater resolved the release for the workers")
			require.Equal(t, map[string]string{v1: "release-" + v1, v2: "release-" + v2, v3: "test-" + v3}[c.want], req.Release.Tag)
			f.notes.wait(t, "started", c.want)
		})
	}
}

// TestRequestCarriesTheResolvedRelease: the request holds what a worker
// needs to fetch the release without an API request: the package's web URL
// and size, and the content of the small signed files; nothing else. A
// transient GitHub error while resolving postpones the rollout; a release
// that cannot be found starts it without, for the workers to look up.
func TestRequestCarriesTheResolvedRelease(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod")
	deb := release.DebAsset(v1)
	manifest := trust.ManifestAsset(trust.ChannelProduction)
	f.gh.AddRelease(repo, githubfake.ReleaseSpec{Tag: "release-" + v1, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Assets: map[string][]byte{
		deb: bytes.Repeat([]byte("x"), 1000), manifest: []byte("{manifest}"), manifest + ".minisig": []byte("sig"),
		release.SumsAsset: []byte("sums"), trust.ManifestAsset(trust.ChannelTest): []byte("{other channel}"), "notes.txt": []byte("unrelated"),
	}})
	f.join("boot-0")
	f.gh.ScopeFaults("/releases/tags/")
	f.gh.FailNext(3, http.StatusBadGateway)
	f.start("u0")
	req := f.waitRequest(version(v1))
	require.Equal(t, 3, f.gh.Counters().ByStatus[http.StatusBadGateway], "the lookups that failed were retried")

	ref := req.Release
	require.NotNil(t, ref)
	require.Equal(t, repo, ref.Repo)
	byName := map[string]fleet.AssetRef{}
	for _, a := range ref.Assets {
		byName[a.Name] = a
	}
	require.ElementsMatch(t, []string{deb, manifest, manifest + ".minisig", release.SumsAsset}, slices.Collect(maps.Keys(byName)))
	require.Equal(t, int64(1000), byName[deb].Size)
	require.Nil(t, byName[deb].Data, "the package itself is not in etcd")
	require.Contains(t, byName[deb].URL, "/"+repo+"/releases/download/release-"+v1+"/"+deb)
	require.Equal(t, []byte("{manifest}"), byName[manifest].Data)
	require.Equal(t, []byte("sums"), byName[release.SumsAsset].Data)

	// A pin to a version with no release: the workers will say so.
	f.report("boot-0", v1, fleet.CondCompleted, "")
	f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Finished() })
	const missing = "2025.12.31-1"
	require.NoError(t, f.st.PutPin(f.ctx(), &fleet.Pin{Version: missing, AllowDowngrade: true}))
	req = f.waitRequest(version(missing))
	require.Nil(t, req.Release)
}

// TestLeaderCoordinatesTheBarrier: for a fleet too large to count its own
// arrivals, the leader writes status/passed once every server has reached
// a barrier, and not before.
func TestLeaderCoordinatesTheBarrier(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod")
	f.addRelease("release-"+v1, false, 1)
	var ids []string
	for i := 0; i <= fleet.LocalBarrier; i++ {
		ids = append(ids, fmt.Sprintf("boot-%02d", i))
	}
	f.join(ids...)
	f.start("u0")
	req := f.waitRequest(version(v1))
	passed := func() string {
		resp, err := f.st.Client().Get(f.ctx(), f.prefix+"status/passed")
		require.NoError(t, err)
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	arrive := func(id string, k int) {
		require.NoError(t, f.st.PutStatus(f.ctx(), id, &fleet.UpdateStatus{Version: v1, Rollout: req.StartedAt, Step: k, Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning}))
	}
	for _, id := range ids[1:] {
		arrive(id, 1)
	}
	require.Empty(t, passed(), "passed without %s", ids[0])
	arrive(ids[0], 1)
	require.Eventually(t, func() bool { return strings.Contains(passed(), `"step":1`) }, 10*time.Second, 10*time.Millisecond, "the leader wrote status/passed")
}

func TestConfigChangeTakesEffectWithoutRestart(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "none", fleet.ConfigCheckUpdateInterval, "1h")
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0")
	u := f.start("u0")
	require.Eventually(t, u.u.IsLeader, 10*time.Second, 10*time.Millisecond)
	require.Nil(t, f.request(), "env none starts nothing")
	require.Zero(t, f.gh.Counters().Counted, "env none asks GitHub nothing")

	f.set(fleet.ConfigEnv, "prod")
	require.Equal(t, v1, f.waitRequest(version(v1)).Version)
}

func TestIdlePollsCostOneCountedRequest(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigCheckUpdateInterval, "5ms")
	f.addRelease("release-"+v1, false, 1)
	f.start("u0")
	require.Eventually(t, func() bool { return f.gh.Counters().NotModified >= 100 }, 20*time.Second, 10*time.Millisecond)
	c := f.gh.Counters()
	require.Equal(t, 1, c.Counted, "only the first poll may count against the rate limit; by status: %v", c.ByStatus)
}

func TestOutageNeverProducesOrClearsARequest(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"500", "403 primary rate limit", "429 secondary rate limit"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigCheckUpdateInterval, "10ms")
			f.addRelease("release-"+v1, false, 1)
			f.join("boot-0")

			// A completed rollout of v1 is on record.
			f.start("u0")
			f.waitRequest(version(v1))
			f.report("boot-0", v1, fleet.CondCompleted, "")
			done := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Finished() })

			// GitHub breaks, and a newer release appears behind the outage.
			switch fault {
			case "500":
				f.gh.FailNext(1_000_000, http.StatusInternalServerError)
			case "403 primary rate limit":
				f.gh.RateLimitPrimary(1_000_000, http.StatusForbidden, time.Second)
			default:
				f.gh.RateLimitSecondary(1_000_000, http.StatusTooManyRequests, time.Second)
			}
			f.addRelease("release-"+v2, false, 2)
			before := f.gh.Counters().Counted
			require.Eventually(t, func() bool { return f.gh.Counters().Counted >= before+3 }, 20*time.Second, 10*time.Millisecond, "the updater does not retry")

			req := f.request()
			require.NotNil(t, req, "an outage must not clear the request")
			require.Equal(t, done.StartedAt, req.StartedAt)
			info, err := f.st.GetReleaseInfo(f.ctx())
			require.NoError(t, err)
			require.Equal(t, v1, info.Version, "an outage must not change info/release")

			f.gh.ClearFaults()
			require.Equal(t, v2, f.waitRequest(version(v2)).Version, "the updater recovers with GitHub")
		})
	}
}

// leaderLease returns the lease of the current updater leader's key.
func (f *testFleet) leaderLease() clientv3.LeaseID {
	f.t.Helper()
	resp, err := f.st.Client().Get(f.ctx(), f.st.UpdaterElectionPrefix(), clientv3.WithFirstCreate()...)
	require.NoError(f.t, err)
	require.Len(f.t, resp.Kvs, 1)
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func TestFailoverContinuesTheSameRollout(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigCheckUpdateInterval, "50ms")
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0", "boot-1")

	a, b := f.start("u-a"), f.start("u-b")
	req := f.waitRequest(version(v1))
	require.Eventually(t, func() bool { return a.u.IsLeader() != b.u.IsLeader() }, 10*time.Second, 10*time.Millisecond, "exactly one leads")
	leader, follower := a, b
	if b.u.IsLeader() {
		leader, follower = b, a
	}
	f.report("boot-0", v1, fleet.CondCompleted, "")

	// Kill the leader's session, as a crash or partition would: its lease
	// is revoked and its election key goes with it.
	oldKey, err := f.st.Client().Get(f.ctx(), f.st.UpdaterElectionPrefix(), clientv3.WithFirstCreate()...)
	require.NoError(t, err)
	_, err = f.st.Client().Revoke(f.ctx(), f.leaderLease())
	require.NoError(t, err)
	require.Eventually(t, follower.u.IsLeader, 10*time.Second, 10*time.Millisecond, "the other updater takes over")

	// The deposed leader's fenced write is refused.
	err = fleettest.PutRequest(f.ctx(), f.st, f.st.AsLeader(string(oldKey.Kvs[0].Key)), &fleet.UpdateRequest{Version: "9.9.9"})
	require.ErrorIs(t, err, storage.ErrNoLeader)

	f.report("boot-1", v1, fleet.CondCompleted, "")
	final := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Finished() })
	require.Equal(t, req.StartedAt, final.StartedAt, "no second request was written")
	require.False(t, final.Stop)
	hist, err := f.st.GetHistory(f.ctx(), 0)
	require.NoError(t, err)
	require.Len(t, hist, 1)
	require.Equal(t, fleet.ResultCompleted, hist[0].Result)
	require.Contains(t, hist[0].Durations, "boot-1")
	require.False(t, leader.u.IsLeader() && follower.u.IsLeader(), "never two leaders")
}

func TestRolloutOutcomes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		config []string
		drive  func(f *testFleet)
		stop   bool
		result string
		note   []string
	}{
		{name: "all completed", drive: func(f *testFleet) {
			f.report("boot-0", v1, fleet.CondCompleted, "")
			f.report("boot-1", v1, fleet.CondCompleted, "")
		}, result: fleet.ResultCompleted, note: []string{"completed", v1}},
		{name: "abort", drive: func(f *testFleet) {
			f.report("boot-0", v1, fleet.CondRunning, "")
			f.report("boot-1", v1, fleet.CondAborted, "dpkg: error processing package")
		}, stop: true, result: fleet.ResultAborted, note: []string{"STOPPED", "boot-1 aborted", "dpkg: error processing package"}},
		{name: "timeout", config: []string{fleet.ConfigWorkerTimeout, "1s"}, drive: func(f *testFleet) {
			f.report("boot-0", v1, fleet.CondCompleted, "")
		}, stop: true, result: fleet.ResultTimeout, note: []string{"STOPPED", "timed out", "boot-1"}},
		{name: "dead server", config: []string{fleet.ConfigDeadServerGrace, "1s"}, drive: func(f *testFleet) {
			f.report("boot-0", v1, fleet.CondCompleted, "")
			_, err := f.st.Client().Delete(f.ctx(), f.prefix+"alive/boot-1")
			require.NoError(f.t, err)
		}, stop: true, result: fleet.ResultDead, note: []string{"STOPPED", "boot-1 has had no live worker"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, append([]string{fleet.ConfigEnv, "prod"}, c.config...)...)
			f.addRelease("release-"+v1, false, 1)
			f.join("boot-0", "boot-1")
			f.start("u0")
			f.waitRequest(version(v1))
			c.drive(f)

			req := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Finished() })
			require.Equal(t, c.stop, req.Stop)
			f.notes.wait(t, c.note...)
			hist, err := f.st.GetHistory(f.ctx(), 0)
			require.NoError(t, err)
			require.Len(t, hist, 1)
			require.Equal(t, c.result, hist[0].Result)
			require.Equal(t, req.StopReason, hist[0].StopReason)
			if c.stop {
				require.NotEmpty(t, req.StopReason)
			}
		})
	}
}

// oneServer runs an updater for boot-0 in env prod with release v1 on
// GitHub, and returns once the rollout to v1 has started.
func oneServer(t *testing.T, config ...string) (*testFleet, *running, *fleet.UpdateRequest) {
	t.Helper()
	f := newFleet(t, append([]string{fleet.ConfigEnv, "prod"}, config...)...)
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0")
	u := f.start("u0")
	return f, u, f.waitRequest(version(v1))
}

// completeV1 reports boot-0 done and waits for the rollout to finish.
func (f *testFleet) completeV1() {
	f.t.Helper()
	f.report("boot-0", v1, fleet.CondCompleted, "")
	f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Finished() })
}

func TestStoppedRolloutRestartsAfterRecover(t *testing.T) {
	t.Parallel()
	f, _, first := oneServer(t)
	f.report("boot-0", v1, fleet.CondAborted, "boom")
	stopped := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Stop })

	_, rev, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(t, err)
	require.NoError(t, f.st.Recover(f.ctx(), rev, nil))
	again := f.waitRequest(func(r *fleet.UpdateRequest) bool { return !r.StartedAt.Equal(first.StartedAt) })
	require.Equal(t, v1, again.Version)
	require.False(t, again.Stop)
	require.True(t, stopped.Stop)
}

func TestNotificationFailureIsRetriedAndNeverBlocks(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod")
	f.notes.fail = 2
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0")
	f.start("u0")
	f.waitRequest(version(v1))
	f.completeV1()
	f.notes.wait(t, "started", v1)
	f.notes.wait(t, "completed", v1)
}

// TestNotificationsLinkTheStatusPage: with status-url set, a notification's
// title links to the status page and says where it is.
func TestNotificationsLinkTheStatusPage(t *testing.T) {
	t.Parallel()
	const page = "https://ferry.dc1.example/status/"
	f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigStatusURL, page)
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0")
	f.start("u0")
	f.waitRequest(version(v1))
	msg := f.notes.wait(t, "started", v1)
	require.Len(t, msg.Attachments, 1)
	require.Equal(t, page, msg.Attachments[0].TitleLink)
	require.Contains(t, msg.Attachments[0].Fields, slackField{Title: "status page", Value: page})
}

func TestReconfigureOnJoin(t *testing.T) {
	t.Parallel()
	f, _, _ := oneServer(t)
	f.completeV1()

	f.join("boot-1")
	req := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Reason == fleet.ReasonReconfigure })
	require.Equal(t, v1, req.Version)
	require.Equal(t, []string{"boot-0", "boot-1"}, req.Servers)
	require.False(t, req.Finished(), "old completed statuses must not finish the new rollout")
}

func TestWebhookTriggersACheck(t *testing.T) {
	t.Parallel()
	const secret = "hook-secret"
	f, u, _ := oneServer(t, fleet.ConfigCheckUpdateInterval, "1h", fleet.ConfigWebhookSecret, secret)
	f.completeV1()

	srv := httptest.NewServer(u.u.Handler())
	defer srv.Close()
	f.addRelease("release-"+v2, false, 2)
	payload := []byte(`{"action":"published","release":{"tag_name":"release-` + v2 + `"}}`)
	post := func(sig string) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/webhook", bytes.NewReader(payload))
		require.NoError(t, err)
		req.Header.Set("X-GitHub-Event", "release")
		req.Header.Set("X-GitHub-Delivery", "d-1")
		req.Header.Set("X-Hub-Signature-256", sig)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	counted := f.gh.Counters().Counted
	require.Equal(t, http.StatusUnauthorized, post(signWebhook("wrong", payload)))
	require.Equal(t, http.StatusUnauthorized, post("sha256=zz"))
	require.Equal(t, http.StatusUnauthorized, post(""))
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.Zero(t, snap.TriggerRev, "a bad signature triggers nothing")
	require.Equal(t, counted, f.gh.Counters().Counted)

	require.Equal(t, http.StatusOK, post(signWebhook(secret, payload)))
	require.Equal(t, v2, f.waitRequest(version(v2)).Version, "the webhook made the leader check at once, not in an hour")
}

func TestWebhookWithoutSecretIsRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	h := WebhookHandler(f.st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	body := []byte(`{"action":"published"}`)
	req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "release")
	req.Header.Set("X-Hub-Signature-256", signWebhook("", body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusForbidden, rec.Code)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigCheckUpdateInterval, "10ms")
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0", "boot-1")
	u := f.start("u0")
	srv := httptest.NewServer(u.u.Handler())
	defer srv.Close()
	f.waitRequest(version(v1))
	f.report("boot-0", v1, fleet.CondCompleted, "")
	require.Eventually(t, func() bool { return f.gh.Counters().NotModified >= 2 }, 10*time.Second, 10*time.Millisecond)

	metrics := func() string {
		resp, err := http.Get(srv.URL + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}
	// The leader's next turn after the report counts boot-0 completed.
	require.Eventually(t, func() bool { return strings.Contains(metrics(), `ferry_updater_servers{state="completed"} 1`) }, 10*time.Second, 10*time.Millisecond)
	text := metrics()
	require.Contains(t, text, "ferry_updater_leader 1")
	require.Contains(t, text, `ferry_updater_github_requests_total{code="304"}`)
	require.Contains(t, text, `ferry_updater_release_checks_total{result="found"}`)
	require.Contains(t, text, "ferry_updater_last_check_success 1")
	require.Regexp(t, `ferry_updater_last_check_timestamp_seconds [1-9]`, text)
	require.Regexp(t, `ferry_updater_rollout_start_timestamp_seconds [1-9]`, text)
	require.Contains(t, text, `ferry_updater_servers{state="idle"} 1`, "boot-1 has not reported on the rollout")
	require.Contains(t, text, `ferry_build_info{program="ferry-updater"`)
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.Equal(t, "u0", snap.Leader)
	require.NotNil(t, snap.Check, "the leader records its last check for `ferry status`")
	require.Equal(t, "found", snap.Check.Result)
	require.Equal(t, v1, snap.Check.Version)

	resp, err := http.Get(srv.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestStaleReleaseAlerts: the newest release was published long ago (a
// frozen mirror, or a nightly that stopped); with release-max-age set, the
// metric says so and one notification goes out, not one per check.
func TestStaleReleaseAlerts(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigCheckUpdateInterval, "10ms", fleet.ConfigReleaseMaxAge, "720h")
	f.addRelease("release-"+v1, false, 1)
	u := f.start("u0")
	srv := httptest.NewServer(u.u.Handler())
	defer srv.Close()
	msg := f.notes.wait(t, "the newest release, "+v1+", is older than release-max-age")
	require.Contains(t, msg.Attachments[0].Text, "release-max-age is 720h")
	require.Eventually(t, func() bool { return f.gh.Counters().NotModified >= 3 }, 10*time.Second, 10*time.Millisecond)

	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), "ferry_updater_newest_release_stale 1")
	require.Regexp(t, `ferry_updater_newest_release_timestamp_seconds 1\.767\d*e\+09`, string(body))
	f.notes.mu.Lock()
	stale := 0
	for _, m := range f.notes.msgs {
		if strings.Contains(m.Text, "release-max-age") {
			stale++
		}
	}
	f.notes.mu.Unlock()
	require.Equal(t, 1, stale, "one notification per stale release")
}

// TestWebhookGuards: a repeated delivery is not acted on twice, and a
// client that keeps sending bad signatures is refused for a while.
func TestWebhookGuards(t *testing.T) {
	t.Parallel()
	const secret = "hook-secret"
	f := newFleet(t, fleet.ConfigWebhookSecret, secret)
	h := WebhookHandler(f.st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	post := func(remote, delivery, action, sig string) *httptest.ResponseRecorder {
		body := []byte(`{"action":"` + action + `"}`)
		if sig == "" {
			sig = signWebhook(secret, body)
		}
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		req.RemoteAddr = remote
		req.Header.Set("X-GitHub-Event", "release")
		req.Header.Set("X-GitHub-Delivery", delivery)
		req.Header.Set("X-Hub-Signature-256", sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	trigger := func() int64 {
		snap, err := f.st.Snapshot(f.ctx())
		require.NoError(t, err)
		return snap.TriggerRev
	}
	rec := post("10.0.0.1:1234", "d-1", "published", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "check triggered")
	first := trigger()
	require.NotZero(t, first)
	// The same signed payload again, under 50 fresh delivery ids (which
	// the signature does not cover), acts once.
	for i := range 50 {
		rec = post("10.0.0.1:1234", fmt.Sprintf("fresh-%d", i), "published", "")
		require.Equal(t, http.StatusOK, rec.Code)
		require.Contains(t, rec.Body.String(), "repeated delivery")
	}
	require.Equal(t, first, trigger(), "the repeats wrote nothing")

	// Bad signatures from anywhere in a /24 count together.
	for i := range BadSignatureLimit {
		require.Equal(t, http.StatusUnauthorized, post(fmt.Sprintf("10.0.0.%d:99", 2+i), "x", "published", "sha256=00").Code)
	}
	rec = post("10.0.0.200:99", "x", "published", "sha256=00")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	require.Equal(t, http.StatusUnauthorized, post("10.0.1.2:99", "x", "published", "sha256=00").Code, "another /24 is not affected")
	// A valid signature from the same network (GitHub behind the same
	// proxy) still goes through.
	require.Equal(t, http.StatusOK, post("10.0.0.2:99", "d-2", "edited", "").Code)
	require.NotEqual(t, first, trigger())

	// IPv6: the /64 is one network.
	for i := range BadSignatureLimit {
		require.Equal(t, http.StatusUnauthorized, post(fmt.Sprintf("[2001:db8::%x]:99", i+1), "x", "published", "sha256=00").Code)
	}
	require.Equal(t, http.StatusTooManyRequests, post("[2001:db8::ffff:1]:99", "x", "published", "sha256=00").Code)
	require.Equal(t, http.StatusUnauthorized, post("[2001:db8:0:1::1]:99", "x", "published", "sha256=00").Code)
}

// TestWebhookGuardTablesAreBounded: a flood of networks or payloads
// evicts the least recently used entries, never the whole table: a network
// over the limit stays limited while others fill the table.
func TestWebhookGuardTablesAreBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	g := newWebhookGuard(func() time.Time { return now })
	for range BadSignatureLimit + 1 {
		g.badSignature("192.0.2.0/24")
	}
	for i := range 3 * maxTracked {
		g.badSignature(fmt.Sprintf("net-%d", i))
		if i%100 == 0 {
			_, limited := g.badSignature("192.0.2.0/24")
			require.True(t, limited, "the flooding network is still limited after %d others", i)
		}
	}
	require.Equal(t, maxTracked, g.bad.Len())
	for i := range 3 * maxTracked {
		g.repeated([]byte(fmt.Sprint(i)))
	}
	require.Equal(t, maxTracked, g.seen.Len())
	require.True(t, g.repeated([]byte(fmt.Sprint(3*maxTracked-1))), "a recent payload is still known")
	now = now.Add(DeliveryWindow)
	require.False(t, g.repeated([]byte(fmt.Sprint(3*maxTracked-1))), "past the window it acts again")
}

// TestNotificationErrorsNeverShowTheURL: a Slack URL is a secret, and the
// HTTP client's errors quote the URL they failed on.
func TestNotificationErrorsNeverShowTheURL(t *testing.T) {
	t.Parallel()
	n := &WebhookNotifier{Client: &http.Client{Timeout: 2 * time.Second}}
	// Whatever the scheme's case, and with user info, which the HTTP
	// client writes back in another form.
	for _, secret := range []string{"http://127.0.0.1:1/services/T000/B000/s3cr3t", "HTTP://127.0.0.1:1/services/T000/B000/s3cr3t", "http://hook:s3cr3t-pw@127.0.0.1:1/services/s3cr3t", "http://127.0.0.1:1/services/%zz/s3cr3t"} {
		err := n.Notify(context.Background(), secret, Event{Kind: EventStart, Version: v1})
		require.Error(t, err)
		require.NotContains(t, err.Error(), "s3cr3t", secret)
		require.NotContains(t, strings.ToLower(err.Error()), "/services", secret)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }))
	defer srv.Close()
	err := n.Notify(context.Background(), srv.URL+"/services/s3cr3t", Event{Kind: EventStart, Version: v1})
	require.ErrorContains(t, err, "403")
	require.NotContains(t, err.Error(), "s3cr3t")
}

// TestTokenNeverLeavesForAnEtcdChosenHost: a token kept on the server's
// disk goes only to the GitHub API that the server's own config names. A
// github-api-url written into etcd by hand (ferry config set refuses it)
// is ignored: the host it names hears nothing.
func TestTokenNeverLeavesForAnEtcdChosenHost(t *testing.T) {
	t.Parallel()
	const token = "ghp_kept-on-the-servers-disk"
	var evilHits sync.Map
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilHits.Store(r.URL.Path, r.Header.Get("Authorization"))
		http.NotFound(w, r)
	}))
	defer evil.Close()

	f := newFleet(t, fleet.ConfigEnv, "prod")
	f.gh.RequireToken(token)
	api := f.gh.APIURL()
	f.local = func() map[string]string {
		return map[string]string{fleet.ConfigGitHubAPIURL: api, fleet.ConfigGitHubToken: token}
	}
	f.st.UseLocal(f.local)
	_, err := f.st.SetConfig(f.ctx(), fleet.ConfigGitHubAPIURL, evil.URL+"/")
	require.ErrorContains(t, err, "no longer lives in etcd")
	_, err = f.st.Client().Put(f.ctx(), f.prefix+"config/"+fleet.ConfigGitHubAPIURL, evil.URL+"/")
	require.NoError(t, err)

	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0")
	f.start("u0")
	require.Equal(t, v1, f.waitRequest(version(v1)).Version, "the release was found through the server's own API, with the token")
	require.Positive(t, f.gh.Counters().Counted)
	evilHits.Range(func(path, auth any) bool {
		t.Errorf("the host etcd named got %s with Authorization %q", path, auth)
		return true
	})
}

// TestForgedRollbackRefused: an etcd writer rewrites the running request's
// From and forges a failed status whose step says on-failure: rollback.
// The leader rolls back only to the version the fleet last completed, as
// history says; to anything else it stops the fleet instead.
func TestForgedRollbackRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, from string
		rollback   bool
	}{{"forged from", "2025.06.01-1", false}, {"from the last completed", v1, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, req := upgradeFromV1(t)
			require.Equal(t, v1, req.From)
			forged := *req
			forged.From = c.from
			data, err := json.Marshal(&forged)
			require.NoError(t, err)
			_, err = f.st.Client().Put(f.ctx(), f.prefix+"status/current", string(data))
			require.NoError(t, err)
			require.NoError(t, f.st.PutStatus(f.ctx(), "boot-1", &fleet.UpdateStatus{
				Version: v2, Rollout: req.StartedAt, Step: 1, StepName: "health", Cond: fleet.CondAborted,
				OnFailure: "rollback", Message: "health check failed", UpdatedAt: time.Now().UTC(),
			}))
			if c.rollback {
				back := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Reason == fleet.ReasonRollback })
				require.Equal(t, v1, back.Version)
				return
			}
			stopped := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Stop })
			require.Equal(t, v2, stopped.Version, "no rollback started")
			require.Contains(t, stopped.StopReason, "no rollback: the rollout says it came from 2025.06.01-1, but the last completed rollout was to "+v1)
		})
	}
}

// upgradeFromV1 is a two-server fleet whose updater completed a rollout to
// v1 and started one to v2, which it returns.
func upgradeFromV1(t *testing.T) (*testFleet, *fleet.UpdateRequest) {
	t.Helper()
	f := newFleet(t, fleet.ConfigEnv, "prod", fleet.ConfigCheckUpdateInterval, "100ms")
	f.addRelease("release-"+v1, false, 1)
	f.join("boot-0", "boot-1")
	f.start("u0")
	first := f.waitRequest(version(v1))
	for _, id := range first.Servers {
		require.NoError(t, f.st.PutStatus(f.ctx(), id, &fleet.UpdateStatus{Version: v1, Rollout: first.StartedAt, Cond: fleet.CondCompleted, UpdatedAt: time.Now().UTC()}))
	}
	f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Version == v1 && r.Finished() })
	f.addRelease("release-"+v2, false, 2)
	return f, f.waitRequest(version(v2))
}

// TestWithdrawnReleaseRefused: the leader never picks a version that a
// withdrawals statement, signed by a key of the server's, withdrew; it
// takes the newest one that is not withdrawn. A statement signed by
// another key withdraws nothing.
func TestWithdrawnReleaseRefused(t *testing.T) {
	t.Parallel()
	pub, priv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	_, otherPriv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	for _, c := range []struct {
		name   string
		signer minisign.PrivateKey
		want   string
	}{{"signed by the release key", priv, v1}, {"signed by another key", otherPriv, v2}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, fleet.ConfigEnv, "prod")
			f.keys = t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(f.keys, "release.pub"), []byte(pub.String()+"\n"), 0o644))
			s := &trust.Statement{Product: trust.Product, Kind: trust.KindWithdrawals, Serial: 1, Created: time.Now().UTC(), Withdrawn: []string{v2}}
			sd, err := s.Sign(c.signer)
			require.NoError(t, err)
			require.NoError(t, f.st.PutWithdrawals(f.ctx(), sd))
			f.addRelease("release-"+v1, false, 1)
			f.addRelease("release-"+v2, false, 2)
			f.join("boot-0")
			f.start("u0")
			require.Equal(t, c.want, f.waitRequest(func(*fleet.UpdateRequest) bool { return true }).Version)
		})
	}
}

// signWebhook returns the X-Hub-Signature-256 value GitHub would send.
func signWebhook(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// TestRollbackIsUnattended: a rollback keeps its canary, but does not
// stop at the plan's manual pause behind it: once the canary finished the
// step, the leader lets the rest go on, and the rollout's history says why.
func TestRollbackIsUnattended(t *testing.T) {
	t.Parallel()
	f, req := upgradeFromV1(t)
	require.NoError(t, f.st.PutStatus(f.ctx(), "boot-1", &fleet.UpdateStatus{
		Version: v2, Rollout: req.StartedAt, Step: 1, StepName: "health", Cond: fleet.CondAborted,
		OnFailure: "rollback", Message: "health check failed", UpdatedAt: time.Now().UTC(),
	}))
	back := f.waitRequest(func(r *fleet.UpdateRequest) bool { return r.Reason == fleet.ReasonRollback })

	// boot-0, the canary of step 1 of the old release's plan, finished it;
	// boot-1 waits behind it, the plan says for a person.
	status := func(step int, phase fleet.Phase) *fleet.UpdateStatus {
		return &fleet.UpdateStatus{Version: v1, Rollout: back.StartedAt, Step: step, StepName: "restart", Phase: phase, Cond: fleet.CondRunning,
			Canary: 1, Pause: "manual", UpdatedAt: time.Now().UTC()}
	}
	require.NoError(t, f.st.PutStatus(f.ctx(), "boot-0", status(2, fleet.PhaseWaiting)))
	require.NoError(t, f.st.PutStatus(f.ctx(), "boot-1", status(1, fleet.PhasePaused)))
	require.Eventually(t, func() bool {
		snap, err := f.st.Snapshot(f.ctx())
		return err == nil && snap.Resume != nil && snap.Resume.Step == 1
	}, 10*time.Second, 20*time.Millisecond, "the leader lets the rest follow the canary")
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.Contains(t, snap.Resume.By, "a rollback skips the plan's manual pauses")
	resumed := f.waitRequest(func(r *fleet.UpdateRequest) bool {
		return slices.ContainsFunc(r.Events, func(e fleet.RolloutEvent) bool { return e.Kind == "resumed" })
	})
	require.True(t, slices.ContainsFunc(resumed.Events, func(e fleet.RolloutEvent) bool {
		return strings.Contains(e.Message, "a rollback skips the plan's manual pauses")
	}), "the rollout's record says why: %+v", resumed.Events)
}

// TestTriggeredCheckIsRecorded: a check that a trigger asked for (`ferry
// release check-now`) is recorded with the trigger's revision, even when
// it found what the last check found a moment ago.
func TestTriggeredCheckIsRecorded(t *testing.T) {
	t.Parallel()
	f, _, _ := oneServer(t, fleet.ConfigCheckUpdateInterval, "1h")
	var first *fleet.CheckInfo
	require.Eventually(t, func() bool {
		snap, err := f.st.Snapshot(f.ctx())
		first = snap.Check
		return err == nil && first != nil
	}, 10*time.Second, 20*time.Millisecond)
	for range 2 {
		rev, err := f.st.PutCheckTrigger(f.ctx(), &fleet.CheckTrigger{At: time.Now().UTC(), Delivery: "test"})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			snap, err := f.st.Snapshot(f.ctx())
			return err == nil && snap.Check != nil && snap.Check.Trigger == rev
		}, 10*time.Second, 20*time.Millisecond, "the check that answers trigger %d is recorded", rev)
	}
}

// TestShutdownWhileEtcdIsAway: an updater that waits in the election ends
// when it is told to, even with etcd gone: etcd's Campaign, cancelled,
// resigns with a context that waits for etcd for as long as it is away.
func TestShutdownWhileEtcdIsAway(t *testing.T) {
	t.Parallel()
	srv, err := etcdtest.Start(t.TempDir())
	require.NoError(t, err)
	run := func(id string) (*Updater, context.CancelFunc, chan error) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()})
		require.NoError(t, err)
		t.Cleanup(func() { cli.Close() })
		st, err := storage.New(cli, "/shutdown/")
		require.NoError(t, err)
		u := New(Options{Storage: st, ID: id, SessionTTL: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- u.Run(ctx) }()
		return u, cancel, done
	}
	leader, stopLeader, leaderDone := run("u0")
	require.Eventually(t, leader.IsLeader, 10*time.Second, 20*time.Millisecond)
	_, stopFollower, followerDone := run("u1")
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer admin.Close()
	require.Eventually(t, func() bool {
		resp, err := admin.Get(context.Background(), "/shutdown/leader/updater/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	}, 10*time.Second, 20*time.Millisecond, "the follower campaigns")
	srv.Close()
	began := time.Now()
	stopFollower()
	select {
	case err := <-followerDone:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not stop while etcd was away")
	}
	t.Logf("the follower stopped in %s", time.Since(began))
	began = time.Now()
	stopLeader()
	select {
	case <-leaderDone:
	case <-time.After(20 * time.Second):
		t.Fatal("the leader did not stop while etcd was away")
	}
	t.Logf("the leader stopped in %s", time.Since(began))
}
