package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// fleet is one test's view of the CLI and of etcd under its own prefix.
type testFleet struct {
	t      *testing.T
	prefix string
	st     *storage.Storage
	// githubAPI is the admin config's github-api-url, when set.
	githubAPI string
}

func newFleet(t *testing.T) *testFleet {
	t.Helper()
	prefix := etcdtest.Prefix(t)
	st, err := storage.New(etcdtest.Client(t), prefix)
	require.NoError(t, err)
	return &testFleet{t: t, prefix: prefix, st: st}
}

type result struct {
	code           int
	stdout, stderr string
}

func (f *testFleet) run(stdin string, args ...string) result {
	f.t.Helper()
	common := []string{"--endpoints", etcdtest.Endpoint(), "--prefix", f.prefix}
	if f.githubAPI != "" {
		common = append(common, "--github-api-url", f.githubAPI)
	}
	return runCLI(f.t, stdin, append(common, args...)...)
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	// An empty config file, so that a file on this machine is never read.
	emptyConfig := filepath.Join(t.TempDir(), "config.yml")
	require.NoError(t, os.WriteFile(emptyConfig, nil, 0o644))
	args = append([]string{"--config", emptyConfig}, args...)
	noEnv := func(string) string { return "" }
	code := Main(ctx, args, strings.NewReader(stdin), &out, &errOut, noEnv)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func (f *testFleet) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	f.t.Cleanup(cancel)
	return ctx
}

func TestConfigCommands(t *testing.T) {
	t.Parallel()
	f := newFleet(t)

	r := f.run("", "config", "set", "env", "staging")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "env = staging\n", r.stdout)

	r = f.run("", "config", "get", "env")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "staging\n", r.stdout)

	r = f.run("", "config", "get", "worker-timeout")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "60m\n", r.stdout, "an unset key shows its default")

	r = f.run("", "config", "set", "release-time", "* 9-16 * * 1-5", "0 20 * * 6")
	require.Equal(t, ExitOK, r.code, r.stderr)
	cfg, err := f.st.GetConfig(f.ctx())
	require.NoError(t, err)
	require.Equal(t, []string{"* 9-16 * * 1-5", "0 20 * * 6"}, cfg.ReleaseTime)

	r = f.run("", "config", "set", "worker-timeout", "90m", "100m")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "takes one value")

	r = f.run("", "-o", "json", "config", "list")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var entries []configEntry
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &entries))
	require.Len(t, entries, len(fleet.ConfigKeys()))
	byKey := map[string]configEntry{}
	for _, e := range entries {
		byKey[e.Key] = e
	}
	require.True(t, byKey["env"].Set)
	require.False(t, byKey["worker-timeout"].Set)
	require.Equal(t, "60m", byKey["worker-timeout"].Value)

	r = f.run("", "config", "unset", "env")
	require.Equal(t, ExitOK, r.code, r.stderr)
	cfg, err = f.st.GetConfig(f.ctx())
	require.NoError(t, err)
	require.Equal(t, fleet.EnvNone, cfg.Env)

	r = f.run("", "config", "sett", "env")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, `unknown command "sett"`)
}

func TestConfigSetRefusesBadValueAndWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFleet(t)

	r := f.run("", "config", "set", "worker-timeout", "abc")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "worker-timeout")
	require.Contains(t, r.stderr, `"abc"`)
	require.Contains(t, r.stderr, "e.g. 90m")

	r = f.run("", "config", "set", "no-such-key", "1")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "not a config key")

	r = f.run("", "config", "set", "notify-url", "")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "ferry config unset notify-url")

	values, err := f.st.ConfigValues(f.ctx())
	require.NoError(t, err)
	require.Empty(t, values)
}

