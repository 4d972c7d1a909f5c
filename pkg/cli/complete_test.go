package cli

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// TestCompletion: the shell completion offers config keys, the fleet's
// server ids and the versions it ran, never file names where a file makes
// no sense.
func TestCompletion(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	for _, id := range []string{"boot-1", "boot-0"} {
		require.Equal(t, ExitOK, f.run("", "join", id).code)
	}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error {
		return l.PutReleaseInfo(f.ctx(), &fleet.ReleaseInfo{Env: fleet.EnvProd, Version: "2026.01.03-1", Tag: "release-2026.01.03-1", PublishedAt: time.Now()})
	})

	complete := func(args ...string) []string {
		t.Helper()
		r := f.run("", append([]string{"__complete"}, args...)...)
		require.Equal(t, ExitOK, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Equal(t, ":4", lines[len(lines)-1], "no file names: %s", r.stdout)
		return lines[:len(lines)-1]
	}
	keys := complete("config", "set", "")
	require.Contains(t, keys, "worker-retry-budget")
	require.Contains(t, keys, "env")
	require.Equal(t, keys, complete("config", "get", ""))
	require.Empty(t, complete("config", "get", "env", ""), "one key")
	require.Equal(t, []string{"boot-0", "boot-1"}, complete("leave", ""))
	require.Equal(t, []string{"2026.01.03-1"}, complete("release", "pin", ""))
	require.Empty(t, complete("status", ""))
	require.Equal(t, []string{"table", "json"}, complete("status", "-o", ""), "formats, not file names")
}

// TestStatusShowsLeaderAndLastCheck: `ferry status` names the updater that
// leads and how its last release check went, and a server that waits at a
// barrier shows as waiting, not running.
func TestStatusShowsLeaderAndLastCheck(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "Leader:         -")
	require.Contains(t, r.stdout, "Last check:     none yet")

	req := &fleet.UpdateRequest{Version: "2026.01.02-1", Servers: []string{"boot-0", "boot-1"}, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error {
		if err := l.StartRequest(f.ctx(), req); err != nil {
			return err
		}
		if err := l.PutCheckInfo(f.ctx(), &fleet.CheckInfo{At: time.Now(), Result: "error", Error: "dial tcp: lookup api.github.com: no such host", Leader: "test"}); err != nil {
			return err
		}
		lease, err := f.st.Client().Grant(f.ctx(), 60)
		require.NoError(t, err)
		for _, id := range req.Servers {
			require.NoError(t, f.st.PutAlive(f.ctx(), id, &fleet.Alive{Version: req.Version}, lease.ID))
		}
		require.NoError(t, f.st.PutStatus(f.ctx(), "boot-0", &fleet.UpdateStatus{Version: req.Version, Rollout: req.StartedAt, Step: 2, StepName: "images", Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, UpdatedAt: time.Now()}))
		require.NoError(t, f.st.PutStatus(f.ctx(), "boot-1", &fleet.UpdateStatus{Version: req.Version, Rollout: req.StartedAt, Step: 1, StepName: "debs", Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, UpdatedAt: time.Now()}))
		r = f.run("", "status")
		return nil
	})
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "Leader:         test")
	require.Regexp(t, `Last check:     \S+ \(\S+ ago, by test\): error: dial tcp: lookup api.github.com: no such host`, r.stdout)
	require.Regexp(t, `boot-0\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+2 images\s+waiting`, r.stdout, "boot-1 has not finished step 1")
	require.Regexp(t, `boot-1\s+yes\s+2026.01.02-1\s+2026.01.02-1\s+1 debs\s+running`, r.stdout, "barrier 1 passed: every server reached it")
}

// signalWriter closes seen the first time what it is written contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// TestStatusWatchRidesOutAnEtcdStall: `ferry status --watch` says etcd is
// unreachable and keeps watching, instead of exiting, until interrupted.
func TestStatusWatchRidesOutAnEtcdStall(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &signalWriter{want: "still watching", seen: make(chan struct{})}
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, []string{"--config", os.DevNull, "--endpoints", "http://127.0.0.1:1", "--command-timeout", "200ms", "status", "--watch"},
			strings.NewReader(""), io.Discard, stderr, func(string) string { return "" })
	}()
	select {
	case <-stderr.seen:
	case c := <-code:
		t.Fatalf("the watch ended with %d instead of riding the stall out", c)
	case <-time.After(20 * time.Second):
		t.Fatal("the watch said nothing about etcd")
	}
	select {
	case c := <-code:
		t.Fatalf("the watch ended with %d while etcd was away", c)
	default:
	}
	cancel()
	require.Equal(t, ExitOK, <-code, "an interrupted watch ends cleanly")
}

// TestStatusIgnoresAnEarlierRolloutsReport: a late "completed" from an
// earlier rollout at the same version (a reconfigure) does not make this
// one look completed.
func TestStatusIgnoresAnEarlierRolloutsReport(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	req := &fleet.UpdateRequest{Version: "2026.01.02-1", Servers: []string{"boot-0"}, Reason: fleet.ReasonReconfigure, StartedAt: time.Now().UTC()}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error { return l.StartRequest(f.ctx(), req) })
	require.NoError(t, f.st.PutStatus(f.ctx(), "boot-0", &fleet.UpdateStatus{Version: req.Version, Rollout: req.StartedAt.Add(-time.Hour), Step: 4, Cond: fleet.CondCompleted, UpdatedAt: time.Now()}))
	r := f.run("", "status")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "RUNNING to 2026.01.02-1, reconfigure")
	require.NotContains(t, r.stdout, "COMPLETED")
}
