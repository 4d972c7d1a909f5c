package storage

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func newTestStorage(t *testing.T) *Storage {
	t.Helper()
	st, err := New(etcdtest.Client(t), etcdtest.Prefix(t))
	require.NoError(t, err)
	return st
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// campaign makes the test the updater leader and returns its election.
func campaign(t *testing.T, ctx context.Context, st *Storage) *concurrency.Election {
	t.Helper()
	sess, err := concurrency.NewSession(st.Client())
	require.NoError(t, err)
	t.Cleanup(func() { sess.Close() })
	elec := concurrency.NewElection(sess, st.UpdaterElectionPrefix())
	require.NoError(t, elec.Campaign(ctx, "test"))
	return elec
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	cfg, err := st.GetConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, fleet.EnvNone, cfg.Env)
	require.Empty(t, cfg.GitHubRepo)
	require.Equal(t, fleet.DefaultGitHubAPIURL, cfg.GitHubAPIURL)
	require.True(t, strings.HasPrefix(cfg.GitHubAPIURL, "https://"), "the default API is reached over TLS")
	require.Empty(t, cfg.GitHubToken)
	require.Equal(t, 10*time.Minute, cfg.CheckUpdateInterval)
	require.Equal(t, 60*time.Minute, cfg.WorkerTimeout)
	require.Empty(t, cfg.ReleaseTime)
	require.Equal(t, "UTC", cfg.ReleaseTimezone.String())
	require.Empty(t, cfg.Proxy)
	require.Empty(t, cfg.NotifyURL)
	require.Empty(t, cfg.StatusURL)
	require.Equal(t, 2*time.Minute, cfg.DeadServerGrace)
	require.Zero(t, cfg.ReleaseMaxAge, "release-max-age is off by default")
	require.Equal(t, 15*time.Minute, cfg.WorkerRetryBudget)

	secret, err := st.GetWebhookSecret(ctx)
	require.NoError(t, err)
	require.Empty(t, secret)

	// Every key has a line above; a new key must get one.
	require.Len(t, fleet.ConfigKeys(), 14)
}

