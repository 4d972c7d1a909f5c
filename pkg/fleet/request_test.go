package fleet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMergeStepRecords(t *testing.T) {
	t.Parallel()
	at := func(s int) time.Time { return time.Date(2026, 12, 6, 10, 0, s, 0, time.UTC) }
	running := func(k, s int) StepRecord { return StepRecord{Step: k, Start: at(s), Result: StepRunning} }
	ok := func(k, s int) StepRecord { return StepRecord{Step: k, Start: at(s), End: at(s + 1), Result: StepOK} }
	for _, tc := range []struct {
		name        string
		into, later []StepRecord
		want        []StepRecord
	}{
		{"the first write", nil, []StepRecord{ok(1, 0), running(2, 1)}, []StepRecord{ok(1, 0), running(2, 1)}},
		{"a step that ended since", []StepRecord{ok(1, 0), running(2, 1)}, []StepRecord{ok(2, 1), running(3, 2)}, []StepRecord{ok(1, 0), ok(2, 1), running(3, 2)}},
		{"a step begun again moves to the end", []StepRecord{ok(1, 0), running(2, 1), ok(3, 2)}, []StepRecord{running(2, 5)}, []StepRecord{ok(1, 0), ok(3, 2), running(2, 5)}},
		{"nothing later", []StepRecord{ok(1, 0)}, nil, []StepRecord{ok(1, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, MergeStepRecords(tc.into, tc.later))
		})
	}
}
