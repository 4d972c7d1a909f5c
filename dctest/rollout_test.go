package dctest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// failsOn is a run action that fails its first n runs on one server (a
// service that takes a while to come up) and succeeds after.
func failsOn(dir, server string, n int) artifacts.Action {
	script := fmt.Sprintf(`[ "$FERRY_SERVER" = %[2]s ] || exit 0
c=%[1]s/attempts; i=$(( $(cat $c 2>/dev/null || echo 0) + 1 )); echo $i > $c
if [ $i -le %[3]d ]; then echo "E: dns.service is not answering yet (check $i)" >&2; exit 3; fi`, dir, server, n)
	return artifacts.Action{Run: &artifacts.RunAction{Command: "sh", Args: []string{"-c", script}}}
}

// TestStepRetriesTransientFailure: N1's plan has a health step with
// retries; on boot-1 its check fails twice, then passes. The step is tried
// again there, the fleet is never stopped, the rollout completes, and
// `ferry history show` shows the three attempts with the two errors.
func TestStepRetriesTransientFailure(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		s.Plan.Steps = append(s.Plan.Steps, artifacts.Step{
			Name: "health", Strategy: artifacts.Lockstep, Retries: 3, RetryBackoff: artifacts.ParseDuration("1s"), Timeout: artifacts.ParseDuration("1m"),
			Actions: []artifacts.Action{failsOn(t.TempDir(), "boot-1", 2)},
		})
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)

	h := d.history()
	require.Equal(t, N1, h[0].Version)
	require.Equal(t, fleet.ResultCompleted, h[0].Result, "no stop")
	require.Len(t, h, 2, "one rollout to N1, never stopped and started again")
	out := d.ferry("history", "show", N1)
	t.Logf("ferry history show %s:\n%s", N1, out)
	require.Regexp(t, `5 health\s+boot-0\s+\S+\s+\S+\s+\S+\s+1\s+ok`, out)
	require.Regexp(t, `boot-1\s+\S+\s+\S+\s+\S+\s+3\s+ok\s+attempt 1: .*check 1.*; attempt 2: .*check 2`, out)
	var rec fleet.StepRecord
	for _, r := range h[0].Timeline["boot-1"] {
		if r.Name == "health" {
			rec = r
		}
	}
	require.Len(t, rec.Attempts, 3)
	require.GreaterOrEqual(t, rec.Attempts[1].Start.Sub(rec.Attempts[0].End).Seconds(), 1.0, "backoff between attempts")
}

// TestMaxFailuresTolerated: N1's plan starts with a rolling step that
// tolerates one failed server. boot-2's worker dies in it for good: after
// dead-server-grace the updater goes on without boot-2 instead of stopping
// the fleet, the others finish N1, and the history, `ferry status` and a
// notification say which server was left behind and why.
func TestMaxFailuresTolerated(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		drain := artifacts.Step{
			Name: "drain", Strategy: artifacts.Rolling, Parallel: 1, MaxFailures: 1,
			Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "sleep", Args: []string{"2"}}}},
		}
		s.Plan.Steps = append([]artifacts.Step{drain}, s.Plan.Steps...)
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	waitFor(t, 3*time.Minute, "boot-2 to reach the drain step of "+N1, func() (bool, string) {
		snap, err := d.Store.Snapshot(d.ctx)
		if err != nil {
			return false, err.Error()
		}
		st := snap.Statuses["boot-2"]
		return st.For(snap.Request) && st.Version == N1 && st.StepName == "drain" && st.MaxFailures == 1, phases(snap)
	})
	s2, err := d.Server("boot-2")
	require.NoError(t, err)
	s2.StopWorker()

	done := d.waitState(N1, "completed")
	require.False(t, done.Request.Stop, "a tolerated failure never stops the fleet")
	d.requireInstalled(N1, "boot-0", "boot-1")
	h := d.history()[0]
	require.Equal(t, N1, h.Version)
	require.Equal(t, fleet.ResultCompleted, h.Result)
	require.Len(t, h.Failed, 1)
	require.Equal(t, "boot-2", h.Failed[0].ID)
	require.Equal(t, 1, h.Failed[0].Step)
	require.Contains(t, h.Failed[0].Reason, "no live worker")
	require.Contains(t, d.ferry("status"), "Went on without: boot-2, failed at step 1 drain")
	require.Contains(t, d.ferry("history"), "completed (1 failed)")
	d.waitNote("the notification", "goes on without boot-2", "max-failures 1")
	d.waitNote("the completion notification", "completed on 2 of 3 servers", "went on without boot-2")
}