func TestSecretsAreNeverPrinted(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	const token = "ghp_0123456789abcdefSECRET"

	// From standard input, so the token stays out of shell history.
	r := f.run(token+"\n", "config", "set", "github-token", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	r2 := f.run("", "config", "set", "webhook-secret", "hooksecretXYZZY")
	require.Equal(t, ExitOK, r2.code, r2.stderr)
	stored, err := f.st.GetConfig(f.ctx())
	require.NoError(t, err)
	require.Equal(t, token, stored.GitHubToken)

	outputs := []result{r, r2,
		f.run("", "config", "get", "github-token"),
		f.run("", "-o", "json", "config", "get", "github-token"),
		f.run("", "config", "list"),
		f.run("", "-o", "json", "config", "list"),
		f.run("", "config", "set", "github-token", "bad token "+token),
	}
	for _, o := range outputs {
		require.NotContains(t, o.stdout+o.stderr, "SECRET")
		require.NotContains(t, o.stdout+o.stderr, "XYZZY")
	}
	require.Contains(t, outputs[2].stdout, "********")
	require.Equal(t, ExitUsage, outputs[6].code)
}

func TestJoinLeaveServers(t *testing.T) {
	t.Parallel()
	f := newFleet(t)

	r := f.run("", "join", "boot-0", "--label", "rack=r1", "--hostname", "boot-0.example")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "boot-0 joined\n", r.stdout)
	r = f.run("", "join", "boot-0", "--label", "rack=r2")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "boot-0 updated\n", r.stdout)
	require.Equal(t, ExitOK, f.run("", "join", "boot-1").code)

	r = f.run("", "join", "Boot_0")
	require.Equal(t, ExitUsage, r.code)
	r = f.run("", "join", "boot-2", "--label", "norack")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "key=value")
	r = f.run("", "join")
	require.Equal(t, ExitUsage, r.code)

	// boot-1's worker is alive; boot-9's worker runs but never joined.
	ctx := f.ctx()
	lease, err := f.st.Client().Grant(ctx, 30)
	require.NoError(t, err)
	require.NoError(t, f.st.PutAlive(ctx, "boot-1", &fleet.Alive{Version: "2026.01.01-1", PID: 7, StartedAt: time.Now()}, lease.ID))
	require.NoError(t, f.st.PutAlive(ctx, "boot-9", &fleet.Alive{Version: "2026.01.01-1", PID: 8, StartedAt: time.Now()}, lease.ID))

	r = f.run("", "-o", "json", "servers")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var views []serverView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &views))
	require.Len(t, views, 3)
	require.Equal(t, "boot-0", views[0].ID)
	require.True(t, views[0].Registered)
	require.False(t, views[0].Alive)
	require.Equal(t, "r2", views[0].Server.Labels["rack"])
	require.True(t, views[1].Registered)
	require.True(t, views[1].Alive)
	require.Equal(t, "boot-9", views[2].ID)
	require.False(t, views[2].Registered)
	require.True(t, views[2].Alive)

	r = f.run("", "servers")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `boot-0\s+boot-0.example\s+yes\s+no\s+-\s+rack=r2`, r.stdout)

	r = f.run("", "leave", "boot-0")
	require.Equal(t, ExitOK, r.code, r.stderr)
	r = f.run("", "leave", "boot-0")
	require.Equal(t, ExitNotFound, r.code)
	require.Contains(t, r.stderr, "not registered")
}

func (f *testFleet) asLeader(fn func(*storage.Leader) error) { fleettest.AsLeader(f.t, f.st, fn) }

func (f *testFleet) putRequest(req *fleet.UpdateRequest) {
	f.t.Helper()
	f.asLeader(func(l *storage.Leader) error { return fleettest.PutRequest(f.ctx(), f.st, l, req) })
}

func (f *testFleet) finishRequest(req *fleet.UpdateRequest, h *fleet.HistoryRecord) {
	f.t.Helper()
	_, rev, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(f.t, err)
	f.asLeader(func(l *storage.Leader) error { return l.FinishRequest(f.ctx(), req, h, rev) })
}

