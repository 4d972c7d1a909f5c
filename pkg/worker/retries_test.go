package worker

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// failingTimes is a step body that fails on the server's first n runs and
// succeeds after, counting in dir.
func failingTimes(dir string, n int) string {
	return fmt.Sprintf(`c=%[1]s/count-$FERRY_SERVER; i=$(( $(cat $c 2>/dev/null || echo 0) + 1 )); echo $i > $c
if [ $i -le %[2]d ]; then echo "E: attempt $i: the service did not come up" >&2; exit 3; fi`, dir, n)
}

// TestStepRetries: a step with retries tries a failed action again on that
// server, with backoff, shows each failed attempt, records every attempt
// in the server's timeline, and the rollout completes with no stop.
func TestStepRetries(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j, "true", failingTimes(f.dir, 2), "true")
	plan.Steps[1].Retries, plan.Steps[1].RetryBackoff = 3, artifacts.ParseDuration("50ms")
	o := ops(f)
	f.request(v1, "boot-0")
	f.startUpdater()
	w := f.start("boot-0", v1, plan, o)

	st := f.waitStatus("boot-0", func(s *fleet.UpdateStatus) bool { return s.Phase == fleet.PhaseRetrying })
	require.Contains(t, st.Message, "attempt 1 of 4 failed")
	require.Contains(t, st.Message, "the service did not come up")
	done := f.waitStatus("boot-0", cond(fleet.CondCompleted))
	req, _, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(t, err)
	require.False(t, req.Stop, "a step that succeeds on a retry never stops the fleet")

	// The history record keeps the timeline, which the status reports
	// carried record by record.
	var h []*fleet.HistoryRecord
	require.Eventually(t, func() bool {
		h, err = f.st.GetHistory(f.ctx(), 1)
		return err == nil && len(h) == 1
	}, 20*time.Second, 20*time.Millisecond, "the rollout's history record")
	require.Equal(t, done.Rollout, h[0].StartedAt)
	require.Len(t, h[0].Timeline["boot-0"], 3)
	rec := h[0].Timeline["boot-0"][1]
	require.Equal(t, 2, rec.Step)
	require.Equal(t, "step2", rec.Name)
	require.Equal(t, fleet.StepOK, rec.Result)
	require.Len(t, rec.Attempts, 3, "two failed attempts and the one that worked")
	require.Contains(t, rec.Attempts[0].Error, "attempt 1: the service did not come up")
	require.Contains(t, rec.Attempts[1].Error, "attempt 2")
	require.Empty(t, rec.Attempts[2].Error)
	require.False(t, rec.Start.After(rec.Attempts[0].Start))
	require.False(t, rec.End.Before(rec.Attempts[2].End))
	require.GreaterOrEqual(t, rec.Attempts[1].Start.Sub(rec.Attempts[0].End).Milliseconds(), int64(50), "backoff before the second attempt")
	require.GreaterOrEqual(t, rec.Attempts[2].Start.Sub(rec.Attempts[1].End).Milliseconds(), int64(100), "doubled before the third")

	m := httptest.NewRecorder()
	w.w.Handler().ServeHTTP(m, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, m.Body.String(), `ferry_worker_step_retries_total{step="step2"} 2`)
	require.Contains(t, m.Body.String(), `ferry_worker_step_retries_total{step="step1"} 0`)

	// Folded into the history record, the step records left etcd.
	left, err := f.st.Timeline(f.ctx(), done.Rollout)
	require.NoError(t, err)
	require.Empty(t, left)
}