// TestCanaryPausesThenResumes: N1's plan has a rolling step whose canary
// is one server, with a manual pause. One server takes the step; the
// rollout shows paused with the others held; `ferry rollout resume` lets
// them take it, and the rollout completes. The timelines show the canary
// finished the step before any other server began it.
func TestCanaryPausesThenResumes(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		restart := artifacts.Step{
			Name: "restart", Strategy: artifacts.Rolling, Parallel: 2, Canary: "1", Pause: artifacts.ParseDuration("manual"),
			Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "true"}}},
		}
		s.Plan.Steps = append([]artifacts.Step{restart}, s.Plan.Steps...)
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	paused := d.waitState(N1, "paused")
	var held, ahead []string
	for _, s := range paused.Servers {
		switch {
		case s.Status != nil && s.Status.Phase == string(fleet.PhasePaused):
			held = append(held, s.ID)
		case s.Status != nil && s.Status.Step == 2:
			ahead = append(ahead, s.ID)
		}
	}
	require.Len(t, ahead, 1, "one canary took the step: %+v", paused.Servers)
	require.Len(t, held, 2, "the others wait behind it")
	status := d.ferry("status")
	require.Contains(t, status, "PAUSED to "+N1)
	require.Contains(t, status, "behind the canary: 1 server(s) take step 1 (restart) first")

	// Paused it stays: nothing moves until an operator resumes.
	require.Never(t, func() bool {
		s, err := d.Status(d.ctx)
		return err != nil || s.State != "paused"
	}, within(2*time.Second), 200*time.Millisecond, "a manual pause waits for ferry rollout resume")
	d.waitNote("the paused notification", "rollout to "+N1+" is paused behind the canary of step 1", "ferry rollout resume")
	require.Contains(t, d.ferry("rollout", "resume"), "resumed the rollout to "+N1+" after the canary of step 1")
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)

	h := d.history()[0]
	require.Len(t, h.Events, 2, "paused, then resumed: %+v", h.Events)
	require.Equal(t, "paused", h.Events[0].Kind)
	require.Equal(t, "resumed", h.Events[1].Kind)
	require.Contains(t, d.ferry("history", "show", N1), "Resumed:")
	canary := h.Timeline[ahead[0]][0]
	require.Equal(t, "restart", canary.Name)
	for _, id := range held {
		rec := h.Timeline[id][0]
		require.Equal(t, "restart", rec.Name)
		require.NotEmpty(t, rec.Attempts)
		require.True(t, rec.Attempts[0].Start.After(canary.End), "%s began the step after the canary finished it", id)
	}
}