func TestStatus(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := f.ctx()

	r := f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "Rollout:        none")

	started := time.Now().Add(-5 * time.Minute).UTC()
	f.putRequest(&fleet.UpdateRequest{Version: "2026.01.02-1", Servers: []string{"boot-0", "boot-1", "boot-2"}, Reason: fleet.ReasonUpdate, StartedAt: started})
	lease, err := f.st.Client().Grant(ctx, 60)
	require.NoError(t, err)
	for _, id := range []string{"boot-0", "boot-1", "boot-2"} {
		require.NoError(t, f.st.PutAlive(ctx, id, &fleet.Alive{Version: "2026.01.02-1", PID: 7, StartedAt: time.Now()}, lease.ID))
	}
	require.NoError(t, f.st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "2026.01.02-1", Step: 2, StepName: "images", Cond: fleet.CondRunning, UpdatedAt: time.Now()}))
	require.NoError(t, f.st.PutStatus(ctx, "boot-1", &fleet.UpdateStatus{Version: "2026.01.02-1", Step: 1, StepName: "debs", Cond: fleet.CondAborted, Message: "dpkg: error processing archive", UpdatedAt: time.Now()}))
	require.NoError(t, f.st.PutStatus(ctx, "boot-2", &fleet.UpdateStatus{Version: "2026.01.02-1", Step: 1, StepName: "debs", Phase: fleet.PhaseRepairing, Cond: fleet.CondRunning, Message: "dpkg has ferry half-configured 2026.01.02-1; repairing", UpdatedAt: time.Now()}))

	r = f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "ABORTED to 2026.01.02-1, update")
	require.Regexp(t, `boot-0\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+2 images\s+running`, r.stdout)
	require.Regexp(t, `boot-1\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+1 debs\s+aborted\s+\S+ ago\s+dpkg: error processing archive`, r.stdout)
	require.Regexp(t, `boot-2\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+1 debs\s+REPAIRING dpkg\s+\S+ ago\s+dpkg has ferry half-configured`, r.stdout)

	r = f.run("", "-o", "json", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var v fleetview.Fleet
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	require.Equal(t, fleetview.StateAborted, v.State)
	require.Len(t, v.Servers, 3)
	require.Equal(t, "dpkg: error processing archive", v.Servers[1].Status.Message)
	require.Equal(t, fleet.PhaseRepairing, v.Servers[2].Status.Phase)

	// Strings from etcd reach the terminal without their control characters.
	require.NoError(t, f.st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "2026.01.02-1", Step: 2, StepName: "images", Cond: fleet.CondRunning, Message: "evil \x1b[2J\x1b]0;owned\x07", UpdatedAt: time.Now()}))
	r = f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.NotContains(t, r.stdout, "\x1b")
	require.NotContains(t, r.stdout, "\x07")
	require.Contains(t, r.stdout, "evil ?[2J?]0;owned?")

	require.NoError(t, f.st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "2026.01.02-1", Step: 2, StepName: "images", Phase: fleet.PhaseRetrying, Cond: fleet.CondRunning, Message: "retrying: step 2 (images): download answered 502 Bad Gateway", UpdatedAt: time.Now()}))
	r = f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `boot-0\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+2 images\s+RETRYING\s+\S+ ago\s+retrying: step 2`, r.stdout)

	require.NoError(t, f.st.PutStatus(ctx, "boot-2", &fleet.UpdateStatus{Version: "2026.01.01-1", Cond: fleet.CondCompleted}))
	r = f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `boot-2\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+-\s+waiting`, r.stdout, "a status of an older rollout")
}

func TestRolloutState(t *testing.T) {
	t.Parallel()
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"a", "b"}}
	st := func(v string, c fleet.Cond) *fleet.UpdateStatus {
		return &fleet.UpdateStatus{Version: v, Cond: c}
	}
	cases := []struct {
		name     string
		req      *fleet.UpdateRequest
		statuses map[string]*fleet.UpdateStatus
		want     string
	}{
		{"no request", nil, nil, fleetview.StateNone},
		{"nobody reported", req, nil, fleetview.StateRunning},
		{"old version completed", req, map[string]*fleet.UpdateStatus{"a": st("1", fleet.CondCompleted), "b": st("2", fleet.CondCompleted)}, fleetview.StateRunning},
		{"all completed", req, map[string]*fleet.UpdateStatus{"a": st("2", fleet.CondCompleted), "b": st("2", fleet.CondCompleted)}, fleetview.StateCompleted},
		{"one aborted", req, map[string]*fleet.UpdateStatus{"a": st("2", fleet.CondAborted), "b": st("2", fleet.CondRunning)}, fleetview.StateAborted},
		{"old abort ignored", req, map[string]*fleet.UpdateStatus{"a": st("1", fleet.CondAborted)}, fleetview.StateRunning},
		{"stopped", &fleet.UpdateRequest{Version: "2", Servers: []string{"a"}, Stop: true}, nil, fleetview.StateStopped},
	}
	for _, c := range cases {
		got := fleetview.State(&fleet.Snapshot{Request: c.req, Statuses: c.statuses})
		require.Equal(t, c.want, got, c.name)
	}
}

