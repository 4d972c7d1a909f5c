package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// instant is an Operator whose actions take no time, so that a rollout's
// wall time is coordination alone.
type instant struct{}

func (instant) FetchUpgrade(context.Context, *fleet.Config, *fleet.UpdateRequest) (Fetched, error) {
	return Fetched{}, nil
}
func (instant) Discard(Fetched) {}
func (instant) InstallUpgrade(context.Context, Fetched) error {
	return nil
}
func (instant) RunAction(context.Context, RunContext, *artifacts.Action) error {
	return nil
}
func (instant) Verify(context.Context, string, []artifacts.Step) error                { return nil }
func (instant) Repair(context.Context) (string, error)                                { return "", nil }
func (instant) CheckHealth(context.Context, RunContext, *artifacts.HealthCheck) error { return nil }
func (instant) Prefetch(context.Context, RunContext, []artifacts.Step)                {}
func (instant) Announce(context.Context)                                              {}

// BenchmarkCoordination reports the wall time of a 3-step lockstep rollout
// on N workers whose steps do nothing: the coordination overhead.
func BenchmarkCoordination(b *testing.B) {
	for _, n := range []int{5, 100, 1000} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			prefix := fmt.Sprintf("/bench/%s/%d/", b.Name(), time.Now().UnixNano())
			plan := &artifacts.Plan{}
			for i := 1; i <= 3; i++ {
				plan.Steps = append(plan.Steps, artifacts.Step{Name: fmt.Sprintf("s%d", i), Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "true"}}}})
			}
			admin, err := storage.New(etcdtest.Client(b), prefix)
			if err != nil {
				b.Fatal(err)
			}
			stand := fleettest.StandIn(b, admin)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ids []string
			// One etcd client per 25 workers, as if they were on 25 hosts.
			var st *storage.Storage
			for i := 0; i < n; i++ {
				if i%25 == 0 {
					if st, err = storage.New(etcdtest.Client(b), prefix); err != nil {
						b.Fatal(err)
					}
				}
				id := fmt.Sprintf("w%04d", i)
				ids = append(ids, id)
				w := New(Options{Storage: st, ID: id, Version: "1.0.0", Plan: plan, Operator: instant{}, DataDir: b.TempDir(), Logger: quiet})
				go w.Run(ctx)
			}
			b.ResetTimer()
			var total time.Duration
			for r := 0; r < b.N; r++ {
				req := &fleet.UpdateRequest{Version: "1.0.0", Servers: ids, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
				began := time.Now()
				fleettest.AsLeader(b, admin, func(l *storage.Leader) error { return l.StartRequest(ctx, req) })
				cctx, stop := context.WithCancel(ctx)
				go stand.Coordinate(cctx, req)
				waitAllCompleted(b, admin, len(ids))
				stop()
				total += time.Since(began)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/rollout")
			b.ReportMetric(total.Seconds()/float64(b.N)/3*1000, "ms/step")
		})
	}
}

func waitAllCompleted(b *testing.B, st *storage.Storage, n int) {
	ctx := context.Background()
	for {
		resp, err := st.Client().Get(ctx, st.Prefix()+"status/servers/", clientv3.WithPrefix())
		if err != nil {
			b.Fatal(err)
		}
		done := 0
		for _, kv := range resp.Kvs {
			if len(kv.Value) > 0 && strings.Contains(string(kv.Value), `"cond":"completed"`) {
				done++
			}
		}
		if done == n {
			return
		}
		if err := st.WaitChange(ctx, resp.Header.Revision); err != nil {
			b.Fatal(err)
		}
	}
}