func TestConfigSetAndGet(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)
	set := func(k, v string) string {
		t.Helper()
		got, err := st.SetConfig(ctx, k, v)
		require.NoError(t, err)
		return got
	}
	set(fleet.ConfigEnv, "staging")
	set(fleet.ConfigGitHubRepo, "ferry-cd/ferry")
	set(fleet.ConfigWorkerTimeout, " 90m ")
	set(fleet.ConfigReleaseTimezone, "Asia/Tokyo")
	require.Equal(t, "* 9-16 * * 1-5\n0 20 * * *", set(fleet.ConfigReleaseTime, "* 9-16 * * 1-5\n\n 0 20 * * * \n"))
	set(fleet.ConfigProxy, "http://user:s3cret@proxy.example:3128")
	set(fleet.ConfigNotifyURL, "https://hooks.slack.example/services/T0/B0/secret")

	c, err := st.GetConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, fleet.EnvStaging, c.Env)
	require.Equal(t, "ferry-cd/ferry", c.GitHubRepo)
	require.Equal(t, 90*time.Minute, c.WorkerTimeout)
	require.Equal(t, "Asia/Tokyo", c.ReleaseTimezone.String())
	require.Len(t, c.ReleaseSchedules, 2)
	require.Equal(t, "http://user:s3cret@proxy.example:3128", c.Proxy)

	// Secrets are never shown: not the notify URL, not the proxy's password.
	proxyKey, err := fleet.LookupConfigKey(fleet.ConfigProxy)
	require.NoError(t, err)
	require.Equal(t, "http://user:xxxxx@proxy.example:3128", proxyKey.Display(c.Proxy))
	notifyKey, err := fleet.LookupConfigKey(fleet.ConfigNotifyURL)
	require.NoError(t, err)
	require.Equal(t, "********", notifyKey.Display(c.NotifyURL))
	require.Equal(t, "https://hooks.slack.example/********", fleet.RedactURL("HTTPS://hook:pw@hooks.slack.example/services/T0/B0/secret"))
	require.Equal(t, "failed: Post \"http://hooks.example/********\": refused", fleet.RedactURLs(`failed: Post "HTTP://u:pw@hooks.example/services/x": refused`))

	// A proxy whose password has a bare % does not parse: the error, set or
	// stored, never shows the value, and neither does the display.
	const badProxy = "http://user:pa%ss@proxy.example:3128"
	_, err = st.SetConfig(ctx, fleet.ConfigProxy, badProxy)
	require.ErrorContains(t, err, "%25")
	require.NotContains(t, err.Error(), "pa%ss")
	_, err = fleet.ParseConfig(map[string]string{fleet.ConfigProxy: badProxy})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "pa%ss")
	require.Equal(t, "********", proxyKey.Display(badProxy))

	require.NoError(t, st.UnsetConfig(ctx, fleet.ConfigWorkerTimeout))
	d, err := st.GetConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, 60*time.Minute, d.WorkerTimeout)
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	cases := []struct {
		key, value string
		want       []string // fragments of the message
	}{
		{fleet.ConfigWorkerTimeout, "abc", []string{"worker-timeout", `"abc"`, "not a duration", "90m"}},
		{fleet.ConfigWorkerTimeout, "-5m", []string{"worker-timeout", "greater than zero"}},
		{fleet.ConfigCheckUpdateInterval, "0s", []string{"check-update-interval", "greater than zero"}},
		{fleet.ConfigEnv, "production", []string{"env", `"production"`, "none, dev, staging, prod"}},
		{fleet.ConfigGitHubRepo, "ferry", []string{"github-repo", "owner/name"}},
		{fleet.ConfigGitHubRepo, "a/b/c", []string{"github-repo", "owner/name"}},
		{fleet.ConfigGitHubAPIURL, "https://evil.example/", []string{"github-api-url", "no longer lives in etcd", "/etc/ferry/config.yml"}},
		{fleet.ConfigNotifyURL, "not a url", []string{"notify-url", "http(s) URL"}},
		{fleet.ConfigProxy, "http://", []string{"proxy", "http(s) URL"}},
		{fleet.ConfigReleaseTime, "* * *", []string{"release-time", "not a cron line"}},
		{fleet.ConfigReleaseTime, "@daily", []string{"release-time", "plain cron line"}},
		{fleet.ConfigReleaseTime, "61 * * * *", []string{"release-time", "not a cron line"}},
		{fleet.ConfigReleaseTimezone, "Mars/Olympus", []string{"release-timezone", "IANA"}},
		{"signing-keys", "RWQ", []string{"signing-keys", "no longer lives in etcd", "/etc/ferry/trusted-keys/NAME.pub"}},
		{"allow-unsigned", "true", []string{"allow-unsigned", "no longer lives in etcd", "config.yml"}},
		{fleet.ConfigGitHubToken, "ghp_secret with space", []string{"github-token", "white space"}},
		{"no-such-key", "x", []string{"no-such-key", "not a config key", "worker-timeout"}},
	}
	for _, c := range cases {
		_, err := st.SetConfig(ctx, c.key, c.value)
		require.Error(t, err, "%s=%q", c.key, c.value)
		require.ErrorIs(t, err, fleet.ErrInvalid)
		for _, w := range c.want {
			require.Contains(t, err.Error(), w, "%s=%q", c.key, c.value)
		}
		require.NotContains(t, err.Error(), "ghp_secret", "a secret was echoed")
	}

	// Nothing was written by any refused set.
	values, err := st.ConfigValues(ctx)
	require.NoError(t, err)
	require.Empty(t, values)
}

func TestConfigStoredGarbage(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	// A value written around `ferry config set` is refused when read, with
	// a message that says how to fix it.
	_, err := st.Client().Put(ctx, st.Prefix()+"config/worker-timeout", "soon")
	require.NoError(t, err)
	_, err = st.GetConfig(ctx)
	require.ErrorIs(t, err, fleet.ErrInvalid)
	require.Contains(t, err.Error(), "ferry config set worker-timeout")
	snap, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Nil(t, snap.Config)
	require.ErrorIs(t, snap.ConfigErr, fleet.ErrInvalid)
	require.ErrorContains(t, snap.ConfigErr, "worker-timeout")
}

