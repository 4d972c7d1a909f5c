package storage

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// TestStartReadsNoRequest: a worker woken by a new request takes it from
// its watch, and reads its snapshot and starts its rollout watch without
// reading the request again, so that a thousand workers that start a
// rollout do not read the list of a thousand servers each; a key that
// changed in between is read, and seen.
func TestStartReadsNoRequest(t *testing.T) {
	t.Parallel()
	admin := newTestStorage(t)
	ctx := testContext(t)
	elec := campaign(t, ctx, admin)
	var servers []string
	for i := range 200 {
		servers = append(servers, fmt.Sprintf("server-with-a-long-name-%03d", i))
	}

	for _, paused := range []bool{false, true} {
		t.Run(fmt.Sprintf("paused=%v", paused), func(t *testing.T) {
			var read atomic.Int64 // bytes of values in read responses
			cli := etcdtest.Client(t, grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				err := invoker(ctx, method, req, reply, cc, opts...)
				count := func(r *pb.RangeResponse) {
					for _, kv := range r.GetKvs() {
						read.Add(int64(len(kv.Value)))
					}
				}
				switch r := reply.(type) {
				case *pb.RangeResponse:
					count(r)
				case *pb.TxnResponse:
					for _, op := range r.Responses {
						count(op.GetResponseRange())
					}
				}
				return err
			}))
			w, err := New(cli, admin.Prefix())
			require.NoError(t, err)

			before, err := admin.Client().Get(ctx, "ferry-test-no-such-key")
			require.NoError(t, err)
			req := &fleet.UpdateRequest{Version: "1", Servers: servers, StartedAt: time.Now().UTC()}
			changed := make(chan *RequestChange, 1)
			go func() {
				ch, err := w.WaitRequest(ctx, before.Header.Revision)
				if err == nil {
					changed <- ch
				}
			}()
			require.NoError(t, admin.AsLeader(elec.Key()).StartRequest(ctx, req))
			ch := <-changed
			snap, err := w.WorkerSnapshotAt(ctx, servers[7], ch)
			require.NoError(t, err)
			require.Equal(t, servers, snap.Request.Servers)
			if paused {
				// Between the snapshot and the watch.
				require.NoError(t, admin.PutPause(ctx, &fleet.Pause{Rollout: req.StartedAt, At: time.Now().UTC(), By: "test"}))
			}
			rw, err := w.WatchRolloutAt(ctx, snap)
			require.NoError(t, err)
			defer rw.Close()
			require.Equal(t, paused, rw.Paused())
			if !paused {
				data, err := encode(req)
				require.NoError(t, err)
				require.Less(t, read.Load(), int64(len(data)), "the worker read the request again")
			}

			// The watch follows the rollout from there.
			require.NoError(t, admin.AsLeader(elec.Key()).PutResume(ctx, &fleet.Resume{Rollout: req.StartedAt, Step: 3, At: time.Now().UTC(), By: "test"}))
			res, err := rw.WaitFor(ctx, func() bool { return rw.Resumed() == 3 })
			require.NoError(t, err)
			require.Equal(t, BarrierPassed, res)
		})
	}
}

// A worker done with a rollout waits for the next request from where its
// rollout watch saw the request last, not from the rollout's start: only
// while the watch holds the request the worker started with.
func TestRequestUnchangedUntil(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)
	elec := campaign(t, ctx, st)
	leader := st.AsLeader(elec.Key())
	var servers []string
	for i := range fleet.LocalBarrier + 4 {
		servers = append(servers, fmt.Sprintf("s%02d", i))
	}
	req := &fleet.UpdateRequest{Version: "1", Servers: servers, StartedAt: time.Now().UTC()}
	require.NoError(t, leader.StartRequest(ctx, req))
	snap, err := st.WorkerSnapshot(ctx, servers[0])
	require.NoError(t, err)
	rw, err := st.WatchRolloutAt(ctx, snap)
	require.NoError(t, err)
	defer rw.Close()
	require.GreaterOrEqual(t, rw.RequestUnchangedUntil(snap.RequestRev), snap.Revision)
	require.Zero(t, rw.RequestUnchangedUntil(snap.RequestRev-1), "a request the watch does not hold")

	// A pause moves the revision on; the request is the same.
	require.NoError(t, st.PutPause(ctx, &fleet.Pause{Rollout: req.StartedAt, At: time.Now().UTC(), By: "test"}))
	_, err = rw.WaitFor(ctx, rw.Paused)
	require.NoError(t, err)
	pause, err := st.Client().Get(ctx, st.Prefix()+"status/pause")
	require.NoError(t, err)
	require.Equal(t, pause.Kvs[0].ModRevision, rw.RequestUnchangedUntil(snap.RequestRev))

	// The leader gives up on a server: the request changed, and the worker
	// must read it again.
	revised := *snap.Request
	revised.Failed = []fleet.FailedServer{{ID: servers[3], Step: 1, Reason: "test", At: time.Now().UTC()}}
	require.NoError(t, leader.ReviseRequest(ctx, &revised, snap.RequestRev))
	_, err = rw.WaitFor(ctx, func() bool { return len(rw.Request().Failed) == 1 })
	require.NoError(t, err)
	require.Zero(t, rw.RequestUnchangedUntil(snap.RequestRev), "the watch saw the request change")
}

// A worker woken by a request that etcd compacted away before it read its
// snapshot reads it anew, at the current revision. Not parallel: the
// compaction would cut the history that other tests watch from.
func TestWorkerSnapshotAtACompactedRevision(t *testing.T) {
	st := newTestStorage(t)
	ctx := testContext(t)
	elec := campaign(t, ctx, st)
	before, err := st.Client().Get(ctx, "ferry-test-no-such-key")
	require.NoError(t, err)
	req := &fleet.UpdateRequest{Version: "1", Servers: []string{"s0"}, StartedAt: time.Now().UTC()}
	require.NoError(t, st.AsLeader(elec.Key()).StartRequest(ctx, req))
	ch, err := st.WaitRequest(ctx, before.Header.Revision)
	require.NoError(t, err)

	pause := &fleet.Pause{Rollout: req.StartedAt, At: time.Now().UTC(), By: "test"}
	require.NoError(t, st.PutPause(ctx, pause))
	now, err := st.Client().Get(ctx, "ferry-test-no-such-key")
	require.NoError(t, err)
	_, err = st.Client().Compact(ctx, now.Header.Revision)
	require.NoError(t, err)

	snap, err := st.WorkerSnapshotAt(ctx, "s0", ch)
	require.NoError(t, err)
	require.Equal(t, "1", snap.Request.Version)
	require.GreaterOrEqual(t, snap.Revision, now.Header.Revision, "read at the current revision")
	require.NotNil(t, snap.Pause, "the pause written after the change is seen")
}