func TestRecover(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := f.ctx()

	r := f.run("", "recover")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "nothing to recover")

	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"boot-0"}, Reason: fleet.ReasonUpdate}
	f.putRequest(req)
	require.NoError(t, f.st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "2", Cond: fleet.CondRunning}))
	require.NoError(t, f.st.PutContents(ctx, "boot", &fleet.ContentsStatus{Version: "2", Success: true}))

	r = f.run("", "recover", "--yes")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "not stopped")

	// Stopped as the updater stops it: finished, and recorded by it.
	req.Stop, req.StopReason, req.FinishedAt = true, "boot-0 aborted: boom", time.Now()
	f.putRequest(req)

	r = f.run("n\n", "recover")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stdout, "stopped because: boot-0 aborted: boom")
	require.Contains(t, r.stderr, "nothing was changed")
	r = f.run("", "recover")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "--yes")
	_, _, err := fleettest.GetRequest(ctx, f.st)
	require.NoError(t, err, "a declined recover changes nothing")

	r = f.run("y\n", "recover")
	require.Equal(t, ExitOK, r.code, r.stderr)
	_, _, err = fleettest.GetRequest(ctx, f.st)
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, err = f.st.GetContents(ctx, "boot")
	require.ErrorIs(t, err, storage.ErrNotFound)
	statuses, err := fleettest.GetStatuses(ctx, f.st)
	require.NoError(t, err)
	require.Empty(t, statuses)

	hist, err := f.st.GetHistory(ctx, 0)
	require.NoError(t, err)
	require.Empty(t, hist, "a stopped rollout is the updater's to record")

	// A server aborted, and the updater has not stopped the rollout yet:
	// recover records the attempt in the same transaction.
	aborted := &fleet.UpdateRequest{Version: "3", Servers: []string{"boot-0"}, Reason: fleet.ReasonUpdate, StartedAt: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	f.putRequest(aborted)
	// Its abort report carried its step records, as a worker's does.
	records := []fleet.StepRecord{{Step: 1, Name: "debs", Start: aborted.StartedAt, End: aborted.StartedAt.Add(time.Minute), Result: fleet.StepFailed, Message: "dpkg failed"}}
	require.NoError(t, f.st.PutStatusAndRecords(ctx, "boot-0", &fleet.UpdateStatus{Version: "3", Rollout: aborted.StartedAt, Cond: fleet.CondAborted, Message: "dpkg failed", UpdatedAt: aborted.StartedAt.Add(time.Minute)}, records))
	r = f.run("", "recover", "--yes")
	require.Equal(t, ExitOK, r.code, r.stderr)
	hist, err = f.st.GetHistory(ctx, 0)
	require.NoError(t, err)
	require.Len(t, hist, 1)
	require.Equal(t, fleet.ResultAborted, hist[0].Result)
	require.True(t, hist[0].StartedAt.Equal(aborted.StartedAt))
	require.Contains(t, hist[0].StopReason, "boot-0 aborted: dpkg failed")
	require.Equal(t, 60.0, hist[0].Durations["boot-0"])
	require.Len(t, hist[0].Timeline["boot-0"], 1, "the record keeps the server's step records")
	require.Equal(t, fleet.StepFailed, hist[0].Timeline["boot-0"][0].Result)
	left, err := f.st.Timeline(ctx, aborted.StartedAt)
	require.NoError(t, err)
	require.Empty(t, left, "recover deletes the step records it recorded")

	// --force clears a running rollout, and records it.
	f.putRequest(&fleet.UpdateRequest{Version: "4", Servers: []string{"boot-0"}, StartedAt: aborted.StartedAt.Add(time.Hour)})
	r = f.run("", "recover", "--yes", "--force")
	require.Equal(t, ExitOK, r.code, r.stderr)
	_, _, err = fleettest.GetRequest(ctx, f.st)
	require.ErrorIs(t, err, storage.ErrNotFound)
	hist, err = f.st.GetHistory(ctx, 0)
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, fleet.ResultCleared, hist[0].Result)
	require.Equal(t, "4", hist[0].Version)
}

