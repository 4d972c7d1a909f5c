package statuspage

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func newStorage(t *testing.T, endpoint string) *storage.Storage {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	st, err := storage.New(cli, etcdtest.Prefix(t))
	require.NoError(t, err)
	return st
}

// events reads the page's server-sent events into a channel of views.
func events(t *testing.T, ctx context.Context, url string) <-chan *Page {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/events", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	out := make(chan *Page, 100)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 4<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "status":
				p := new(Page)
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), p); err != nil {
					t.Errorf("a status event that is not a view: %v: %s", err, line)
					return
				}
				select {
				case out <- p:
				case <-ctx.Done():
					return
				}
			case line == "":
				event = ""
			}
		}
	}()
	return out
}

// waitFor returns the first view that ok accepts, failing after a bound.
func waitFor(t *testing.T, ch <-chan *Page, what string, ok func(*Page) bool) *Page {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case p, open := <-ch:
			require.True(t, open, "the event stream ended while waiting for %s", what)
			if ok(p) {
				return p
			}
		case <-timeout:
			t.Fatalf("no view showed %s within 20s", what)
		}
	}
}

func server(p *Page, id string) map[string]any {
	for _, s := range p.Fleet.Servers {
		if s.ID == id {
			b, _ := json.Marshal(s)
			var m map[string]any
			json.Unmarshal(b, &m)
			return m
		}
	}
	return nil
}

// TestPageFollowsTheFleet: a browser connected to /api/events sees the
// fleet, then a step advance without asking again, never a secret, and
// "etcd unreachable" with the last view when etcd goes away.
func TestPageFollowsTheFleet(t *testing.T) {
	t.Parallel()
	ctx := fleettest.Ctx(t)
	etcd, err := etcdtest.Start(t.TempDir())
	require.NoError(t, err)
	var closeOnce sync.Once
	closeEtcd := func() { closeOnce.Do(etcd.Close) }
	t.Cleanup(closeEtcd)
	st := newStorage(t, etcd.Endpoint)
	const token = "ghp_verysecrettokenvalue"
	fleettest.SetConfig(t, st, "github-token", token, "env", "staging", "release-time", "0 9 * * 1")
	for _, id := range []string{"boot-0", "boot-1"} {
		_, err := st.JoinServer(ctx, id, &fleet.ServerInfo{Labels: map[string]string{"rack": "r1"}})
		require.NoError(t, err)
	}
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"boot-0", "boot-1"}, StartedAt: time.Now().UTC().Truncate(time.Second), Reason: "update"}
	fleettest.AsLeader(t, st, func(l *storage.Leader) error { return l.StartRequest(ctx, req) })
	lease, err := st.Client().Grant(ctx, 60)
	require.NoError(t, err)
	for _, id := range req.Servers {
		require.NoError(t, st.PutAlive(ctx, id, &fleet.Alive{Version: "1", StartedAt: time.Now()}, lease.ID))
		require.NoError(t, st.PutStatus(ctx, id, &fleet.UpdateStatus{Version: "2", Step: 1, StepName: "debs", Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, UpdatedAt: time.Now(), Rollout: req.StartedAt}))
	}

	page := New(Options{Store: st, ServedBy: "boot-0", Refresh: 500 * time.Millisecond, ReadTimeout: time.Second})
	srv := httptest.NewServer(page.Handler())
	t.Cleanup(srv.Close)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := events(t, sctx, srv.URL)

	first := waitFor(t, ch, "both servers", func(p *Page) bool { return p.Fleet != nil && len(p.Fleet.Servers) == 2 })
	require.True(t, first.Etcd.Reachable)
	require.Equal(t, "boot-0", first.ServedBy)
	require.Equal(t, "running", first.Fleet.State)
	require.Equal(t, map[string]any{"rack": "r1"}, server(first, "boot-1")["labels"])
	require.Equal(t, 1, first.Fleet.Passed, "both reached step 1's barrier")
	require.Equal(t, []string{"0 9 * * 1"}, first.Window.Lines)
	raw, err := json.Marshal(first)
	require.NoError(t, err)
	require.NotContains(t, string(raw), token, "a secret in the view")
	require.Contains(t, string(raw), `"key":"github-token","value":"********"`)

	// boot-0 finishes step 1 and waits at step 2: the view follows.
	require.NoError(t, st.PutStatus(ctx, "boot-0", &fleet.UpdateStatus{Version: "2", Step: 2, StepName: "services", Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, UpdatedAt: time.Now(), Rollout: req.StartedAt}))
	adv := waitFor(t, ch, "boot-0 at step 2", func(p *Page) bool {
		st, _ := server(p, "boot-0")["status"].(map[string]any)
		return st != nil && st["step_name"] == "services"
	})
	require.Equal(t, "waiting", server(adv, "boot-0")["state"])
	require.Len(t, adv.Fleet.Steps, 2)
	require.Equal(t, 1, adv.Fleet.Steps[1].Arrived, "one server at step 2's barrier")
	require.Equal(t, 1, adv.Fleet.Steps[0].Done)

	// etcd goes away: the page keeps the last view and says why it is old.
	began := time.Now()
	closeEtcd()
	t.Logf("etcd closed in %s", time.Since(began))
	down := waitFor(t, ch, "etcd unreachable", func(p *Page) bool { return !p.Etcd.Reachable })
	t.Logf("the page said etcd unreachable %s after the close began: %s", time.Since(began), down.Etcd.Error)
	require.NotEmpty(t, down.Etcd.Error)
	require.False(t, down.Etcd.Since.IsZero())
	require.NotNil(t, down.Fleet, "the last view is still shown")
	require.Len(t, down.Fleet.Servers, 2)
	require.Equal(t, adv.Etcd.ReadAt.Unix(), down.Etcd.ReadAt.Unix(), "the view says when it was read")

	resp, err := http.Get(srv.URL + "/api/status")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "/api/status while etcd is away")
}

