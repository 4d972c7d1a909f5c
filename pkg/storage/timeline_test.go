package storage

import (
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTimelineMergesWrites: each write of a server's step records holds
// those that changed; the timeline is the writes merged in the order they
// were made, per server, whatever the prefixes of the servers' names.
func TestTimelineMergesWrites(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	ctx := testContext(t)
	rollout := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return rollout.Add(time.Duration(s) * time.Second) }
	running := func(k, s int) fleet.StepRecord {
		return fleet.StepRecord{Step: k, Name: "s", Start: at(s), Result: fleet.StepRunning}
	}
	ok := func(k, s int) fleet.StepRecord {
		return fleet.StepRecord{Step: k, Name: "s", Start: at(s), End: at(s + 1), Result: fleet.StepOK}
	}

	require.NoError(t, st.PutStepRecords(ctx, "boot-1", rollout, []fleet.StepRecord{running(1, 0)}))
	require.NoError(t, st.PutStepRecords(ctx, "boot-10", rollout, []fleet.StepRecord{ok(1, 0), ok(2, 1)}))
	require.NoError(t, st.PutStepRecords(ctx, "boot-1", rollout, []fleet.StepRecord{ok(1, 0), running(2, 1)}))
	done := &fleet.UpdateStatus{Version: "1.0.0", Rollout: rollout, Step: 2, Phase: fleet.PhaseDone, Cond: fleet.CondCompleted}
	require.NoError(t, st.PutStatusAndRecords(ctx, "boot-1", done, []fleet.StepRecord{ok(2, 1)}))
	// An earlier ferry wrote all of a server's records in one key.
	_, err := st.Client().Put(ctx, st.timelineDir(rollout)+"boot-2", mustEncode(t, []fleet.StepRecord{ok(1, 0)}))
	require.NoError(t, err)

	want := map[string][]fleet.StepRecord{
		"boot-1":  {ok(1, 0), ok(2, 1)},
		"boot-10": {ok(1, 0), ok(2, 1)},
		"boot-2":  {ok(1, 0)},
	}
	all, err := st.Timeline(ctx, rollout)
	require.NoError(t, err)
	require.Equal(t, want, all)
	for id, recs := range want {
		one, err := st.ServerTimeline(ctx, rollout, id)
		require.NoError(t, err)
		require.Equal(t, recs, one, id)
	}
	none, err := st.ServerTimeline(ctx, rollout, "boot-3")
	require.NoError(t, err)
	require.Empty(t, none)

	// Three writes of boot-1's, each with what changed: no write carries a
	// record again that has not changed since.
	resp, err := st.Client().Get(ctx, st.timelineDir(rollout)+"boot-1/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 3)
}

func mustEncode(t *testing.T, v any) string {
	t.Helper()
	s, err := encode(v)
	require.NoError(t, err)
	return s
}