func TestServers(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	created, err := st.JoinServer(ctx, "boot-0", &fleet.ServerInfo{Hostname: "h0", JoinedAt: time.Unix(100, 0).UTC()})
	require.NoError(t, err)
	require.True(t, created)
	created, err = st.JoinServer(ctx, "boot-0", &fleet.ServerInfo{Hostname: "h0b", Labels: map[string]string{"rack": "1"}, JoinedAt: time.Unix(200, 0).UTC()})
	require.NoError(t, err)
	require.False(t, created)

	servers, err := st.GetServers(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"boot-0"}, fleet.SortedIDs(servers))
	require.Equal(t, "h0b", servers["boot-0"].Hostname)
	require.Equal(t, "1", servers["boot-0"].Labels["rack"])
	require.True(t, servers["boot-0"].JoinedAt.Equal(time.Unix(100, 0)), "re-join keeps joined_at")

	// A re-join that names nothing keeps hostname and labels.
	_, err = st.JoinServer(ctx, "boot-0", &fleet.ServerInfo{})
	require.NoError(t, err)
	servers, err = st.GetServers(ctx)
	require.NoError(t, err)
	require.Equal(t, "h0b", servers["boot-0"].Hostname)
	require.Equal(t, "1", servers["boot-0"].Labels["rack"])
	_, err = st.JoinServer(ctx, "boot-7", &fleet.ServerInfo{})
	require.NoError(t, err)
	servers, err = st.GetServers(ctx)
	require.NoError(t, err)
	require.Equal(t, "boot-7", servers["boot-7"].Hostname)

	_, err = st.JoinServer(ctx, "Boot/0", &fleet.ServerInfo{})
	require.ErrorIs(t, err, fleet.ErrInvalid)

	require.NoError(t, st.LeaveServer(ctx, "boot-0"))
	require.ErrorIs(t, st.LeaveServer(ctx, "boot-0"), ErrNotFound)
}

func TestSnapshotThenWatchLosesNothing(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	require.NoError(t, st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "1", Cond: fleet.CondRunning}))
	snap, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, fleet.CondRunning, snap.Statuses["boot-0"].Cond)
	require.Nil(t, snap.Request)

	// This write lands after the snapshot but before anyone watches. A
	// watch that starts at the snapshot's revision+1 must still see it.
	require.NoError(t, st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "1", Cond: fleet.CondCompleted}))

	changes, err := st.waitChanges(ctx, snap.Revision)
	require.NoError(t, err)
	require.Len(t, changes, 1)
	require.Equal(t, "status/servers/boot-0", changes[0].Key)
	require.Greater(t, changes[0].Revision, snap.Revision)

	// A watch from the latest revision blocks until the next write.
	snap2, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, fleet.CondCompleted, snap2.Statuses["boot-0"].Cond)
	got := make(chan []Change, 1)
	go func() {
		c, err := st.waitChanges(ctx, snap2.Revision)
		if err == nil {
			got <- c
		}
		close(got)
	}()
	_, err = st.JoinServer(ctx, "boot-1", &fleet.ServerInfo{Hostname: "h1"})
	require.NoError(t, err)
	select {
	case c := <-got:
		require.Len(t, c, 1)
		require.Equal(t, "info/servers/boot-1", c[0].Key)
	case <-ctx.Done():
		t.Fatal("the watcher never saw the write")
	}
}

// Not parallel: the compaction would cut the history that other tests
// watch from.
func TestWatchCompacted(t *testing.T) {
	st := newTestStorage(t)
	ctx := testContext(t)

	require.NoError(t, st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Cond: fleet.CondRunning}))
	snap, err := st.Snapshot(ctx)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		require.NoError(t, st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Cond: fleet.CondRunning, Step: i}))
	}
	_, rev, err := currentRev(ctx, st)
	require.NoError(t, err)
	_, err = st.Client().Compact(ctx, rev)
	require.NoError(t, err)

	_, err = st.waitChanges(ctx, snap.Revision)
	require.ErrorIs(t, err, ErrCompacted)
}

func currentRev(ctx context.Context, st *Storage) (*clientv3.GetResponse, int64, error) {
	resp, err := st.Client().Get(ctx, st.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, err
	}
	return resp, resp.Header.Revision, nil
}

