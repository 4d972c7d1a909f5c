package worker

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/peer"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// githubCost is what one rollout asked of GitHub.
type githubCost struct {
	// API is the requests that count against the rate limit; Web the
	// web downloads (browser_download_url), which do not.
	API, Web int
	// Bytes is the bytes of packages GitHub served: what crossed the
	// site's uplink.
	Bytes int64
}

// githubRequestsPerRollout runs the whole rollout of v2 on n servers that
// run v1, against the GitHub fake, and counts what it asked of GitHub: the
// real updater finds the release and starts the rollout, and n workers
// upgrade themselves through real dpkg (each with its own root), start
// again as v2 and run a plan that installs an extra package from another
// repository's release. With peers, each worker has the peer layer (a
// cache served over HTTP): each package crosses GitHub once for the site.
func githubRequestsPerRollout(tb testing.TB, n int, peers bool) githubCost {
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
	running := make([]atomic.Pointer[Worker], n)
	for i := range n {
		ids[i] = fmt.Sprintf("boot-%02d", i)
		root, err := debtest.NewRoot(filepath.Join(e.dir, "root-"+ids[i]))
		require.NoError(tb, err)
		inst := &deb.Installer{Command: root.InstallCommand(), Log: quiet, Output: filepath.Join(e.dir, ids[i]+"-dpkg.out")}
		require.NoError(tb, inst.Install(e.ctx(), ferryV1))
		o := *e.ops
		o.DataDir, o.Installer, o.Metrics, o.Set, o.Storage = filepath.Join(e.dir, "data-"+ids[i]), inst, NewMetrics(), set, e.st
		if peers {
			o.Peers = peerLayer(tb, e.st, ids[i], filepath.Join(o.DataDir, "peer"), &running[i])
		}
		ops[i] = &o
		_, err = e.st.JoinServer(e.ctx(), ids[i], &fleet.ServerInfo{})
		require.NoError(tb, err)
		first[i] = e.start(ids[i], v1, &set.Plan, ops[i])
		running[i].Store(first[i].w)
	}

	e.gh.fake.ResetCounters()
	e.startUpdater()
	// A worker that upgraded itself is started again at once, as systemd
	// does, and takes up the rollout at v2.
	upgraded := make(chan int, n)
	for i, w := range first {
		go func() {
			<-w.done
			upgraded <- i
		}()
	}
	for range n {
		select {
		case i := <-upgraded:
			require.ErrorIs(tb, first[i].err, ErrUpgraded, ids[i])
			running[i].Store(e.start(ids[i], v2, &set.Plan, ops[i]).w)
		case <-time.After(2 * time.Minute):
			statuses, _ := fleettest.GetStatuses(e.ctx(), e.st)
			tb.Fatalf("not every server upgraded itself: statuses %+v", statuses)
		}
	}
	for _, id := range ids {
		e.waitStatus(id, cond(fleet.CondCompleted))
	}
	c := e.gh.fake.Counters()
	downloads := n
	if peers {
		downloads = 1
	}
	cost := githubCost{API: c.Counted, Web: c.Web}
	for _, a := range []struct{ repo, tag, name string }{
		{repo, release.PrefixRelease + v2, release.DebAsset(v2)},
		{"acme/tools", "v1.2.0", "acme-tools_1.2.0_amd64.deb"},
	} {
		require.Equal(tb, downloads, c.Downloads[a.name], "downloads of %s from GitHub, for %d servers (peers: %v)", a.name, n, peers)
		data, ok := e.gh.fake.Asset(a.repo, a.tag, a.name)
		require.True(tb, ok, a.name)
		require.EqualValues(tb, int64(downloads)*int64(len(data)), c.BytesServed[a.name], "bytes of %s GitHub served", a.name)
		cost.Bytes += c.BytesServed[a.name]
	}
	return cost
}

// peerLayer gives a worker the peer layer: a cache under dir, served on
// loopback, announced under the lease of the worker that runs now.
func peerLayer(tb testing.TB, st *storage.Storage, id, dir string, running *atomic.Pointer[Worker]) *peer.Fetcher {
	cache := &peer.Cache{Dir: dir}
	srv := httptest.NewServer(&peer.Server{Cache: cache})
	tb.Cleanup(srv.Close)
	return &peer.Fetcher{Cache: cache, Storage: st, ID: id, URL: srv.URL, Log: quiet, Lease: func() clientv3.LeaseID {
		if w := running.Load(); w != nil {
			return w.Lease()
		}
		return clientv3.NoLease
	}}
}

// TestGitHubRequestsDoNotGrowWithTheFleet: the updater resolves the release
// once; workers make no API request, for their own package or for the
// plan's; so a larger fleet asks the GitHub API nothing more. (make bench
// prints the figures for 3 and 30 servers.)
func TestGitHubRequestsDoNotGrowWithTheFleet(t *testing.T) {
	t.Parallel()
	small, large := githubRequestsPerRollout(t, 2, true), githubRequestsPerRollout(t, 5, true)
	t.Logf("2 servers: %+v; 5 servers: %+v", small, large)
	require.Positive(t, small.API, "the updater asked the API")
	require.Equal(t, small.API, large.API, "API requests per rollout (the updater's; the workers make none): 2 servers %+v, 5 servers %+v", small, large)
	require.Equal(t, small.Web, large.Web, "web downloads: each package once for the site, whatever its size")
}

// BenchmarkGitHubRequestsPerRollout prints what one whole rollout (the
// updater's release check, every self-upgrade and the plan's extra
// package) asks of GitHub for 3 and for 30 servers: API requests, which
// count against the rate limit (60 an hour without a token), and web
// downloads, which do not.
func BenchmarkGitHubRequestsPerRollout(b *testing.B) {
	for _, n := range []int{3, 30} {
		for _, peers := range []bool{true, false} {
			b.Run(fmt.Sprintf("servers=%d/peers=%v", n, peers), func(b *testing.B) {
				var c githubCost
				for range b.N {
					c = githubRequestsPerRollout(b, n, peers)
				}
				b.ReportMetric(float64(c.API), "api-requests/rollout")
				b.ReportMetric(float64(c.Web), "web-downloads/rollout")
				b.ReportMetric(float64(c.Bytes), "uplink-bytes/rollout")
			})
		}
	}
}