// TestReaderRunsOnlyWhileSomeoneLooks: an updater nobody looks at costs
// etcd nothing; the reader starts with the first browser and ends with the
// last.
func TestReaderRunsOnlyWhileSomeoneLooks(t *testing.T) {
	t.Parallel()
	st := newStorage(t, etcdtest.Endpoint())
	page := New(Options{Store: st, ServedBy: "boot-0"})
	srv := httptest.NewServer(page.Handler())
	t.Cleanup(srv.Close)
	running := func() bool {
		page.mu.Lock()
		defer page.mu.Unlock()
		return page.stop != nil
	}
	require.False(t, running())
	ctx, cancel := context.WithCancel(fleettest.Ctx(t))
	ch := events(t, ctx, srv.URL)
	waitFor(t, ch, "a first view", func(p *Page) bool { return p.Etcd.Reachable })
	require.True(t, running())
	cancel()
	require.Eventually(t, func() bool { return !running() }, 10*time.Second, 20*time.Millisecond, "the reader stops when the last browser leaves")
}

func TestPageAndAssets(t *testing.T) {
	t.Parallel()
	st := newStorage(t, etcdtest.Endpoint())
	srv := httptest.NewServer(New(Options{Store: st}).Handler())
	t.Cleanup(srv.Close)
	get := func(method, path string) (*http.Response, string) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	resp, body := get("GET", "/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `src="assets/app.js"`, "relative URLs, so that a reverse proxy may serve the page under any path")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	for _, path := range []string{"/assets/app.js", "/assets/style.css"} {
		resp, body := get("GET", path)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.NotEmpty(t, body, path)
	}
	resp, body = get("GET", "/api/status")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var p Page
	require.NoError(t, json.Unmarshal([]byte(body), &p))
	require.True(t, p.Etcd.Reachable)
	require.Equal(t, "none", p.Fleet.State)

	resp, _ = get("POST", "/")
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "the page is read-only")
	resp, _ = get("GET", "/nothing-here")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = get("GET", "/assets/")
	require.NotEqual(t, http.StatusOK, resp.StatusCode, "no directory listing")
}