func TestFencedPutRequest(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	elec := campaign(t, ctx, st)

	req := &fleet.UpdateRequest{Version: "2026.01.01-1", Servers: []string{"boot-0"}, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	leaderKey := elec.Key()
	require.NoError(t, putRequest(ctx, st.AsLeader(leaderKey), req))
	got, _, err := getRequest(ctx, st)
	require.NoError(t, err)
	require.Equal(t, "2026.01.01-1", got.Version)
	require.True(t, got.IsMember("boot-0"))

	// The leader loses its key: its next write must be refused and must not
	// change the request.
	require.NoError(t, elec.Resign(ctx))
	req.Version = "2026.01.02-1"
	err = putRequest(ctx, st.AsLeader(leaderKey), req)
	require.ErrorIs(t, err, ErrNoLeader)
	require.ErrorIs(t, st.AsLeader(leaderKey).PutReleaseInfo(ctx, &fleet.ReleaseInfo{Version: "x"}), ErrNoLeader)
	require.ErrorIs(t, putRequest(ctx, st.AsLeader(""), req), ErrNoLeader)
	got, _, err = getRequest(ctx, st)
	require.NoError(t, err)
	require.Equal(t, "2026.01.01-1", got.Version)
	_, err = st.GetReleaseInfo(ctx)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestAliveExpiresWithLease(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	lease, err := st.Client().Grant(ctx, 1)
	require.NoError(t, err)
	require.NoError(t, st.PutAlive(ctx, "boot-0", &fleet.Alive{Version: "1", PID: 42, StartedAt: time.Now().UTC()}, lease.ID))
	alive, err := st.GetAlive(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, alive["boot-0"].PID)

	// Nobody keeps the lease alive, so etcd expires it and the key goes.
	require.Eventually(t, func() bool {
		alive, err := st.GetAlive(ctx)
		return err == nil && len(alive) == 0
	}, 15*time.Second, 100*time.Millisecond)
}

func TestRecover(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	elec := campaign(t, ctx, st)
	require.NoError(t, putRequest(ctx, st.AsLeader(elec.Key()), &fleet.UpdateRequest{Version: "1", Servers: []string{"a"}, Stop: true}))
	require.NoError(t, st.PutStatus(ctx, "a", &fleet.UpdateStatus{Version: "1", Cond: fleet.CondAborted, Message: "boom"}))
	require.NoError(t, st.PutContents(ctx, "boot", &fleet.ContentsStatus{Version: "1", Success: true}))
	require.NoError(t, st.PutPin(ctx, &fleet.Pin{Version: "1"}))

	_, rev, err := getRequest(ctx, st)
	require.NoError(t, err)
	// The request changes after the operator looked: recover must refuse.
	require.NoError(t, putRequest(ctx, st.AsLeader(elec.Key()), &fleet.UpdateRequest{Version: "1", Servers: []string{"a"}, Stop: true, StopReason: "again"}))
	require.ErrorIs(t, st.Recover(ctx, rev, nil), ErrConflict)
	_, err = st.GetContents(ctx, "boot")
	require.NoError(t, err, "a refused recover deletes nothing")

	_, rev, err = getRequest(ctx, st)
	require.NoError(t, err)
	require.NoError(t, st.Recover(ctx, rev, nil))
	_, _, err = getRequest(ctx, st)
	require.ErrorIs(t, err, ErrNotFound)
	statuses, err := st.statuses(ctx)
	require.NoError(t, err)
	require.Empty(t, statuses)
	_, err = st.GetContents(ctx, "boot")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = getPin(ctx, st)
	require.NoError(t, err, "recover leaves the pin alone")
}

func TestMalformedValueIsInvalidNotNotFound(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	_, err := st.Client().Put(ctx, st.Prefix()+"status/current", "{not json")
	require.NoError(t, err)
	_, _, err = getRequest(ctx, st)
	require.ErrorIs(t, err, fleet.ErrInvalid)
	require.False(t, errors.Is(err, ErrNotFound))
	require.True(t, strings.Contains(err.Error(), "status/current"))
}

func TestNewRejectsRelativePrefix(t *testing.T) {
	t.Parallel()
	_, err := New(nil, "ferry")
	require.ErrorIs(t, err, fleet.ErrInvalid)
	st, err := New(nil, "/ferry")
	require.NoError(t, err)
	require.Equal(t, "/ferry/", st.Prefix())
}

func TestStartAndFinishRequest(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)

	elec := campaign(t, ctx, st)
	key := elec.Key()

	started := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	req := &fleet.UpdateRequest{Version: "1", Servers: []string{"a"}, Reason: fleet.ReasonUpdate, StartedAt: started}
	require.NoError(t, st.AsLeader(key).StartRequest(ctx, req))
	require.NoError(t, st.PutStatus(ctx, "a", &fleet.UpdateStatus{Version: "1", Cond: fleet.CondCompleted}))
	_, rev, err := getRequest(ctx, st)
	require.NoError(t, err)

	req.FinishedAt = started.Add(time.Minute)
	hist := &fleet.HistoryRecord{Version: "1", Servers: req.Servers, Result: fleet.ResultCompleted, StartedAt: started, FinishedAt: req.FinishedAt, Durations: map[string]float64{"a": 42}}
	require.ErrorIs(t, st.AsLeader(key).FinishRequest(ctx, req, hist, rev-1), ErrConflict, "a request read before it changed is not finished")
	require.NoError(t, st.AsLeader(key).FinishRequest(ctx, req, hist, rev))
	got, _, err := getRequest(ctx, st)
	require.NoError(t, err)
	require.True(t, got.Finished())

	// A reconfigure at the same version clears the old statuses with it.
	req2 := &fleet.UpdateRequest{Version: "1", Servers: []string{"a", "b"}, Reason: fleet.ReasonReconfigure, StartedAt: started.Add(time.Hour)}
	require.NoError(t, st.AsLeader(key).StartRequest(ctx, req2))
	statuses, err := st.statuses(ctx)
	require.NoError(t, err)
	require.Empty(t, statuses)
	got, _, err = getRequest(ctx, st)
	require.NoError(t, err)
	require.False(t, got.Finished())

	_, rev, err = getRequest(ctx, st)
	require.NoError(t, err)
	req2.FinishedAt = req2.StartedAt.Add(time.Minute)
	require.NoError(t, st.AsLeader(key).FinishRequest(ctx, req2, &fleet.HistoryRecord{Version: "1", Result: fleet.ResultAborted, StartedAt: req2.StartedAt, FinishedAt: req2.FinishedAt}, rev))
	hs, err := st.GetHistory(ctx, 0)
	require.NoError(t, err)
	require.Len(t, hs, 2)
	require.Equal(t, fleet.ResultAborted, hs[0].Result, "newest first")
	require.Equal(t, 42.0, hs[1].Durations["a"])
	require.Equal(t, time.Minute, hs[1].Duration())
	hs, err = st.GetHistory(ctx, 1)
	require.NoError(t, err)
	require.Len(t, hs, 1)

	// Fenced: after resigning, nothing is written.
	require.NoError(t, elec.Resign(ctx))
	require.ErrorIs(t, st.AsLeader(key).StartRequest(ctx, &fleet.UpdateRequest{Version: "2"}), ErrNoLeader)
	require.ErrorIs(t, st.AsLeader(key).FinishRequest(ctx, req2, &fleet.HistoryRecord{StartedAt: time.Now()}, rev), ErrNoLeader)
	hs, err = st.GetHistory(ctx, 0)
	require.NoError(t, err)
	require.Len(t, hs, 2)
}

func TestTriggerInSnapshot(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)
	snap, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Zero(t, snap.TriggerRev)
	rev, err := st.PutCheckTrigger(ctx, &fleet.CheckTrigger{At: time.Now(), Delivery: "abc"})
	require.NoError(t, err)
	snap2, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Greater(t, snap2.TriggerRev, snap.Revision)
	require.Equal(t, rev, snap2.TriggerRev, "the revision of the write")
}

