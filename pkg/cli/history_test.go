package cli

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// TestHistoryShow: `ferry history show` finds a rollout by its start time
// as `ferry history` prints it, or by version, and prints each server's
// step timeline with every failed attempt's error.
func TestHistoryShow(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	started := time.Date(2026, 1, 2, 10, 0, 0, 123456789, time.UTC)
	at := func(s float64) time.Time { return started.Add(time.Duration(s * float64(time.Second))) }
	req := &fleet.UpdateRequest{Version: "2026.01.02-1", Servers: []string{"boot-0", "boot-1"}, StartedAt: started, Reason: fleet.ReasonUpdate}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error { return l.StartRequest(f.ctx(), req) })
	_, rev, err := fleettest.GetRequest(f.ctx(), f.st)
	require.NoError(t, err)
	h := &fleet.HistoryRecord{
		Version: req.Version, Reason: req.Reason, Servers: req.Servers, Result: fleet.ResultCompleted, StartedAt: started, FinishedAt: at(30),
		Timeline: map[string][]fleet.StepRecord{
			"boot-0": {
				{Step: 1, Name: "packages", Start: at(1), End: at(3), Result: fleet.StepOK, Attempts: []fleet.Attempt{{Start: at(1), End: at(3)}}},
				{Step: 2, Name: "health", Start: at(4), End: at(20), Result: fleet.StepOK, Attempts: []fleet.Attempt{
					{Start: at(4), End: at(5), Error: "exit status 3: E: coredns is not up"}, {Start: at(15), End: at(20)}}},
			},
			"boot-1": {
				{Step: 1, Name: "packages", Start: at(3), End: at(5), Result: fleet.StepOK, Attempts: []fleet.Attempt{{Start: at(3), End: at(5)}}},
				{Step: 2, Name: "health", Start: at(4), End: at(6), Result: fleet.StepOK, Attempts: []fleet.Attempt{{Start: at(4), End: at(6)}}},
			},
		},
	}
	done := *req
	done.FinishedAt = h.FinishedAt
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error { return l.FinishRequest(f.ctx(), &done, h, rev) })

	list := f.run("", "history")
	require.Equal(t, ExitOK, list.code, list.stderr)
	require.Contains(t, list.stdout, "2026-01-02T10:00:00Z")

	for _, arg := range []string{"2026-01-02T10:00:00Z", "2026.01.02-1"} {
		r := f.run("", "history", "show", arg)
		require.Equal(t, ExitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, "update to 2026.01.02-1, started 2026-01-02T10:00:00Z, completed after 30s")
		require.Regexp(t, `1 packages\s+boot-0\s+\+1s\s+\+3s\s+2s\s+1\s+ok\s+-`, r.stdout)
		require.Regexp(t, `\n\s+boot-1\s+\+3s\s+\+5s\s+2s\s+1\s+ok`, r.stdout)
		require.Regexp(t, `2 health\s+boot-0\s+\+4s\s+\+20s\s+16s\s+2\s+ok\s+attempt 1: exit status 3: E: coredns is not up`, r.stdout)
	}

	r := f.run("", "-o", "json", "history", "show", "2026.01.02-1")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var got fleet.HistoryRecord
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Len(t, got.Timeline["boot-0"][1].Attempts, 2)

	for _, arg := range []string{"2025-01-01T00:00:00Z", "1999.01.01-1"} {
		r := f.run("", "history", "show", arg)
		require.Equal(t, ExitUsage, r.code, r.stdout)
		require.Contains(t, r.stderr, "ferry history")
	}
}
