package fleetview

import (
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// TestStepsCountArrivalsAndDone: a server waiting at step k has arrived at
// k's barrier and finished k-1; a completed one has finished every step; a
// report about an earlier rollout counts for nothing.
func TestStepsCountArrivalsAndDone(t *testing.T) {
	started := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"a", "b", "c", "d"}, StartedAt: started}
	st := func(step int, name string, cond fleet.Cond) *fleet.UpdateStatus {
		return &fleet.UpdateStatus{Version: "2", Step: step, StepName: name, Phase: fleet.PhaseWaiting, Cond: cond, Rollout: started}
	}
	old := st(3, "services", fleet.CondCompleted)
	old.Rollout = started.Add(-time.Hour)
	snap := &fleet.Snapshot{
		Request: req,
		Statuses: map[string]*fleet.UpdateStatus{
			"a": st(3, "services", fleet.CondCompleted),
			"b": st(3, "services", fleet.CondRunning),
			"c": st(2, "images", fleet.CondRunning),
			"d": old,
		},
		Alive:   map[string]*fleet.Alive{"a": {}, "b": {}, "c": {}, "d": {}},
		Servers: map[string]*fleet.ServerInfo{"e": {Labels: map[string]string{"rack": "r2"}}},
		Passed:  &fleet.Passed{Rollout: started, Step: 0},
	}
	v := New(snap)
	require.Equal(t, StateRunning, v.State)
	require.Equal(t, []Step{
		{Step: 1, Arrived: 3, Done: 3, Of: 4},
		{Step: 2, Name: "images", Arrived: 3, Done: 2, Of: 4},
		{Step: 3, Name: "services", Arrived: 2, Done: 1, Of: 4},
	}, v.Steps)
	ids := []string{}
	for _, s := range v.Servers {
		ids = append(ids, s.ID)
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, ids, "a joined server outside the rollout is listed too")
	require.Equal(t, map[string]string{"rack": "r2"}, v.Servers[4].Labels)
	require.False(t, v.Servers[4].InRequest)
	require.Equal(t, fleet.StateIdle, v.Servers[3].State, "d's report is about an earlier rollout")
}

// TestCanaryIsMarked: while the rest wait behind a step's canary, the
// server that took the step first is marked as its canary, and the hold
// is named; after the resume, neither is.
func TestCanaryIsMarked(t *testing.T) {
	started := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"a", "b", "c"}, StartedAt: started}
	st := func(step int, phase fleet.Phase) *fleet.UpdateStatus {
		return &fleet.UpdateStatus{Version: "2", Step: step, StepName: "restart", Phase: phase, Cond: fleet.CondRunning, Rollout: started, Canary: 1, Pause: "manual"}
	}
	snap := &fleet.Snapshot{
		Request:  req,
		Statuses: map[string]*fleet.UpdateStatus{"a": st(2, fleet.PhaseWaiting), "b": st(2, fleet.PhasePaused), "c": st(2, fleet.PhasePaused)},
		Alive:    map[string]*fleet.Alive{"a": {}, "b": {}, "c": {}},
	}
	v := New(snap)
	require.Equal(t, 2, v.CanaryHold)
	require.Equal(t, []int{2, 0, 0}, []int{v.Servers[0].Canary, v.Servers[1].Canary, v.Servers[2].Canary})

	snap.Resume = &fleet.Resume{Rollout: started, Step: 2}
	v = New(snap)
	require.Zero(t, v.CanaryHold)
	require.Zero(t, v.Servers[0].Canary)
}

// TestStepsListThePlan: with the plan recorded, every step is listed by
// name, those nobody reached yet too.
func TestStepsListThePlan(t *testing.T) {
	started := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"a", "b"}, StartedAt: started}
	snap := &fleet.Snapshot{
		Request: req,
		Statuses: map[string]*fleet.UpdateStatus{
			"a": {Version: "2", Step: 1, StepName: "debs", Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, Rollout: started},
		},
		Plan: &fleet.PlanSteps{Rollout: started, Steps: []string{"debs", "images", "boot"}},
	}
	require.Equal(t, []Step{
		{Step: 1, Name: "debs", Arrived: 1, Of: 2},
		{Step: 2, Name: "images", Of: 2},
		{Step: 3, Name: "boot", Of: 2},
	}, New(snap).Steps)
}
