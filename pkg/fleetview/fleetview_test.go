package fleetview

import (
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// TestStepsCountArrivalsAndDone: a server waiting at step k has arrived at
// k's barrier and finished k-1; a completed one has finished every step; a
// report about an earlier rollout counts for nothing.
func TestStepsCountArrivalsAndDone(t *testing.T) {
	started := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	req := &storage.UpdateRequest{Version: "2", Servers: []string{"a", "b", "c", "d"}, StartedAt: started}
	st := func(step int, name string, cond storage.Cond) *storage.UpdateStatus {
		return &storage.UpdateStatus{Version: "2", Step: step, StepName: name, Phase: storage.PhaseWaiting, Cond: cond, Rollout: started}
	}
	old := st(3, "services", storage.CondCompleted)
	old.Rollout = started.Add(-time.Hour)
	snap := &storage.Snapshot{
		Request: req,
		Statuses: map[string]*storage.UpdateStatus{
			"a": st(3, "services", storage.CondCompleted),
			"b": st(3, "services", storage.CondRunning),
			"c": st(2, "images", storage.CondRunning),
			"d": old,
		},
		Alive:   map[string]*storage.Alive{"a": {}, "b": {}, "c": {}, "d": {}},
		Servers: map[string]*storage.ServerInfo{"e": {Labels: map[string]string{"rack": "r2"}}},
		Passed:  &storage.Passed{Rollout: started, Step: 0},
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
	require.Equal(t, storage.StateIdle, v.Servers[3].State, "d's report is about an earlier rollout")
}
