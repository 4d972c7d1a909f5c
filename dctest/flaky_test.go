package dctest

import (
	"net/http"
	"strings"
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
	before := d.GitHub.Counters().ByStatus
	burst := func() {
		d.GitHub.FailNext(3, http.StatusBadGateway)
		d.GitHub.RateLimitSecondary(2, http.StatusTooManyRequests, 2*time.Second)
		d.GitHub.RateLimitPrimary(2, http.StatusForbidden, 2*time.Second)
		d.GitHub.FailNext(2, http.StatusServiceUnavailable)
	}
	// The faults hit the workers' release and asset lookups, not the
	// updater's release list, so that each rollout starts at once. The
	// first rollout downloads the plan's extra package from GitHub; the
	// second is the self-upgrade.
	d.GitHub.ScopeFaults("/releases/")
	burst()
	d.bootstrap("staging", three...)
	burst()
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.GitHub.ClearFaults()

	d.requireInstalled(N1, three...)
	hist := d.history()
	require.Len(t, hist, 2, "no stop, no recover")
	for _, h := range hist {
		require.Equal(t, storage.ResultCompleted, h.Result, h.Version)
	}
	after := d.GitHub.Counters().ByStatus
	for _, code := range []int{http.StatusBadGateway, http.StatusTooManyRequests, http.StatusForbidden} {
		require.Greater(t, after[code], before[code], "GitHub answered %d during the rollout", code)
	}
	retried := 0
	for _, id := range three {
		s, err := d.Server(id)
		require.NoError(t, err)
		retried += strings.Count(s.Log("ferry-worker"), "transient error; retrying")
	}
	require.Positive(t, retried, "the workers met the errors and retried")
}
