package updater

import (
	"errors"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) // a Monday

// world builds an Input piece by piece.
type world struct {
	in Input
}

func newWorld(env fleet.Env, servers ...string) *world {
	cfg, err := fleet.ParseConfig(map[string]string{fleet.ConfigEnv: string(env)})
	if err != nil {
		panic(err)
	}
	w := &world{in: Input{
		Snap: &fleet.Snapshot{
			Statuses: map[string]*fleet.UpdateStatus{},
			Servers:  map[string]*fleet.ServerInfo{},
			Alive:    map[string]*fleet.Alive{},
			Contents: map[string]*fleet.ContentsStatus{},
		},
		Config: cfg, ConfigOK: true, Now: t0, MissingSince: map[string]time.Time{},
	}}
	for _, s := range servers {
		w.in.Snap.Servers[s] = &fleet.ServerInfo{Hostname: s}
		w.in.Snap.Alive[s] = &fleet.Alive{Version: "2026.01.01-1"}
	}
	return w
}

func (w *world) release(v string) *world {
	w.in.Snap.Release = &fleet.ReleaseInfo{Env: w.in.Config.Env, Version: v, Tag: "release-" + v}
	return w
}

func (w *world) request(v string, servers ...string) *world {
	w.in.Snap.Request = &fleet.UpdateRequest{Version: v, Servers: servers, StartedAt: t0.Add(-10 * time.Minute), Reason: fleet.ReasonUpdate}
	return w
}

func (w *world) finished() *world {
	w.in.Snap.Request.FinishedAt = t0.Add(-time.Minute)
	return w
}

func (w *world) stopped() *world {
	w.in.Snap.Request.Stop = true
	return w.finished()
}

func (w *world) status(id, v string, c fleet.Cond, msg string) *world {
	w.in.Snap.Statuses[id] = &fleet.UpdateStatus{Version: v, Cond: c, Message: msg}
	return w
}

// atStep puts a server's status at step k of a step with max-failures m.
func (w *world) atStep(id string, k, m int) *world {
	st := w.in.Snap.Statuses[id]
	st.Step, st.StepName, st.MaxFailures = k, "drain", m
	return w
}

// behindCanary has server a finish step k (its canary) at done, and b wait
// behind it with the given pause.
func (w *world) behindCanary(v string, k int, pause string, done time.Time) *world {
	r := w.in.Snap.Request
	w.in.Snap.Statuses["a"] = &fleet.UpdateStatus{Version: v, Rollout: r.StartedAt, Step: k + 1, Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, UpdatedAt: done}
	w.in.Snap.Statuses["b"] = &fleet.UpdateStatus{Version: v, Rollout: r.StartedAt, Step: k, StepName: "restart", Phase: fleet.PhasePaused, Cond: fleet.CondRunning, Canary: 1, Pause: pause}
	return w
}

// failed records that the rollout went on without a server at step k.
func (w *world) failed(id string, k int) *world {
	r := w.in.Snap.Request
	r.Failed = append(r.Failed, fleet.FailedServer{ID: id, Step: k, Reason: "x"})
	return w
}

func (w *world) pin(v string, downgrade bool) *world {
	w.in.Snap.Pin = &fleet.Pin{Version: v, AllowDowngrade: downgrade}
	return w
}

func (w *world) alive(id, v string) *world {
	w.in.Snap.Alive[id] = &fleet.Alive{Version: v}
	return w
}

func (w *world) dead(id string, since time.Duration) *world {
	delete(w.in.Snap.Alive, id)
	if since >= 0 {
		w.in.MissingSince[id] = t0.Add(-since)
	}
	return w
}

func (w *world) config(kv ...string) *world {
	values := map[string]string{fleet.ConfigEnv: string(w.in.Config.Env)}
	for i := 0; i < len(kv); i += 2 {
		values[kv[i]] = kv[i+1]
	}
	cfg, err := fleet.ParseConfig(values)
	if err != nil {
		panic(err)
	}
	w.in.Config = cfg
	return w
}