// TestStepRetriesRunOut: when every attempt fails, the step fails there
// and says how many attempts it made; a step's timeout ends an attempt.
func TestStepRetriesRunOut(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		step func(*artifacts.Step)
		body string
		want []string
	}{
		{"retries", func(s *artifacts.Step) { s.Retries, s.RetryBackoff = 1, artifacts.ParseDuration("10ms") }, failingTimes("DIR", 5), []string{"all 2 attempts failed", "attempt 2: the service did not come up"}},
		{"timeout", func(s *artifacts.Step) { s.Timeout = artifacts.ParseDuration("300ms") }, "sleep 20", []string{"timed out after 300ms (the step's timeout)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t)
			j := journal(filepath.Join(f.dir, "journal"))
			plan := lockstepPlan(j, strings.ReplaceAll(c.body, "DIR", f.dir))
			c.step(&plan.Steps[0])
			f.request(v1, "boot-0")
			f.start("boot-0", v1, plan, ops(f))
			st := f.waitStatus("boot-0", cond(fleet.CondAborted))
			for _, w := range c.want {
				require.Contains(t, st.Message, w)
			}
			recs := f.stepRecords(st, "boot-0")
			require.Len(t, recs, 1)
			require.Equal(t, fleet.StepFailed, recs[0].Result)
			require.Len(t, recs[0].Attempts, plan.Steps[0].Retries+1)
			for _, a := range recs[0].Attempts {
				require.NotEmpty(t, a.Error)
			}
		})
	}
}

// TestHealthGate: a step's health checks run after its actions and must
// stay green for the soak; a check that fails, at once or during the
// soak, fails the attempt, and the step's retries try again.
func TestHealthGate(t *testing.T) {
	t.Parallel()
	var answers atomic.Int32
	// 200, then 500 once (during the first soak), then 200 for good.
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if answers.Add(1) == 3 {
			http.Error(w, "coredns: no upstream", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(health.Close)
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	plan := lockstepPlan(j, "true")
	s := &plan.Steps[0]
	s.Retries, s.RetryBackoff, s.Soak = 1, artifacts.ParseDuration("10ms"), artifacts.ParseDuration("600ms")
	s.Health = []artifacts.HealthCheck{{HTTP: &artifacts.HTTPCheck{URL: health.URL + "/healthz"}}, {Command: &artifacts.RunAction{Command: "true"}}}
	f.request(v1, "boot-0")
	f.start("boot-0", v1, plan, ops(f))
	done := f.waitStatus("boot-0", cond(fleet.CondCompleted))
	rec := f.stepRecords(done, "boot-0")[0]
	require.Len(t, rec.Attempts, 2)
	require.Contains(t, rec.Attempts[0].Error, "health check 1 (GET "+health.URL+"/healthz) failed after")
	require.Contains(t, rec.Attempts[0].Error, "of 600ms soak: answered 503 Service Unavailable")
	require.Empty(t, rec.Attempts[1].Error)
	require.GreaterOrEqual(t, rec.Attempts[1].End.Sub(rec.Attempts[1].Start), 600*time.Millisecond, "green for the whole soak")

	// A gate that never goes green fails the step.
	g := newFleet(t)
	bad := lockstepPlan(journal(filepath.Join(g.dir, "journal")), "true")
	bad.Steps[0].Health = []artifacts.HealthCheck{{Command: &artifacts.RunAction{Command: "sh", Args: []string{"-c", "echo 'dns: SERVFAIL' >&2; exit 1"}}}}
	g.request(v1, "boot-0")
	g.start("boot-0", v1, bad, ops(g))
	st := g.waitStatus("boot-0", cond(fleet.CondAborted))
	require.Contains(t, st.Message, "health check 1 (sh -c")
	require.Contains(t, st.Message, "dns: SERVFAIL")
}

// TestWorkerAnnouncesItsLabels: the labels of the bootstrap config reach
// the server's record when the worker starts, next to those set by hand.
func TestWorkerAnnouncesItsLabels(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	_, err := f.st.JoinServer(f.ctx(), "boot-0", &fleet.ServerInfo{Labels: map[string]string{"role": "tftp"}})
	require.NoError(t, err)
	st, err := storage.New(etcdtest.Client(t), f.prefix)
	require.NoError(t, err)
	w := New(Options{Storage: st, ID: "boot-0", Version: v1, Operator: ops(f), DataDir: filepath.Join(f.dir, "boot-0"), Logger: quiet, LeaseTTL: 2 * time.Second, Labels: map[string]string{"rack": "r9"}})
	ctx, cancel := context.WithCancel(f.ctx())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		info, err := f.st.GetServer(f.ctx(), "boot-0")
		return err == nil && info.Labels["rack"] == "r9" && info.Labels["role"] == "tftp"
	}, 20*time.Second, 20*time.Millisecond, "the worker announces rack=r9 and keeps role=tftp")
}
