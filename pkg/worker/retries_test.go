package worker

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/artifacts"
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
	plan.Steps[1].Retries, plan.Steps[1].RetryBackoff = 3, "50ms"
	o := ops(f)
	f.request(v1, "boot-0")
	f.startUpdater()
	w := f.start("boot-0", v1, plan, o)

	st := f.waitStatus("boot-0", func(s *storage.UpdateStatus) bool { return s.Phase == storage.PhaseRetrying })
	require.Contains(t, st.Message, "attempt 1 of 4 failed")
	require.Contains(t, st.Message, "the service did not come up")
	done := f.waitStatus("boot-0", cond(storage.CondCompleted))
	req, _, err := f.st.GetRequest(f.ctx())
	require.NoError(t, err)
	require.False(t, req.Stop, "a step that succeeds on a retry never stops the fleet")

	require.Len(t, done.Timeline, 3)
	rec := done.Timeline[1]
	require.Equal(t, 2, rec.Step)
	require.Equal(t, "step2", rec.Name)
	require.Equal(t, storage.StepOK, rec.Result)
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

	// The history record keeps the timeline.
	require.Eventually(t, func() bool {
		h, err := f.st.GetHistory(f.ctx(), 1)
		return err == nil && len(h) == 1 && len(h[0].Timeline["boot-0"]) == 3 && len(h[0].Timeline["boot-0"][1].Attempts) == 3
	}, 20*time.Second, 20*time.Millisecond, "the history record holds the timeline")
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
		{"retries", func(s *artifacts.Step) { s.Retries, s.RetryBackoff = 1, "10ms" }, failingTimes("DIR", 5), []string{"all 2 attempts failed", "attempt 2: the service did not come up"}},
		{"timeout", func(s *artifacts.Step) { s.Timeout = "300ms" }, "sleep 20", []string{"timed out after 300ms (the step's timeout)"}},
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
			st := f.waitStatus("boot-0", cond(storage.CondAborted))
			for _, w := range c.want {
				require.Contains(t, st.Message, w)
			}
			require.Len(t, st.Timeline, 1)
			require.Equal(t, storage.StepFailed, st.Timeline[0].Result)
			require.Len(t, st.Timeline[0].Attempts, plan.Steps[0].Retries+1)
			for _, a := range st.Timeline[0].Attempts {
				require.NotEmpty(t, a.Error)
			}
		})
	}
}
