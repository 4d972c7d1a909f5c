package dctest

import (
	"fmt"
	"testing"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// failsOn is a run action that fails its first n runs on one server (a
// service that takes a while to come up) and succeeds after.
func failsOn(dir, server string, n int) artifacts.Action {
	script := fmt.Sprintf(`[ "$FERRY_SERVER" = %[2]s ] || exit 0
c=%[1]s/attempts; i=$(( $(cat $c 2>/dev/null || echo 0) + 1 )); echo $i > $c
if [ $i -le %[3]d ]; then echo "E: dns.service is not answering yet (check $i)" >&2; exit 3; fi`, dir, server, n)
	return artifacts.Action{Run: &artifacts.RunAction{Command: "sh", Args: []string{"-c", script}}}
}

// TestStepRetriesTransientFailure: N1's plan has a health step with
// retries; on boot-1 its check fails twice, then passes. The step is tried
// again there, the fleet is never stopped, the rollout completes, and
// `ferry history show` shows the three attempts with the two errors.
func TestStepRetriesTransientFailure(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		s.Plan.Steps = append(s.Plan.Steps, artifacts.Step{
			Name: "health", Strategy: artifacts.Lockstep, Retries: 3, RetryBackoff: "1s", Timeout: "1m",
			Actions: []artifacts.Action{failsOn(t.TempDir(), "boot-1", 2)},
		})
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)

	h := d.history()
	require.Equal(t, N1, h[0].Version)
	require.Equal(t, storage.ResultCompleted, h[0].Result, "no stop")
	require.Len(t, h, 2, "one rollout to N1, never stopped and started again")
	out := d.ferry("history", "show", N1)
	t.Logf("ferry history show %s:\n%s", N1, out)
	require.Regexp(t, `5 health\s+boot-0\s+\S+\s+\S+\s+\S+\s+1\s+ok`, out)
	require.Regexp(t, `boot-1\s+\S+\s+\S+\s+\S+\s+3\s+ok\s+attempt 1: .*check 1.*; attempt 2: .*check 2`, out)
	var rec storage.StepRecord
	for _, r := range h[0].Timeline["boot-1"] {
		if r.Name == "health" {
			rec = r
		}
	}
	require.Len(t, rec.Attempts, 3)
	require.GreaterOrEqual(t, rec.Attempts[1].Start.Sub(rec.Attempts[0].End).Seconds(), 1.0, "backoff between attempts")
}