// TestLocalSecretsTakeThePlaceOfEtcd: a server that keeps its secrets on
// disk (systemd LoadCredential=) uses them, whatever etcd says; other keys
// cannot be overridden that way.
func TestLocalSecretsTakeThePlaceOfEtcd(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)
	_, err := st.SetConfig(ctx, fleet.ConfigGitHubToken, "from-etcd")
	require.NoError(t, err)
	_, err = st.SetConfig(ctx, fleet.ConfigEnv, "prod")
	require.NoError(t, err)
	local := map[string]string{fleet.ConfigGitHubToken: "from-disk", fleet.ConfigNotifyURL: "https://hooks.example/T/B/x", fleet.ConfigEnv: "dev", fleet.ConfigGitHubAPIURL: "https://ghe.example/api/v3/"}
	st.UseLocal(func() map[string]string { return local })
	// A value etcd holds from before github-api-url left it is ignored.
	_, err = st.cli.Put(ctx, st.prefix+"config/"+fleet.ConfigGitHubAPIURL, "https://evil.example/")
	require.NoError(t, err)

	c, err := st.GetConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, "from-disk", c.GitHubToken)
	require.Equal(t, "https://ghe.example/api/v3/", c.GitHubAPIURL, "the API is the server's own")
	require.Equal(t, "https://hooks.example/T/B/x", c.NotifyURL)
	require.Equal(t, fleet.EnvProd, c.Env, "only secrets come from disk")
	snap, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, "from-disk", snap.Config.GitHubToken)

	local[fleet.ConfigGitHubToken] = "rotated"
	c, err = st.GetConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, "rotated", c.GitHubToken, "a rotated file takes effect at once")
}
