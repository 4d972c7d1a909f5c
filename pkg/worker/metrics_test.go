package worker

import (
	"testing"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestMetricsPassPrometheusLint: the worker's metrics follow Prometheus's
// naming and help rules (the linter promtool check metrics runs), and
// every counter exists at 0 from the start.
func TestMetricsPassPrometheusLint(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	problems, err := testutil.GatherAndLint(m.Registry)
	require.NoError(t, err)
	require.Empty(t, problems)
	n, err := testutil.GatherAndCount(m.Registry, "ferry_worker_self_upgrades_total", "ferry_worker_actions_total", "ferry_build_info")
	require.NoError(t, err)
	require.Equal(t, 2+5*2+1, n, "every result of every counter, at 0, and the build info")
	require.Equal(t, 1.0, testutil.ToFloat64(m.state.WithLabelValues("idle")), "a new worker is idle")
}

// TestStateShowsOneState: ferry_worker_state is 1 for the worker's state
// alone, through every change and a repeated one.
func TestStateShowsOneState(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	for _, st := range []fleet.State{fleet.StateRunning, fleet.StateRunning, fleet.StateAborted, fleet.StateIdle} {
		m.setState(st)
		for _, s := range fleet.ServerStates {
			want := 0.0
			if s == st {
				want = 1
			}
			require.Equal(t, want, testutil.ToFloat64(m.state.WithLabelValues(string(s))), "%s after setting %s", s, st)
		}
	}
}