func TestUnreachableEtcdFailsWithinTimeout(t *testing.T) {
	t.Parallel()
	done := make(chan result, 1)
	go func() {
		// Port 1 on loopback: nothing listens there.
		done <- runCLI(t, "", "--endpoints", "http://127.0.0.1:1", "--command-timeout", "300ms", "status")
	}()
	select {
	case r := <-done:
		require.Equal(t, ExitUnreachable, r.code)
		require.Contains(t, r.stderr, "etcd at http://127.0.0.1:1 cannot be reached", "the probe that goes out with the command names it")
		require.Contains(t, r.stderr, "connection refused: nothing listens there")
	case <-time.After(20 * time.Second):
		t.Fatal("ferry status hung on an unreachable etcd")
	}
}

// TestRefusedEtcdFailsWithItsCause: a refused connection ends a command
// with its cause soon after it starts, long before a generous
// --command-timeout.
func TestRefusedEtcdFailsWithItsCause(t *testing.T) {
	t.Parallel()
	r := requireEndsSoon(t, "--endpoints", "http://127.0.0.1:1", "--command-timeout", "10m", "config", "set", "env", "dev")
	require.Equal(t, ExitUnreachable, r.code)
	require.Contains(t, r.stderr, "etcd at http://127.0.0.1:1 cannot be reached", "endpoints written as in every other message")
	require.Contains(t, r.stderr, "connection refused: nothing listens there")
}

// TestNotEtcdFailsWithItsCause: an endpoint where another web server
// answers ends a command within seconds, saying so, rather than at a
// generous --command-timeout.
func TestNotEtcdFailsWithItsCause(t *testing.T) {
	t.Parallel()
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	r := requireEndsSoon(t, "--endpoints", web.URL, "--command-timeout", "10m", "status")
	require.Equal(t, ExitUnreachable, r.code)
	require.Contains(t, r.stderr, "something answers there, but not etcd")
}

// TestFrozenEtcdFailsWithinTheDialTimeout: an endpoint that accepts
// connections and never answers ends a command within about the dial
// timeout, named as such.
func TestFrozenEtcdFailsWithinTheDialTimeout(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	r := requireEndsSoon(t, "--endpoints", "http://"+l.Addr().String(), "--command-timeout", "10m", "status")
	require.Equal(t, ExitUnreachable, r.code)
	require.Contains(t, r.stderr, "does not answer")
}

