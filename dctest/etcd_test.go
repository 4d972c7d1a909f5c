package dctest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// TestEtcdLeaderKilledDuringRollout: the raft leader of the three-member
// etcd cluster is SIGKILLed while the fleet runs a step. The cluster
// elects another; the workers, the updaters and the admin CLI ride the
// election out (a write the CLI makes during it is retried), and the
// rollout finishes with no stop and no recover.
func TestEtcdLeaderKilledDuringRollout(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitStep("boot-0", "services")

	leader := d.raftLeader()
	leader.Kill()
	t.Logf("killed the raft leader %s", leader.Name)
	// The election is still on: the write may meet it, and is retried.
	_, stderr, code := d.Ferry(d.ctx, "config", "set", "check-update-interval", "11m")
	require.Equal(t, 0, code, stderr)
	t.Logf("ferry config set during the election: %q", stderr)

	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
	hist := d.history()
	require.Len(t, hist, 2, "no stop, no recover")
	for _, h := range hist {
		require.Equal(t, fleet.ResultCompleted, h.Result, h.Version)
	}
	require.Equal(t, "11m", strings.TrimSpace(d.ferry("config", "get", "check-update-interval")))
	require.NoError(t, leader.Restart())
}

// raftLeader is the etcd member that leads the cluster now.
func (d *dc) raftLeader() *harness.EtcdMember {
	d.t.Helper()
	var leader *harness.EtcdMember
	waitFor(d.t, time.Minute, "an etcd member to lead", func() (bool, string) {
		var seen []string
		for _, m := range d.Etcd {
			if !m.Running() {
				seen = append(seen, m.Name+" down")
				continue
			}
			ctx, cancel := context.WithTimeout(d.ctx, within(2*time.Second))
			resp, err := d.Store.Client().Status(ctx, m.ClientURL)
			cancel()
			if err == nil && resp.Leader == resp.Header.MemberId {
				leader = m
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%s: %v", m.Name, err))
		}
		return false, strings.Join(seen, ", ")
	})
	return leader
}
