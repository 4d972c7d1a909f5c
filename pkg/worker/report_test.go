package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// TestReportSizeDoesNotGrowWithThePlan: a worker's arrival at a barrier
// writes its status alone, the same bytes at step 1 and at step 30; the
// records of quick steps go out once, with the server's completion, and
// the rollout's records are all there at the end.
func TestReportSizeDoesNotGrowWithThePlan(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.timelineQuiet = time.Hour // no step is slow enough for a write of its own
	j := journal(filepath.Join(f.dir, "journal"))
	const steps = 30
	plan := lockstepPlan(j, slices.Repeat([]string{"true"}, steps)...)
	servers := []string{"boot-0", "boot-1"}

	// Every write under the prefix from here on, by revision.
	ctx := f.ctx()
	rev, err := f.st.Client().Get(ctx, "ferry-test-no-such-key")
	require.NoError(t, err)
	wch := f.st.Client().Watch(ctx, f.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev.Header.Revision+1))
	for _, s := range servers {
		f.start(s, v1, plan, ops(f))
	}
	f.request(v1, servers...)

	type write struct {
		status  *fleet.UpdateStatus
		size    int // of the status's value
		records []fleet.StepRecord
		bytes   int // of every value in the write
	}
	var writes []write
	completed := 0
	for completed < len(servers) {
		resp, open := <-wch
		require.True(t, open, "the watch of the writes ended (the test's time ran out)")
		require.NoError(t, resp.Err())
		byRev := map[int64]*write{}
		var order []int64
		for _, ev := range resp.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			// A server's step records are a list of them.
			var fields map[string]json.RawMessage
			var recs []fleet.StepRecord
			if json.Unmarshal(ev.Kv.Value, &fields) != nil && json.Unmarshal(ev.Kv.Value, &recs) != nil {
				continue
			}
			w := byRev[ev.Kv.ModRevision]
			if w == nil {
				w = &write{}
				byRev[ev.Kv.ModRevision] = w
				order = append(order, ev.Kv.ModRevision)
			}
			w.bytes += len(ev.Kv.Value)
			switch {
			case fields["cond"] != nil && fields["phase"] != nil:
				w.status, w.size = new(fleet.UpdateStatus), len(ev.Kv.Value)
				require.NoError(t, json.Unmarshal(ev.Kv.Value, w.status))
				if w.status.Cond == fleet.CondCompleted {
					completed++
				}
			case recs != nil:
				w.records = recs
			}
		}
		for _, r := range order {
			if w := byRev[r]; w.status != nil {
				writes = append(writes, *w)
			} else {
				require.Empty(t, w.records, "a step record written on its own, though no step was slow")
			}
		}
	}

	// The arrivals: "waiting at step k", one per server and step.
	sizes := map[int][]int{}
	for _, w := range writes {
		switch {
		case w.status.Phase == fleet.PhaseWaiting && w.status.Cond == fleet.CondRunning:
			k := w.status.Step
			sizes[k] = append(sizes[k], w.size)
			require.Equal(t, w.size, w.bytes, "the arrival at step %d writes the status alone", k)
		case w.status.Cond == fleet.CondCompleted:
			require.Len(t, w.records, steps, "the completion carries the records of the quick steps")
		}
	}
	require.Len(t, sizes, steps)
	first, last := slices.Min(sizes[1]), slices.Max(sizes[steps])
	// "step":1 and "step_name":"step1" are one character shorter each, and
	// updated_at drops its fraction's trailing zeros (up to 9 digits).
	require.LessOrEqual(t, last-first, 2+9, "a status report at step %d is %d bytes, at step 1 %d", steps, last, first)

	// The records are all there.
	recs, err := f.st.Timeline(ctx, writes[0].status.Rollout)
	require.NoError(t, err)
	for _, s := range servers {
		require.Len(t, recs[s], steps, s)
		for i, r := range recs[s] {
			require.Equal(t, i+1, r.Step)
			require.Equal(t, fmt.Sprintf("step%d", i+1), r.Name)
			require.Equal(t, fleet.StepOK, r.Result)
			require.Len(t, r.Attempts, 1)
		}
	}
}

