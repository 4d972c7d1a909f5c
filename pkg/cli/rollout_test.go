package cli

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// TestRolloutPauseAndResume: pause needs a running rollout, holds it
// (status shows PAUSED), and resume lifts it; labels set by hand show in
// `ferry servers`.
func TestRolloutPauseAndResume(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "rollout", "pause")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "no rollout is running")

	_, err := f.st.JoinServer(f.ctx(), "boot-0", &fleet.ServerInfo{})
	require.NoError(t, err)
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"boot-0"}, StartedAt: time.Now().UTC(), Reason: fleet.ReasonUpdate}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error { return l.StartRequest(f.ctx(), req) })

	r = f.run("", "rollout", "pause", "--reason", "change freeze")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "pauses at its next step boundary")
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.NotNil(t, snap.Pause)
	require.Equal(t, "change freeze", snap.Pause.Reason)
	r = f.run("", "status")
	require.Contains(t, r.stdout, "PAUSED to 2")

	r = f.run("", "rollout", "resume")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "lifted the pause")
	snap, err = f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.Nil(t, snap.Pause)
	r = f.run("", "rollout", "resume")
	require.Contains(t, r.stdout, "not paused; nothing to resume")

	r = f.run("", "server", "label", "boot-0", "rack=r1", "role=tftp")
	require.Equal(t, ExitOK, r.code, r.stderr)
	r = f.run("", "server", "label", "boot-0", "role-")
	require.Equal(t, "boot-0: rack=r1\n", r.stdout)
	require.Regexp(t, `boot-0\s+no\s+.*rack=r1\n`, f.run("", "status").stdout, "status shows the labels")
	r = f.run("", "server", "label", "boot-9", "rack=r1")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "ferry join boot-9")
	r = f.run("", "server", "label", "boot-0", "rack")
	require.Equal(t, ExitUsage, r.code)
}

// TestPauseReasonShown: a pause says who paused, why and since when in
// `ferry status`, its JSON and the updater's account of the rollout; a
// pause and a canary hold are lifted one resume at a time.
func TestPauseReasonShown(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	req := &fleet.UpdateRequest{Version: "2", Servers: []string{"boot-0", "boot-1"}, StartedAt: time.Now().UTC(), Reason: fleet.ReasonUpdate}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error { return l.StartRequest(f.ctx(), req) })
	// boot-1 waits behind the canary of step 1, which boot-0 took.
	require.NoError(t, f.st.PutStatus(f.ctx(), "boot-1", &fleet.UpdateStatus{Version: "2", Rollout: req.StartedAt, Step: 1, StepName: "restart",
		Phase: fleet.PhasePaused, Cond: fleet.CondRunning, Canary: 1, Pause: "manual", UpdatedAt: time.Now()}))

	r := f.run("", "rollout", "pause", "--reason", "DNS looks odd on boot-0")
	require.Equal(t, ExitOK, r.code, r.stderr)
	r = f.run("", "status")
	require.Regexp(t, `Paused:\s+by ferry rollout pause, \S+@\S+, since \S+ \(\S+ ago\): DNS looks odd on boot-0; `+"`ferry rollout resume`"+` lifts it`, r.stdout)
	require.Contains(t, r.stdout, "Canary:         the rest wait behind the canary of step 1")
	r = f.run("", "-o", "json", "status")
	var v fleetview.Fleet
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	require.NotNil(t, v.Pause)
	require.Equal(t, "DNS looks odd on boot-0", v.Pause.Reason)
	require.Contains(t, v.Pause.By, "ferry rollout pause, ")
	require.Equal(t, 1, v.CanaryHold)

	// The first resume lifts the operator's pause and says the canary
	// still holds; the second lets the rest follow the canary.
	r = f.run("", "rollout", "resume")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "lifted the pause of the rollout to 2 (by ferry rollout pause, ")
	require.Contains(t, r.stdout, ": DNS looks odd on boot-0)")
	require.Contains(t, r.stdout, "still wait behind the canary of step 1")
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.Nil(t, snap.Pause)
	require.Nil(t, snap.Resume, "the canary is not resumed with the pause")
	r = f.run("", "rollout", "resume")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "after the canary of step 1")
	snap, err = f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.NotNil(t, snap.Resume)
	require.Equal(t, 1, snap.Resume.Step)
}
