package dctest

import (
	"net/http"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// TestGitHubFlakyDuringRollout: while the fleet upgrades itself and rolls
// out the plan, GitHub answers the workers' package downloads with bursts
// of 502s, 429s with Retry-After and 403 rate limits. Every transient error
// is retried; the rollout finishes with no stop and no recover. The workers
// ask the GitHub API nothing: the updater resolved each release once.
func TestGitHubFlakyDuringRollout(t *testing.T) {
	d := start(t)
	before := d.GitHub.Counters()
	// A burst of five in a row: a download backs off 1s, 2s, 4s, 8s.
	burst := func() {
		d.GitHub.FailNext(2, http.StatusBadGateway)
		d.GitHub.RateLimitSecondary(1, http.StatusTooManyRequests, time.Second)
		d.GitHub.RateLimitPrimary(1, http.StatusForbidden, time.Second)
		d.GitHub.FailNext(1, http.StatusServiceUnavailable)
	}
	// The faults hit the packages' downloads, which only workers make:
	// the first rollout downloads the plan's extra package from GitHub;
	// the second is the self-upgrade.
	d.GitHub.ScopeFaults("_amd64.deb")
	burst()
	d.bootstrap("staging", three...)
	d.waitCompleted(N)
	burst()
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.GitHub.ClearFaults()

	d.requireInstalled(N1, three...)
	hist := d.history()
	require.Len(t, hist, 2, "no stop, no recover")
	for _, h := range hist {
		require.Equal(t, fleet.ResultCompleted, h.Result, h.Version)
	}
	after := d.GitHub.Counters()
	served := map[int]int{http.StatusBadGateway: 4, http.StatusTooManyRequests: 2, http.StatusForbidden: 2, http.StatusServiceUnavailable: 2}
	for code, n := range served {
		require.Equal(t, before.ByStatus[code]+n, after.ByStatus[code], "every injected %d was served to a worker's download, and retried", code)
	}
}