// TestStepRecordsWrittenWhileAStepRuns: a step that takes a while has the
// records that changed written on their own, while it runs: the ended
// step's and the running one's, with its attempt, before any report
// carries them.
func TestStepRecordsWrittenWhileAStepRuns(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.timelineQuiet = 100 * time.Millisecond
	j := journal(filepath.Join(f.dir, "journal"))
	gate := filepath.Join(f.dir, "go-on")
	plan := lockstepPlan(j, "true", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", gate))
	f.start("boot-0", v1, plan, ops(f))
	req := f.request(v1, "boot-0")

	var recs []fleet.StepRecord
	require.Eventually(t, func() bool {
		var err error
		recs, err = f.st.ServerTimeline(f.ctx(), req.StartedAt, "boot-0")
		return err == nil && len(recs) == 2
	}, 20*time.Second, 20*time.Millisecond, "the records of a running step are written while it runs")
	require.Equal(t, fleet.StepOK, recs[0].Result)
	require.Equal(t, fleet.StepRunning, recs[1].Result)
	require.Len(t, recs[1].Attempts, 1)
	st := f.waitStatus("boot-0", func(s *fleet.UpdateStatus) bool { return s.Step == 2 })
	require.Equal(t, fleet.CondRunning, st.Cond, "no report carried them: the step still runs")

	require.NoError(t, os.WriteFile(gate, nil, 0o600))
	done := f.waitStatus("boot-0", cond(fleet.CondCompleted))
	recs = f.stepRecords(done, "boot-0")
	require.Len(t, recs, 2)
	require.Equal(t, fleet.StepOK, recs[1].Result, "the completion carries the ended step's record")
}

// TestSlowStepsWriteEachRecordOnce: in a rollout of steps slow enough to
// have their records written while they run, each write carries the
// records that changed since the one before (the step that ended and the
// one running), not every record so far: the bytes a server writes grow
// with the steps, not with their square. The timeline is still whole.
func TestSlowStepsWriteEachRecordOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.timelineQuiet = 50 * time.Millisecond
	j := journal(filepath.Join(f.dir, "journal"))
	const steps = 8
	plan := lockstepPlan(j, slices.Repeat([]string{"sleep 0.3"}, steps)...)

	ctx := f.ctx()
	rev, err := f.st.Client().Get(ctx, "ferry-test-no-such-key")
	require.NoError(t, err)
	wch := f.st.Client().Watch(ctx, f.prefix+"timeline/", clientv3.WithPrefix(), clientv3.WithRev(rev.Header.Revision+1))
	f.start("boot-0", v1, plan, ops(f))
	f.request(v1, "boot-0")
	done := f.waitStatus("boot-0", cond(fleet.CondCompleted))

	// Every write of records the rollout made, up to the completion's,
	// which is in the transaction of the status that says so.
	st, err := f.st.Client().Get(ctx, f.prefix+"status/servers/boot-0")
	require.NoError(t, err)
	require.Len(t, st.Kvs, 1)
	var carried []int
	for last := int64(0); last < st.Kvs[0].ModRevision; {
		resp, open := <-wch
		require.True(t, open, "the watch of the writes ended (the test's time ran out)")
		require.NoError(t, resp.Err())
		for _, ev := range resp.Events {
			var recs []fleet.StepRecord
			require.NoError(t, json.Unmarshal(ev.Kv.Value, &recs))
			carried = append(carried, len(recs))
			last = ev.Kv.ModRevision
		}
	}
	require.Greater(t, len(carried), steps/2, "the records of slow steps are written while they run: writes %v", carried)
	require.LessOrEqual(t, slices.Max(carried), 3, "records per write %v: a write carries what changed since the last", carried)

	recs := f.stepRecords(done, "boot-0")
	require.Len(t, recs, steps)
	for i, r := range recs {
		require.Equal(t, i+1, r.Step)
		require.Equal(t, fleet.StepOK, r.Result)
		require.Len(t, r.Attempts, 1)
	}
}

// A worker done with a rollout waits for the next request from where its
// rollout watch left off: a watch from the request's revision would make
// etcd read every revision of the rollout again.
func TestIdleWatchStartsAfterTheRollout(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	j := journal(filepath.Join(f.dir, "journal"))
	const steps = 3
	plan := lockstepPlan(j, slices.Repeat([]string{"true"}, steps)...)
	current := f.prefix + "status/current"
	// The revisions the worker's watches of the request alone start from.
	starts := make(chan int64, 16)
	spy := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return &watchSpy{ClientStream: s, key: current, starts: starts}, err
	})
	f.startOn(etcdtest.Client(t, spy), "boot-0", v1, plan, ops(f))
	require.Eventually(t, func() bool { return len(starts) > 0 }, 10*time.Second, 10*time.Millisecond, "the idle worker watches the request")
	<-starts

	f.request(v1, "boot-0")
	f.waitStatus("boot-0", cond(fleet.CondCompleted))
	req, err := f.st.Client().Get(f.ctx(), current)
	require.NoError(t, err)
	requestRev := req.Kvs[0].ModRevision
	select {
	case from := <-starts:
		// Each step's arrival is a write after the request.
		require.Greater(t, from, requestRev+steps, "the idle watch starts at the request's revision, %d", requestRev)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not watch the request again after the rollout")
	}
}

// watchSpy sends on starts the start revision of each watch of key alone
// that its stream creates.
type watchSpy struct {
	grpc.ClientStream
	key    string
	starts chan<- int64
}

func (s *watchSpy) SendMsg(m any) error {
	if r, ok := m.(*pb.WatchRequest); ok {
		if c := r.GetCreateRequest(); c != nil && string(c.Key) == s.key && len(c.RangeEnd) == 0 {
			s.starts <- c.StartRevision
		}
	}
	return s.ClientStream.SendMsg(m)
}
