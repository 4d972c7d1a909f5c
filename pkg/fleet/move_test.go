package fleet

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNextMove is the worker's decision, case by case: each case the chaos
// and trust scenarios found has a line here.
func TestNextMove(t *testing.T) {
	t.Parallel()
	started := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	const v1, v2 = "2026.12.05-1", "2026.12.06-1"
	request := func(edit ...func(*UpdateRequest)) *UpdateRequest {
		r := &UpdateRequest{Version: v2, Servers: []string{"boot-0", "boot-1"}, StartedAt: started, Reason: ReasonUpdate}
		for _, e := range edit {
			e(r)
		}
		return r
	}
	status := func(step int, phase Phase, cond Cond) *UpdateStatus {
		return &UpdateStatus{Version: v2, Rollout: started, Step: step, Phase: phase, Cond: cond}
	}
	cfg, err := ParseConfig(nil)
	require.NoError(t, err)
	badConfig := errors.New("worker-timeout: stored \"soon\" is not a duration")
	stopped := func(r *UpdateRequest) { r.Stop, r.StopReason = true, "boot-1 aborted" }

	cases := []struct {
		name     string
		local    Local
		req      *UpdateRequest
		own      *UpdateStatus
		noConfig bool
		want     MoveKind
		step     int
		reason   string // a fragment of Move.Reason
		warning  string // a fragment of Move.Warning; "" means none
	}{
		{name: "no request", local: Local{Version: v2}, want: MoveIdle},
		{name: "not a member", local: Local{Version: v1}, req: request(func(r *UpdateRequest) { r.Servers = []string{"boot-1"} }), want: MoveIdle},
		{name: "finished", local: Local{Version: v1}, req: request(func(r *UpdateRequest) { r.FinishedAt = started.Add(time.Hour) }), want: MoveIdle},
		{name: "failed: the rollout goes on without it", local: Local{Version: v2, Dpkg: DpkgOK},
			req: request(func(r *UpdateRequest) { r.Failed = []FailedServer{{ID: "boot-0", Step: 2}} }), want: MoveIdle},
		{name: "aborted waits for recover", local: Local{Version: v2, Done: 1, Dpkg: DpkgOK}, req: request(), own: status(2, PhaseRunning, CondAborted), want: MoveIdle},
		{name: "completed, as its own record says", local: Local{Version: v2, Done: 3, Completed: true, Dpkg: DpkgOK}, req: request(), own: status(3, PhaseDone, CondCompleted), want: MoveIdle},
		{name: "forged completed runs the steps", local: Local{Version: v2, Dpkg: DpkgOK}, req: request(), own: status(3, PhaseDone, CondCompleted),
			want: MoveRunFrom, step: 1, warning: "its own record does not"},
		{name: "forged completed resumes after its own record", local: Local{Version: v2, Done: 2, Dpkg: DpkgOK}, req: request(), own: status(3, PhaseDone, CondCompleted),
			want: MoveRunFrom, step: 3, warning: "its own record does not"},
		{name: "forged step ahead does not skip", local: Local{Version: v2, Done: 1, Dpkg: DpkgOK}, req: request(), own: status(3, PhaseDone, CondRunning),
			want: MoveRunFrom, step: 2, warning: "says step 4 is next, its own record says 2"},
		{name: "waiting at the step it resumes", local: Local{Version: v2, Done: 1, Dpkg: DpkgOK}, req: request(), own: status(2, PhaseWaiting, CondRunning),
			want: MoveRunFrom, step: 2},
		{name: "done with the step it finished", local: Local{Version: v2, Done: 2, Dpkg: DpkgOK}, req: request(), own: status(2, PhaseDone, CondRunning),
			want: MoveRunFrom, step: 3},
		{name: "killed in step 2 resumes there", local: Local{Version: v2, Done: 1, Dpkg: DpkgOK}, req: request(), own: status(2, PhaseRunning, CondRunning),
			want: MoveRunFrom, step: 2},
		{name: "a status of an earlier rollout counts for nothing", local: Local{Version: v2, Dpkg: DpkgOK}, req: request(),
			own: &UpdateStatus{Version: v2, Rollout: started.Add(-time.Hour), Step: 2, Cond: CondAborted}, want: MoveRunFrom, step: 1},
		{name: "completed on disk, status lost: reports again", local: Local{Version: v2, Done: 3, Completed: true, Dpkg: DpkgOK}, req: request(),
			want: MoveRunFrom, step: 4},
		{name: "stopped before a step", local: Local{Version: v2, Done: 1, Dpkg: DpkgOK}, req: request(stopped), own: status(2, PhaseWaiting, CondRunning),
			want: MoveStopped, step: 2},
		{name: "stopped before it began", local: Local{Version: v2}, req: request(stopped), want: MoveStopped, step: 1},
		{name: "stopped while another version was asked for", local: Local{Version: v1}, req: request(stopped), want: MoveStopped, step: 1},
		{name: "stopped and already aborted", local: Local{Version: v2, Done: 1}, req: request(stopped), own: status(2, PhaseWaiting, CondAborted), want: MoveIdle},
		{name: "stopped after it completed", local: Local{Version: v2, Done: 3, Completed: true}, req: request(stopped), own: status(3, PhaseDone, CondCompleted), want: MoveIdle},
		{name: "another version: self-upgrade", local: Local{Version: v1}, req: request(), want: MoveSelfUpgrade},
		{name: "another version, installed once: once more", local: Local{Version: v1, Installs: 1}, req: request(), want: MoveSelfUpgrade},
		{name: "another version, installed twice: gives up", local: Local{Version: v1, Installs: 2}, req: request(), want: MoveRefuse, reason: "installed 2 times"},
		{name: "below the version floor: refused", local: Local{Version: v2, Floor: errors.New("2026.11.01-1 is older than 2026.12.05-1")},
			req: request(func(r *UpdateRequest) { r.Version = "2026.11.01-1" }), want: MoveRefuse, reason: "refused 2026.11.01-1: 2026.11.01-1 is older"},
		{name: "another version, the config does not validate: waits", local: Local{Version: v1}, req: request(), noConfig: true, want: MoveWait, reason: "cannot self-upgrade: worker-timeout"},
		{name: "the version matches: dpkg is asked first", local: Local{Version: v2}, req: request(), want: MoveCheckDpkg, step: 1},
		{name: "the version matches, dpkg ok: runs", local: Local{Version: v2, Dpkg: DpkgOK}, req: request(), want: MoveRunFrom, step: 1},
		{name: "the config does not validate, steps still run", local: Local{Version: v2, Dpkg: DpkgOK}, req: request(), noConfig: true, want: MoveRunFrom, step: 1},
		{name: "ferry half-installed: repair", local: Local{Version: v2, Done: 1, Dpkg: DpkgFerryBroken}, req: request(), want: MoveRepair, step: 2},
		{name: "a step's package half-installed: repair", local: Local{Version: v2, Done: 2, Dpkg: DpkgOtherBroken}, req: request(), want: MoveRepair, step: 3},
		{name: "repaired and fine: runs", local: Local{Version: v2, Done: 2, Dpkg: DpkgOK, Repaired: true}, req: request(), want: MoveRunFrom, step: 3},
		{name: "ferry still broken after a repair: reinstall", local: Local{Version: v2, Dpkg: DpkgFerryBroken, Repaired: true}, req: request(), want: MoveSelfUpgrade},
		{name: "ferry still broken, reinstalled twice: gives up", local: Local{Version: v2, Dpkg: DpkgFerryBroken, Repaired: true, Installs: 2}, req: request(),
			want: MoveRefuse, reason: "installed 2 times"},
		{name: "ferry still broken, no valid config: waits", local: Local{Version: v2, Dpkg: DpkgFerryBroken, Repaired: true}, req: request(), noConfig: true,
			want: MoveWait, reason: "cannot self-upgrade"},
		{name: "a step's package still broken after a repair: waits", local: Local{Version: v2, Done: 1, Dpkg: DpkgOtherBroken, Repaired: true}, req: request(),
			want: MoveWait, step: 2, reason: "repair did not bring it back"},
		{name: "a reconfigure at the same version runs its steps", local: Local{Version: v2, Dpkg: DpkgOK},
			req: request(func(r *UpdateRequest) { r.Reason = ReasonReconfigure }), want: MoveRunFrom, step: 1},
		{name: "a rollback is an upgrade like any other", local: Local{Version: v1},
			req: request(func(r *UpdateRequest) { r.Reason, r.Version, r.From = ReasonRollback, "2026.12.04-1", v1 }), want: MoveSelfUpgrade},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := &Snapshot{Config: cfg, Request: c.req, Statuses: map[string]*UpdateStatus{}}
			if c.noConfig {
				snap.Config, snap.ConfigErr = nil, badConfig
			}
			if c.own != nil {
				snap.Statuses["boot-0"] = c.own
			}
			snap.Statuses["boot-1"] = status(3, PhaseDone, CondCompleted)
			c.local.ID = "boot-0"
			got := NextMove(c.local, snap)
			require.Equal(t, c.want, got.Kind, "move %s", got)
			require.Equal(t, c.step, got.Step, "move %s", got)
			if c.reason == "" {
				require.Empty(t, got.Reason)
			} else {
				require.Contains(t, got.Reason, c.reason)
			}
			if c.warning == "" {
				require.Empty(t, got.Warning)
			} else {
				require.Contains(t, got.Warning, c.warning)
			}
		})
	}
	require.GreaterOrEqual(t, len(cases), 25)
}
