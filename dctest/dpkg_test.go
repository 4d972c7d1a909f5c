package dctest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// TestWorkerKilledDuringDpkg kills a worker while dpkg, installing the
// worker's own upgrade, sits between unpack and configure (a postinst that
// waits for a gate). The restarted worker is the new binary, but dpkg has
// not finished: it must wait for dpkg and finish the install before it
// runs or reports anything.
func TestWorkerKilledDuringDpkg(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	gate := filepath.Join(d.Dir, "postinst-gate")
	gated, err := harness.GatedPackage(build.Debs[N1], gate, d.Dir)
	require.NoError(t, err)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2), Deb: gated}))

	s, err := d.Server("boot-1")
	require.NoError(t, err)
	waitFor(t, 2*time.Minute, "boot-1's dpkg to run the postinst of "+N1, func() (bool, string) {
		st, err := s.Dpkg(d.ctx, "ferry")
		return err == nil && st.Condition() == "half-configured" && st.Version == N1, fmt.Sprintf("%+v (%v)", st, err)
	})
	starts := s.Worker.Starts()
	require.True(t, s.KillWorker(), "the worker was waiting for dpkg")

	// The new binary starts, finds the install unfinished, and says so.
	var seen *fleet.UpdateStatus
	waitFor(t, 2*time.Minute, "the restarted worker to report that it repairs", func() (bool, string) {
		statuses, err := fleettest.GetStatuses(d.ctx, d.Store)
		if err != nil {
			return false, err.Error()
		}
		seen = statuses["boot-1"]
		require.False(t, seen != nil && seen.Version == N1 && seen.Cond == fleet.CondCompleted,
			"boot-1 reported completed while dpkg had ferry half-configured")
		return seen != nil && seen.Phase == fleet.PhaseRepairing, "boot-1's status " + jsonOf(seen)
	})
	require.Greater(t, s.Worker.Starts(), starts)
	require.Contains(t, seen.Message, "half-configured")
	require.NotEqual(t, N1, s.Marker(), "no step ran over the half-configured package")
	st, err := s.Dpkg(d.ctx, "ferry")
	require.NoError(t, err)
	require.False(t, st.Installed(), "dpkg is still in the postinst")

	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
	d.requireSound(three...)
	hist := d.history()
	require.Len(t, hist, 2, "no stop, no recover")
	require.Equal(t, fleet.ResultCompleted, hist[0].Result)
}

// requireSound checks that dpkg's database of every server is sound.
func (d *dc) requireSound(servers ...string) {
	d.t.Helper()
	for _, id := range servers {
		s, err := d.Server(id)
		require.NoError(d.t, err)
		audit, err := s.Audit(d.ctx)
		require.NoError(d.t, err)
		require.Empty(d.t, audit, "dpkg --audit on %s", id)
	}
}