// requireEndsSoon runs the CLI, whose --command-timeout is far off, and
// fails the test when the command is still waiting after a minute.
func requireEndsSoon(t *testing.T, args ...string) result {
	t.Helper()
	done := make(chan result, 1)
	go func() { done <- runCLI(t, "", args...) }()
	select {
	case r := <-done:
		return r
	case <-time.After(time.Minute):
		t.Fatalf("ferry %s waited for --command-timeout", strings.Join(args, " "))
		return result{}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		{"no-such-command"},
		{"status", "--no-such-flag"},
		{"--output", "yaml", "status"},
		{"--command-timeout", "0s", "status"},
		{"status", "extra-arg"},
		{"--prefix", "relative", "status"},
	}
	for _, args := range cases {
		r := runCLI(t, "", args...)
		require.Equal(t, ExitUsage, r.code, "%v: %s", args, r.stderr)
		require.NotEmpty(t, r.stderr)
	}

	missing := filepath.Join(t.TempDir(), "missing.yml")
	ctx := context.Background()
	var out, errOut bytes.Buffer
	code := Main(ctx, []string{"--config", missing, "status"}, strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	require.Equal(t, ExitUsage, code)
	require.Contains(t, errOut.String(), "does not exist")

	r := runCLI(t, "", "version")
	require.Equal(t, ExitOK, r.code)
	require.Equal(t, "dev\n", r.stdout)
}

func TestStatusUntilFinished(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "status", "--until-finished")
	require.Equal(t, ExitNotFound, r.code, "no rollout: nothing to wait for")
	require.Contains(t, r.stderr, "no rollout to wait for")

	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"a"}, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	f.putRequest(req)

	done := make(chan result, 1)
	go func() { done <- f.run("", "status", "--until-finished") }()
	require.NoError(t, f.st.PutStatus(f.ctx(), "a", &fleet.UpdateStatus{Version: "2", Cond: fleet.CondCompleted}))
	req.FinishedAt = time.Now().UTC()
	f.finishRequest(req, &fleet.HistoryRecord{Version: "2", StartedAt: req.StartedAt, FinishedAt: req.FinishedAt})
	select {
	case r := <-done:
		require.Equal(t, ExitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, "COMPLETED to 2")
	case <-time.After(20 * time.Second):
		t.Fatal("--until-finished did not return when the rollout finished")
	}
	req2 := &fleet.UpdateRequest{Version: "3", Servers: []string{"a"}, StartedAt: time.Now().UTC(), Stop: true, StopReason: "a aborted: x", FinishedAt: time.Now().UTC()}
	f.putRequest(req2)
	r = f.run("", "status", "--until-finished")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "a aborted: x")

	// --for waits past the finished rollout to 3 for the one to 4, which
	// starts and completes later.
	later := make(chan result, 1)
	go func() { later <- f.run("", "status", "--until-finished", "--for", "4") }()
	req4 := &fleet.UpdateRequest{Version: "4", Servers: []string{"a"}, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	f.putRequest(req4)
	require.NoError(t, f.st.PutStatus(f.ctx(), "a", &fleet.UpdateStatus{Version: "4", Cond: fleet.CondCompleted}))
	req4.FinishedAt = time.Now().UTC()
	f.finishRequest(req4, &fleet.HistoryRecord{Version: "4", StartedAt: req4.StartedAt, FinishedAt: req4.FinishedAt})
	r = <-later
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "COMPLETED to 4")
}

// TestHelpShowsTheAdminsFlags: `ferry --help` lists the settings the admin
// CLI uses, not those only the daemons read, and still takes those, so
// that a server's own config file and FERRY_* variables work with it.
func TestHelpShowsTheAdminsFlags(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", "--help")
	require.Equal(t, ExitOK, r.code, r.stderr)
	for _, shown := range []string{"--endpoints", "--prefix", "--tls-ca-file", "--github-api-url", "--command-timeout", "--output"} {
		require.Contains(t, r.stdout, shown)
	}
	for _, hidden := range []string{"--install-command", "--containerd-address", "--image-runtime", "--boot-content-dir", "--restart-command", "--data-dir"} {
		require.NotContains(t, r.stdout, hidden)
	}
	r = runCLI(t, "", "--install-command", "dpkg,-i", "version")
	require.Equal(t, ExitOK, r.code, r.stderr)
}

// TestUnsetRetiredKey: a value an older version left under a key that left
// etcd can be removed, and the command says where the setting lives now.
func TestUnsetRetiredKey(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	_, err := f.st.Client().Put(f.ctx(), f.prefix+"config/signing-keys", "RWQ-stale")
	require.NoError(t, err)
	r := f.run("", "config", "unset", "signing-keys")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "signing-keys removed from etcd")
	require.Contains(t, r.stdout, "/etc/ferry/trusted-keys")
	resp, err := f.st.Client().Get(f.ctx(), f.prefix+"config/signing-keys")
	require.NoError(t, err)
	require.Zero(t, resp.Count)

	r = f.run("", "config", "unset", "no-such-key")
	require.Equal(t, ExitUsage, r.code)
	r = f.run("", "config", "set", "--help")
	require.NotContains(t, r.stdout, "signing-keys")
}

