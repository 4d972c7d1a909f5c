package dctest

import (
	"net/http"
	"sync"
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
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitState(N1, "running")

	// Bursts, each a few requests long, a second and a half apart, from
	// the start of the rollout to its end.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bursts := []func(){
			func() { d.GitHub.FailNext(3, http.StatusBadGateway) },
			func() { d.GitHub.RateLimitSecondary(2, http.StatusTooManyRequests, 2*time.Second) },
			func() { d.GitHub.RateLimitPrimary(2, http.StatusForbidden, 2*time.Second) },
			func() { d.GitHub.FailNext(2, http.StatusServiceUnavailable) },
		}
		for i := 0; ; i++ {
			bursts[i%len(bursts)]()
			select {
			case <-stop:
				return
			case <-time.After(1500 * time.Millisecond):
			}
		}
	}()
	d.waitCompleted(N1)
	close(stop)
	wg.Wait()
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
