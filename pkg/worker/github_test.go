package worker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/stretchr/testify/require"
)

// githubCost is what one rollout asked of GitHub.
type githubCost struct {
	// API is the requests that count against the rate limit; Web the
	// web downloads (browser_download_url), which do not.
	API, Web int
	// Workers is the API requests the workers made themselves.
	Workers int
}

// githubRequestsPerRollout runs the whole rollout of v2 on n servers that
// run v1, against the GitHub fake, and counts what it asked of GitHub: the
// real updater finds the release and starts the rollout, and n workers
// upgrade themselves through real dpkg (each with its own root), start
// again as v2 and run a plan that installs an extra package from another
// repository's release.
func githubRequestsPerRollout(tb testing.TB, n int) githubCost {
	e := newUpgradeEnv(tb)
	e.publish(v2, publishOptions{})
	tools := debtest.Build(tb, e.dir, debtest.Package{Name: "acme-tools", Version: "1.2.0"})
	toolsBytes, err := os.ReadFile(tools)
	require.NoError(tb, err)
	e.gh.fake.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v1.2.0", Assets: map[string][]byte{"acme-tools_1.2.0_amd64.deb": toolsBytes}})
	set := &artifacts.Set{
		Debs: []artifacts.Deb{{Name: "acme-tools", Repository: "acme/tools", Release: "v1.2.0", Asset: "acme-tools_1.2.0_amd64.deb", Version: "1.2.0", Size: int64(len(toolsBytes)), SHA256: sha(toolsBytes)}},
		Plan: artifacts.Plan{Steps: []artifacts.Step{{Name: "debs", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Debs: &artifacts.DebsAction{}}}}}},
	}
	require.NoError(tb, set.Validate())
	e.set(fleet.ConfigCheckUpdateInterval, "1h")

	ferryV1 := debtest.Build(tb, e.dir, ferryPackage(v1))
	ids := make([]string, n)
	ops := make([]*Ops, n)
	first := make([]*runningWorker, n)
	for i := range n {
		ids[i] = fmt.Sprintf("boot-%02d", i)
		root, err := debtest.NewRoot(filepath.Join(e.dir, "root-"+ids[i]))
		require.NoError(tb, err)
		inst := &deb.Installer{Command: root.InstallCommand(), Log: quiet, Output: filepath.Join(e.dir, ids[i]+"-dpkg.out")}
		require.NoError(tb, inst.Install(e.ctx(), ferryV1))
		o := *e.ops
		o.DataDir, o.Installer, o.Metrics, o.Set, o.Storage = filepath.Join(e.dir, "data-"+ids[i]), inst, NewMetrics(), set, e.st
		ops[i] = &o
		_, err = e.st.JoinServer(e.ctx(), ids[i], &fleet.ServerInfo{})
		require.NoError(tb, err)
		first[i] = e.start(ids[i], v1, &set.Plan, ops[i])
	}

	e.gh.fake.ResetCounters()
	e.startUpdater()
	for i, w := range first {
		select {
		case <-w.done:
			require.ErrorIs(tb, w.err, ErrUpgraded, ids[i])
		case <-time.After(2 * time.Minute):
			statuses, _ := fleettest.GetStatuses(e.ctx(), e.st)
			req, _, _ := fleettest.GetRequest(e.ctx(), e.st)
			tb.Fatalf("%s did not upgrade itself: status %+v, request %+v", ids[i], statuses[ids[i]], req)
		}
	}
	// Every request so far was the updater's or a worker's self-upgrade;
	// the workers' own API requests are told apart by a second count.
	afterUpgrade := e.gh.fake.Counters()
	for i := range n {
		e.start(ids[i], v2, &set.Plan, ops[i])
	}
	for _, id := range ids {
		e.waitStatus(id, cond(fleet.CondCompleted))
	}
	c := e.gh.fake.Counters()
	require.Equal(tb, n, c.Downloads[release.DebAsset(v2)], "each server downloaded the package once")
	require.Equal(tb, n, c.Downloads["acme-tools_1.2.0_amd64.deb"], "each server downloaded the extra package once")
	return githubCost{API: c.Counted, Web: c.Web, Workers: c.Counted - afterUpgrade.Counted}
}

// TestGitHubRequestsDoNotGrowWithTheFleet: the updater resolves the release
// once; workers make no API request, for their own package or for the
// plan's; so a larger fleet asks the GitHub API nothing more. (make bench
// prints the figures for 3 and 30 servers.)
func TestGitHubRequestsDoNotGrowWithTheFleet(t *testing.T) {
	t.Parallel()
	small, large := githubRequestsPerRollout(t, 2), githubRequestsPerRollout(t, 5)
	t.Logf("2 servers: %+v; 5 servers: %+v", small, large)
	require.Positive(t, small.API, "the updater asked the API")
	require.Equal(t, small.API, large.API, "API requests per rollout: 2 servers %+v, 5 servers %+v", small, large)
	require.Zero(t, large.Workers, "the workers made no API request after their upgrade")
}

// BenchmarkGitHubRequestsPerRollout prints what one whole rollout (the
// updater's release check, every self-upgrade and the plan's extra
// package) asks of GitHub for 3 and for 30 servers: API requests, which
// count against the rate limit (60 an hour without a token), and web
// downloads, which do not.
func BenchmarkGitHubRequestsPerRollout(b *testing.B) {
	for _, n := range []int{3, 30} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			var c githubCost
			for range b.N {
				c = githubRequestsPerRollout(b, n)
			}
			b.ReportMetric(float64(c.API), "api-requests/rollout")
			b.ReportMetric(float64(c.Web), "web-downloads/rollout")
		})
	}
}
