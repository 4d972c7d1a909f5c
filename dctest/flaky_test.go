package dctest

import (
	"net/http"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// TestGitHubFlakyDuringRollout: while the fleet upgrades itself and rolls
// out the plan, GitHub answers bursts of 502s, 429s with Retry-After (and
// no documentation_url handling needed) and 403 rate limits. Every
// transient error is retried; the rollout finishes with no stop and no
// recover.
func TestGitHubFlakyDuringRollout(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	before := d.GitHub.Counters().ByStatus
	burst := func() {
		d.GitHub.FailNext(3, http.StatusBadGateway)
		d.GitHub.RateLimitSecondary(2, http.StatusTooManyRequests, 2*time.Second)
		d.GitHub.RateLimitPrimary(2, http.StatusForbidden, 2*time.Second)
		d.GitHub.FailNext(2, http.StatusServiceUnavailable)
	}
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	// The next API requests fail: the workers' release lookups of the
	// self-upgrade, then, again, the plan's package downloads.
	d.waitState(N1, "running")
	burst()
	d.waitStep("boot-0", "packages")
	burst()
	d.waitCompleted(N1)
	d.GitHub.ClearFaults()

	d.requireInstalled(N1, three...)
	hist := d.history()
	require.Len(t, hist, 2, "no stop, no recover")
	require.Equal(t, storage.ResultCompleted, hist[0].Result)
	after := d.GitHub.Counters().ByStatus
	for _, code := range []int{http.StatusBadGateway, http.StatusTooManyRequests, http.StatusForbidden} {
		require.Greater(t, after[code], before[code], "GitHub answered %d during the rollout", code)
	}
}