// TestPipedWatchWritesChanges: away from a terminal, `ferry status
// --watch` writes a frame when the fleet changes, not every second.
func TestPipedWatchWritesChanges(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	var out, errOut bytes.Buffer
	emptyConfig := filepath.Join(t.TempDir(), "config.yml")
	require.NoError(t, os.WriteFile(emptyConfig, nil, 0o644))
	code := Main(ctx, []string{"--config", emptyConfig, "--endpoints", etcdtest.Endpoint(), "--prefix", f.prefix, "status", "--watch"},
		strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	require.Equal(t, ExitOK, code, errOut.String())
	require.Equal(t, 1, strings.Count(out.String(), "--- "), "one frame for a fleet that did not change in 3.5s: %s", out.String())
}

// TestStatusShowsInstalledVersion: `ferry status` shows the version each
// server has, as dpkg says, apart from the rollout's target; a server whose
// worker never came up is not-alive, not waiting; one that stopped because
// another failed is told apart from the one that failed.
func TestStatusShowsInstalledVersion(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := f.ctx()
	const old, target = "2026.12.04-1", "2026.12.05-1"
	started := time.Now().Add(-time.Minute).UTC()
	f.putRequest(&fleet.UpdateRequest{Version: target, Servers: []string{"boot-0", "boot-1", "boot-2", "boot-3"}, Reason: fleet.ReasonUpdate,
		StartedAt: started, Stop: true, StopReason: "boot-2 aborted: self-upgrade failed"})
	lease, err := f.st.Client().Grant(ctx, 60)
	require.NoError(t, err)
	alive := map[string]*fleet.Alive{
		"boot-0": {Version: target, Installed: target},
		"boot-1": {Version: target, Installed: target + " half-configured"},
		"boot-2": {Version: old, Installed: old}, // its self-upgrade failed
	}
	for id, a := range alive {
		require.NoError(t, f.st.PutAlive(ctx, id, a, lease.ID))
	}
	report := func(id string, step int, phase fleet.Phase, c fleet.Cond, msg string) {
		require.NoError(t, f.st.PutStatus(ctx, id, &fleet.UpdateStatus{Version: target, Rollout: started, Step: step, StepName: "debs", Phase: phase, Cond: c, Message: msg, UpdatedAt: time.Now()}))
	}
	report("boot-0", 1, fleet.PhaseWaiting, fleet.CondAborted, "stopped before this step: boot-2 aborted: self-upgrade failed")
	report("boot-1", 1, fleet.PhaseRepairing, fleet.CondRunning, "repairing")
	require.NoError(t, f.st.PutStatus(ctx, "boot-2", &fleet.UpdateStatus{Version: target, Rollout: started, StepName: "self-upgrade", Phase: fleet.PhaseUpgrading, Cond: fleet.CondAborted, Message: "self-upgrade failed", UpdatedAt: time.Now()}))

	r := f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `(?m)^SERVER\s+ALIVE\s+VERSION\s+TARGET\s+STEP\s+STATE`, r.stdout)
	require.Regexp(t, `boot-0\s+yes\s+`+target+`\s+`+target+`\s+1 debs\s+stopped \(the rollout stopped\)`, r.stdout)
	require.Regexp(t, `boot-1\s+yes\s+`+target+` half-configured\s+`+target+`\s+1 debs\s+REPAIRING dpkg`, r.stdout)
	require.Regexp(t, `boot-2\s+yes\s+`+old+`\s+`+target+`\s+self-upgrade\s+aborted\s+\S+ ago\s+self-upgrade failed`, r.stdout)
	require.Regexp(t, `boot-3\s+no\s+-\s+`+target+`\s+-\s+not-alive`, r.stdout, "never alive: not waiting")

	r = f.run("", "-o", "json", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var v fleetview.Fleet
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	byID := map[string]fleetview.Server{}
	for _, s := range v.Servers {
		byID[s.ID] = s
	}
	require.Equal(t, old, byID["boot-2"].Installed)
	require.Equal(t, target, byID["boot-2"].Target)
	require.Equal(t, fleet.StateAborted, byID["boot-2"].State)
	require.Equal(t, fleet.StateStopped, byID["boot-0"].State)
	require.Equal(t, fleet.StateNotAlive, byID["boot-3"].State)
	require.Empty(t, byID["boot-3"].Installed)
}