func TestNextAction(t *testing.T) {
	t.Parallel()
	const v1, v2, v3 = "2026.01.01-1", "2026.01.02-1", "2026.01.03-1"
	cases := []struct {
		name string
		w    *world
		kind Kind
		// check looks closer at the action.
		check func(t *testing.T, a Action)
	}{
		{name: "env none never updates", w: newWorld(fleet.EnvNone, "a").release(v2), kind: Wait},
		{name: "no server joined", w: newWorld(fleet.EnvProd).release(v2), kind: Wait},
		{name: "no release seen", w: newWorld(fleet.EnvProd, "a"), kind: Wait},
		{name: "release for another env is stale", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v2)
			w.in.Snap.Release.Env = fleet.EnvStaging
			return w
		}(), kind: Wait},
		{name: "first rollout", w: newWorld(fleet.EnvProd, "b", "a").release(v2), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, v2, a.Request.Version)
			require.Equal(t, []string{"a", "b"}, a.Request.Servers)
			require.Equal(t, fleet.ReasonUpdate, a.Request.Reason)
			require.Equal(t, t0, a.Request.StartedAt)
		}},
		{name: "newer release after completion", w: newWorld(fleet.EnvProd, "a").release(v3).request(v2, "a").finished(), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, v3, a.Request.Version)
		}},
		{name: "up to date", w: newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").finished(), kind: Wait},
		{name: "older release never taken", w: newWorld(fleet.EnvProd, "a").release(v1).request(v2, "a").finished(), kind: Wait},
		{name: "older release refused with no request when a worker runs newer", w: newWorld(fleet.EnvProd, "a").release(v1).alive("a", v2), kind: Wait, check: func(t *testing.T, a Action) {
			require.Contains(t, a.Why, "older")
		}},
		{name: "after recover the same version starts again", w: newWorld(fleet.EnvProd, "a").release(v2).alive("a", v2), kind: NewRequest},
		{name: "pin holds back", w: newWorld(fleet.EnvProd, "a").release(v3).request(v1, "a").finished().pin(v2, false), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, v2, a.Request.Version)
		}},
		{name: "pin at current holds", w: newWorld(fleet.EnvProd, "a").release(v3).request(v2, "a").finished().pin(v2, false), kind: Wait},
		{name: "pin below current without downgrade holds", w: newWorld(fleet.EnvProd, "a").release(v3).request(v2, "a").finished().pin(v1, false), kind: Wait},
		{name: "pin with downgrade goes back", w: newWorld(fleet.EnvProd, "a").release(v3).request(v2, "a").finished().pin(v1, true), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, v1, a.Request.Version)
		}},
		{name: "membership changed: reconfigure", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a").finished(), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, fleet.ReasonReconfigure, a.Request.Reason)
			require.Equal(t, v2, a.Request.Version)
			require.Equal(t, []string{"a", "b"}, a.Request.Servers)
		}},
		{name: "new version wins over reconfigure", w: newWorld(fleet.EnvProd, "a", "b").release(v3).request(v2, "a").finished(), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, fleet.ReasonUpdate, a.Request.Reason)
			require.Equal(t, v3, a.Request.Version)
		}},
		{name: "running: waits for workers", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("a", v2, fleet.CondCompleted, ""), kind: Wait, check: func(t *testing.T, a Action) {
			require.Equal(t, t0.Add(50*time.Minute), a.Until, "wakes at the worker timeout")
		}},
		{name: "running: a join waits for the next rollout", w: newWorld(fleet.EnvProd, "a", "b", "c").release(v2).request(v2, "a", "b"), kind: Wait},
		{name: "running: all completed", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("a", v2, fleet.CondCompleted, "").status("b", v2, fleet.CondCompleted, ""), kind: Complete},
		{name: "running: completed at an old version does not count", w: newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").status("a", v1, fleet.CondCompleted, ""), kind: Wait},
		{name: "running: abort stops", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("b", v2, fleet.CondAborted, "dpkg failed"), kind: Stop, check: func(t *testing.T, a Action) {
			require.Equal(t, fleet.ResultAborted, a.Cause.Result)
			require.Equal(t, "b", a.Cause.Server)
			require.Equal(t, "b aborted: dpkg failed", a.Cause.String())
		}},
		{name: "running: abort by a non-member is ignored", w: newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").status("z", v2, fleet.CondAborted, "x"), kind: Wait},
		{name: "running: timeout stops", w: newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").config(fleet.ConfigWorkerTimeout, "5m"), kind: Stop, check: func(t *testing.T, a Action) {
			require.Equal(t, fleet.ResultTimeout, a.Cause.Result)
			require.Contains(t, a.Cause.Message, "[a]")
		}},
		{name: "running: dead past grace stops", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").dead("b", 3*time.Minute), kind: Stop, check: func(t *testing.T, a Action) {
			require.Equal(t, fleet.ResultDead, a.Cause.Result)
			require.Equal(t, "b", a.Cause.Server)
		}},
		{name: "running: missing within grace waits until grace ends", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").dead("b", 30*time.Second), kind: Wait, check: func(t *testing.T, a Action) {
			require.Equal(t, t0.Add(90*time.Second), a.Until)
		}},
		{name: "running: newly missing starts the grace now", w: newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").dead("a", -1), kind: Wait, check: func(t *testing.T, a Action) {
			require.Equal(t, t0.Add(2*time.Minute), a.Until)
		}},
		{name: "running: abort wins over completion of others", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("a", v2, fleet.CondCompleted, "").status("b", v2, fleet.CondAborted, "x"), kind: Stop},
		{name: "max-failures: a tolerated failure goes on without the server", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("b", v2, fleet.CondAborted, "dpkg failed").atStep("b", 2, 1), kind: GoOnWithout, check: func(t *testing.T, a Action) {
			require.Equal(t, "b", a.Cause.Server)
			require.Equal(t, 2, a.Cause.Step)
			require.Equal(t, 1, a.Cause.MaxFailures)
		}},
		{name: "max-failures: one failure too many stops", w: newWorld(fleet.EnvProd, "a", "b", "c").release(v2).request(v2, "a", "b", "c").failed("a", 2).status("b", v2, fleet.CondAborted, "dpkg failed").atStep("b", 2, 1), kind: Stop},
		{name: "max-failures: failures of another step do not count", w: newWorld(fleet.EnvProd, "a", "b", "c").release(v2).request(v2, "a", "b", "c").failed("a", 1).status("b", v2, fleet.CondAborted, "x").atStep("b", 2, 1), kind: GoOnWithout},
		{name: "max-failures: a dead server is tolerated", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("b", v2, fleet.CondRunning, "").atStep("b", 1, 1).dead("b", 3*time.Minute), kind: GoOnWithout, check: func(t *testing.T, a Action) {
			require.Equal(t, fleet.ResultDead, a.Cause.Result)
		}},
		{name: "max-failures: a dead server with no report stops", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").dead("b", 3*time.Minute), kind: Stop},
		{name: "max-failures: completes without the failed server", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("a", v2, fleet.CondCompleted, "").status("b", v2, fleet.CondAborted, "x").atStep("b", 1, 1).failed("b", 1).dead("b", time.Hour), kind: Complete},
		{name: "max-failures: every server failed stops", w: newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").failed("a", 1), kind: Stop, check: func(t *testing.T, a Action) {
			require.Equal(t, "every server of the rollout failed", a.Cause.String())
		}},
		{name: "canary: a manual pause waits for the operator", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").behindCanary(v2, 1, "manual", t0.Add(-time.Hour)).config(fleet.ConfigWorkerTimeout, "5m"), kind: Wait, check: func(t *testing.T, a Action) {
			require.Contains(t, a.Why, "ferry rollout resume", "and no worker-timeout while paused")
		}},
		{name: "a pin set with --stop-running during a rollout to another version stops it", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").pin(v1, true)
			w.in.Snap.Pin.StopRunning, w.in.Snap.Pin.By = true, "ferry release pin, ops@admin"
			w.in.Snap.Pin.PinnedAt = w.in.Snap.Request.StartedAt.Add(time.Minute)
			return w
		}(), kind: Stop, check: func(t *testing.T, a Action) {
			require.Equal(t, "pinned to "+v1+" by ferry release pin, ops@admin with --stop-running; `ferry recover` rolls out "+v1, a.Cause.String())
		}},
		{name: "a pin set without --stop-running lets the rollout run", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").pin(v1, true)
			w.in.Snap.Pin.PinnedAt = w.in.Snap.Request.StartedAt.Add(time.Minute)
			return w
		}(), kind: Wait},
		{name: "a --stop-running pin of an earlier rollout does not stop the next", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").pin(v1, true)
			w.in.Snap.Pin.StopRunning = true
			w.in.Snap.Pin.PinnedAt = w.in.Snap.Request.StartedAt.Add(-time.Minute)
			return w
		}(), kind: Wait},
		{name: "an operator's pause says who, since when and why", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b")
			w.in.Snap.Pause = &fleet.Pause{Rollout: w.in.Snap.Request.StartedAt, At: t0.Add(-time.Minute), By: "ferry rollout, ops@admin", Reason: "DNS looks odd on boot-0"}
			return w
		}(), kind: Wait, check: func(t *testing.T, a Action) {
			require.Equal(t, "pause", a.Paused)
			require.Contains(t, a.Why, "by ferry rollout, ops@admin, since "+t0.Add(-time.Minute).Format(time.RFC3339)+"): DNS looks odd on boot-0")
		}},
		{name: "canary: a rollback skips a manual pause once the canary finished", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").behindCanary(v2, 1, "manual", t0.Add(-time.Second))
			w.in.Snap.Request.Reason, w.in.Snap.Request.From = fleet.ReasonRollback, v3
			return w
		}(), kind: ResumeCanary, check: func(t *testing.T, a Action) {
			require.Equal(t, 1, a.Step)
			require.Contains(t, a.Why, "a rollback skips the plan's manual pauses")
		}},
		{name: "canary: a rollback still waits for its canary", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").behindCanary(v2, 1, "manual", t0.Add(-time.Second))
			w.in.Snap.Request.Reason = fleet.ReasonRollback
			w.in.Snap.Statuses["a"].Cond, w.in.Snap.Statuses["a"].Step, w.in.Snap.Statuses["a"].Phase = fleet.CondRunning, 1, fleet.PhaseRunning
			return w
		}(), kind: Wait, check: func(t *testing.T, a Action) {
			require.Contains(t, a.Why, "0 of 1 canary server(s) finished it")
		}},
		{name: "canary: a timed pause waits until it ends", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").behindCanary(v2, 1, "10m", t0.Add(-4*time.Minute)), kind: Wait, check: func(t *testing.T, a Action) {
			require.Equal(t, t0.Add(6*time.Minute), a.Until)
		}},
		{name: "canary: a timed pause that ended resumes", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").behindCanary(v2, 1, "10m", t0.Add(-11*time.Minute)), kind: ResumeCanary, check: func(t *testing.T, a Action) {
			require.Equal(t, 1, a.Step)
		}},
		{name: "canary: once resumed, the rollout runs", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").behindCanary(v2, 1, "10m", t0.Add(-11*time.Minute))
			w.in.Snap.Resume = &fleet.Resume{Rollout: w.in.Snap.Request.StartedAt, Step: 1, At: t0.Add(-time.Second)}
			return w
		}(), kind: Wait, check: func(t *testing.T, a Action) {
			require.Contains(t, a.Why, "is running")
			require.Equal(t, t0.Add(time.Hour-time.Second), a.Until, "worker-timeout counts from the resume")
		}},
		{name: "on-failure rollback: goes back to the version before", w: func() *world {
			w := newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a", "b").status("b", v2, fleet.CondAborted, "health check failed")
			w.in.Snap.Request.From = v1
			w.in.Snap.Statuses["b"].OnFailure = "rollback"
			return w
		}(), kind: RollBack, check: func(t *testing.T, a Action) {
			require.Equal(t, v1, a.Request.Version)
			require.Equal(t, v2, a.Request.From)
			require.Equal(t, fleet.ReasonRollback, a.Request.Reason)
			require.Equal(t, []string{"a", "b"}, a.Request.Servers)
			require.Equal(t, "b", a.Cause.Server)
		}},
		{name: "on-failure rollback: a failed rollback stops", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v2).request(v1, "a").status("a", v1, fleet.CondAborted, "x")
			w.in.Snap.Request.From, w.in.Snap.Request.Reason = v2, fleet.ReasonRollback
			w.in.Snap.Statuses["a"].OnFailure = "rollback"
			return w
		}(), kind: Stop},
		{name: "on-failure rollback: nothing to go back to stops", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").status("a", v2, fleet.CondAborted, "x")
			w.in.Snap.Statuses["a"].OnFailure = "rollback"
			return w
		}(), kind: Stop},
		{name: "a refused release is not rolled out again", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v2).request(v1, "a").finished()
			w.in.Snap.Refused = map[string]*fleet.Refused{v2: {Version: v2, Reason: "b aborted"}}
			return w
		}(), kind: Wait, check: func(t *testing.T, a Action) {
			require.Contains(t, a.Why, "ferry release unrefuse "+v2)
		}},
		{name: "a newer release than the refused one goes on", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v3).request(v1, "a").finished()
			w.in.Snap.Refused = map[string]*fleet.Refused{v2: {Version: v2}}
			return w
		}(), kind: NewRequest, check: func(t *testing.T, a Action) {
			require.Equal(t, v3, a.Request.Version)
			require.Equal(t, v1, a.Request.From)
		}},
		{name: "stopped waits for recover", w: newWorld(fleet.EnvProd, "a").release(v3).request(v2, "a").stopped(), kind: Wait, check: func(t *testing.T, a Action) {
			require.Contains(t, a.Why, "ferry recover")
			require.True(t, a.Until.IsZero())
		}},
		{name: "outside the release window", w: newWorld(fleet.EnvProd, "a").release(v2).config(fleet.ConfigReleaseTime, "* 12-13 * * *"), kind: Wait, check: func(t *testing.T, a Action) {
			require.Equal(t, time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), a.Until)
		}},
		{name: "inside the release window", w: newWorld(fleet.EnvProd, "a").release(v2).config(fleet.ConfigReleaseTime, "* 9-11 * * 1-5"), kind: NewRequest},
		{name: "reconfigure ignores the release window", w: newWorld(fleet.EnvProd, "a", "b").release(v2).request(v2, "a").finished().config(fleet.ConfigReleaseTime, "* 12-13 * * *"), kind: NewRequest},
		{name: "broken config: no new rollout", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v2)
			w.in.ConfigOK = false
			w.in.Snap.ConfigErr = errors.New("broken")
			return w
		}(), kind: Wait},
		{name: "broken config: a running rollout still stops on abort", w: func() *world {
			w := newWorld(fleet.EnvProd, "a").release(v2).request(v2, "a").status("a", v2, fleet.CondAborted, "x")
			w.in.ConfigOK = false
			return w
		}(), kind: Stop},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := NextAction(c.w.in)
			require.Equal(t, c.kind, a.Kind, "why: %s", a.Why)
			require.NotEmpty(t, a.Why)
			if c.check != nil {
				c.check(t, a)
			}
		})
	}
}
