package updater

import (
	"strings"
	"testing"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestMetricsPassPrometheusLint: the updater's metrics follow Prometheus's
// naming and help rules (the linter promtool check metrics runs), every
// counter exists at 0 from the start, and the build is labelled.
func TestMetricsPassPrometheusLint(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	problems, err := testutil.GatherAndLint(m.Registry)
	require.NoError(t, err)
	require.Empty(t, problems)
	n, err := testutil.GatherAndCount(m.Registry, "ferry_updater_rollouts_total", "ferry_updater_release_checks_total", "ferry_updater_notifications_total", "ferry_build_info")
	require.NoError(t, err)
	require.Equal(t, 6+4+3+1, n, "every result of every counter, at 0, and the build info")
	n, err = testutil.GatherAndCount(m.Registry, "ferry_updater_servers")
	require.NoError(t, err)
	require.Equal(t, len(fleet.ServerStates), n, "every server state, at 0")
	require.NoError(t, testutil.GatherAndCompare(m.Registry, strings.NewReader(`
# HELP ferry_updater_rollouts_total Finished rollouts by result.
# TYPE ferry_updater_rollouts_total counter
ferry_updater_rollouts_total{result="aborted"} 0
ferry_updater_rollouts_total{result="cleared"} 0
ferry_updater_rollouts_total{result="completed"} 0
ferry_updater_rollouts_total{result="dead-server"} 0
ferry_updater_rollouts_total{result="failed"} 0
ferry_updater_rollouts_total{result="timeout"} 0
`), "ferry_updater_rollouts_total"))
}
