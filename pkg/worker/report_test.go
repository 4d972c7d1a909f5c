package worker

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestReportSizeDoesNotGrowWithThePlan: a worker's status report carries
// what changed since its last one, so the bytes of a step's report are
// the same at step 1 and at step 30: each ended step's record goes out
// once, beside the report that follows it, and the rollout's records are
// all there at the end.
func TestReportSizeDoesNotGrowWithThePlan(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
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
		resp := <-wch
		require.NoError(t, resp.Err())
		byRev := map[int64]*write{}
		var order []int64
		for _, ev := range resp.Events {
			var fields map[string]json.RawMessage
			if ev.Type != clientv3.EventTypePut || json.Unmarshal(ev.Kv.Value, &fields) != nil {
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
			case fields["result"] != nil && fields["start"] != nil:
				var r fleet.StepRecord
				require.NoError(t, json.Unmarshal(ev.Kv.Value, &r))
				w.records = append(w.records, r)
			}
		}
		for _, r := range order {
			if w := byRev[r]; w.status != nil {
				writes = append(writes, *w)
			} else {
				require.Empty(t, w.records, "a step record written without its status")
			}
		}
	}

	// The arrivals: "waiting at step k", one per server and step.
	sizes, bytes := map[int][]int{}, map[int][]int{}
	for _, w := range writes {
		if w.status.Phase != fleet.PhaseWaiting || w.status.Cond != fleet.CondRunning {
			continue
		}
		k := w.status.Step
		sizes[k] = append(sizes[k], w.size)
		bytes[k] = append(bytes[k], w.bytes)
		if k == 1 {
			require.Empty(t, w.records, "nothing ended before step 1")
			continue
		}
		require.Len(t, w.records, 1, "the arrival at step %d carries the record of step %d alone", k, k-1)
		require.Equal(t, k-1, w.records[0].Step)
		require.Equal(t, fleet.StepOK, w.records[0].Result)
	}
	require.Len(t, sizes, steps)
	first, last := slices.Min(sizes[1]), slices.Max(sizes[steps])
	// "step":1 and "step_name":"step1" are one character shorter each.
	require.LessOrEqual(t, last-first, 2, "a status report at step %d is %d bytes, at step 1 %d", steps, last, first)
	require.LessOrEqual(t, slices.Max(bytes[steps])-slices.Min(bytes[2]), 4, "what a step's arrival writes does not grow with the step: %v at 2, %v at %d", bytes[2], bytes[steps], steps)

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