// TestHealthFailureRollsBack: N1's plan says on-failure: rollback, and its
// first step's health gate fails at N1 on the canary. The rollout ends as
// failed, every server goes back to N and runs N's plan, history shows
// both rollouts, N1 is refused, and the updater does not pick it again.
func TestHealthFailureRollsBack(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		s.Plan.OnFailure = artifacts.OnFailureRollback
		check := fmt.Sprintf(`[ "$FERRY_VERSION" != %s ] || { echo "E: dns answers SERVFAIL" >&2; exit 1; }`, N1)
		restart := artifacts.Step{
			Name: "restart", Strategy: artifacts.Rolling, Parallel: 2, Canary: "1", Pause: artifacts.ParseDuration("2s"),
			Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "true"}}},
			Health:  []artifacts.HealthCheck{{Command: &artifacts.RunAction{Command: "sh", Args: []string{"-c", check}}}},
		}
		s.Plan.Steps = append([]artifacts.Step{restart}, s.Plan.Steps...)
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))

	var h []fleet.HistoryRecord
	d.waitFleet(3*time.Minute, "the rollback to complete", func() (bool, string) {
		h = d.history()
		return len(h) >= 3 && h[0].Reason == fleet.ReasonRollback && h[0].Result == fleet.ResultCompleted, "history " + jsonOf(h)
	})
	d.requireInstalled(N, three...)
	require.Equal(t, N, h[0].Version)
	require.Equal(t, N1, h[1].Version)
	require.Equal(t, fleet.ResultFailed, h[1].Result)
	require.Contains(t, h[1].StopReason, "E: dns answers SERVFAIL")
	require.Contains(t, h[1].StopReason, "rolled back to "+N)
	require.Contains(t, d.ferry("release", "list"), "REFUSED")
	d.waitNote("the notification", "rollout to "+N1+" FAILED", "rolling back to "+N)

	// The updater checks every second: it never picks N1 again.
	require.Never(t, func() bool {
		req, _, err := fleettest.GetRequest(d.ctx, d.Store)
		return err == nil && req.Version == N1
	}, within(5*time.Second), 250*time.Millisecond, "the refused version was rolled out again")

	// The cause is fixed (here: the check), and an operator clears N1.
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) { s.Plan.Steps[0].Health = nil }))
	require.Contains(t, d.ferry("release", "unrefuse", N1), "no longer refused")
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
}

// TestSelectorAndRackSpread: four servers in two racks, labelled with
// `ferry server label`. N1's plan has a rolling step with parallel: 4 and
// spread: rack, and a step with selector role=tftp. The recorded start and
// end times show that no two servers of one rack were ever inside the
// spread step at once, and the selector step ran on boot-1 alone.
func TestSelectorAndRackSpread(t *testing.T) {
	d := start(t)
	four := append(three, "boot-3")
	d.bootstrap("staging", four...)
	for id, labels := range map[string][]string{
		"boot-0": {"rack=r1"}, "boot-1": {"rack=r1", "role=tftp"}, "boot-2": {"rack=r2"}, "boot-3": {"rack=r2"},
	} {
		d.ferry(append([]string{"server", "label", id}, labels...)...)
	}
	require.Contains(t, d.ferry("servers"), "rack=r1,role=tftp")
	marks := t.TempDir()
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		restart := artifacts.Step{
			Name: "restart", Strategy: artifacts.Rolling, Parallel: 4, Spread: "rack",
			Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "sleep", Args: []string{"1"}}}},
		}
		tftp := artifacts.Step{
			Name: "tftp", Strategy: artifacts.Lockstep, Selector: map[string]string{"role": "tftp"},
			Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "sh", Args: []string{"-c", `touch "$MARKS/$FERRY_SERVER"`}, Env: map[string]string{"MARKS": marks}}}},
		}
		s.Plan.Steps = append([]artifacts.Step{restart, tftp}, s.Plan.Steps...)
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireInstalled(N1, four...)

	h := d.history()[0]
	require.Equal(t, N1, h.Version)
	type span struct {
		id         string
		start, end time.Time
	}
	rack := map[string]string{"boot-0": "r1", "boot-1": "r1", "boot-2": "r2", "boot-3": "r2"}
	var spans []span
	for _, id := range four {
		rec := h.Timeline[id][0]
		require.Equal(t, "restart", rec.Name)
		require.Len(t, rec.Attempts, 1, id)
		spans = append(spans, span{id, rec.Attempts[0].Start, rec.Attempts[0].End})
	}
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if rack[a.id] == rack[b.id] {
				overlap := a.start.Before(b.end) && b.start.Before(a.end)
				require.False(t, overlap, "%s and %s of rack %s were inside the step at once: %+v %+v", a.id, b.id, rack[a.id], a, b)
			}
		}
	}
	for _, id := range four {
		rec := h.Timeline[id][1]
		require.Equal(t, "tftp", rec.Name)
		_, err := os.Stat(filepath.Join(marks, id))
		if id == "boot-1" {
			require.NoError(t, err, "the tftp step ran on boot-1")
			require.Equal(t, fleet.StepOK, rec.Result)
		} else {
			require.True(t, os.IsNotExist(err), "the tftp step ran on %s, whose labels do not match", id)
			require.Equal(t, fleet.StepSkipped, rec.Result)
		}
	}
}
