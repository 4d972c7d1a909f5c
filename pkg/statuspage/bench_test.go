package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkStatusPageView measures one refresh of the page for a fleet in
// the middle of a rollout: the read of etcd, the view and its JSON. The
// reference, measured in the same run, is one plain range read of the
// fleet's prefix, which the view cannot do without.
func BenchmarkStatusPageView(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			ctx := context.Background()
			st, err := storage.New(etcdtest.Client(b), etcdtest.Prefix(b))
			if err != nil {
				b.Fatal(err)
			}
			req := &fleet.UpdateRequest{Version: "2", StartedAt: time.Now().UTC(), Reason: "update"}
			for i := range n {
				req.Servers = append(req.Servers, fmt.Sprintf("boot-%04d", i))
			}
			fleettest.AsLeader(b, st, func(l *storage.Leader) error { return l.StartRequest(ctx, req) })
			for i, id := range req.Servers {
				if _, err := st.JoinServer(ctx, id, &fleet.ServerInfo{Labels: map[string]string{"rack": fmt.Sprintf("r%d", i%20)}}); err != nil {
					b.Fatal(err)
				}
				s := &fleet.UpdateStatus{Version: "2", Step: 1 + i%4, StepName: "services", Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, Message: "installing acme-tools 1.0.0", UpdatedAt: time.Now(), Rollout: req.StartedAt}
				if err := st.PutStatus(ctx, id, s); err != nil {
					b.Fatal(err)
				}
			}
			page := New(Options{Store: st, ServedBy: "boot-0000"})

			var size int
			began := time.Now()
			for range b.N {
				p := page.read(ctx)
				if !p.Etcd.Reachable {
					b.Fatal(p.Etcd.Error)
				}
				data, err := json.Marshal(p)
				if err != nil {
					b.Fatal(err)
				}
				size = len(data)
			}
			view := time.Since(began) / time.Duration(b.N)

			began = time.Now()
			for range b.N {
				if _, err := st.Client().Get(ctx, st.Prefix(), clientv3.WithPrefix()); err != nil {
					b.Fatal(err)
				}
			}
			raw := time.Since(began) / time.Duration(b.N)
			b.ReportMetric(float64(view.Microseconds())/1000, "ms/view")
			b.ReportMetric(float64(raw.Microseconds())/1000, "ms/plain-get")
			b.ReportMetric(float64(size)/1024, "KiB/view")
			b.ReportMetric(float64(view)/float64(raw), "view/plain-get")
		})
	}
}
