package cli

import (
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
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
