package worker

import (
	"slices"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
)

// timeline is this worker's record of the steps of one rollout: when each
// began and ended, every attempt of its actions and the result. A record
// that changed goes out with the worker's next report, in the same
// transaction (storage.PutStatus), and only then: a report carries what
// changed since the last one, so its size does not grow with the plan.
// The updater folds the records into the rollout's history record (`ferry
// history show`).
type timeline struct {
	rollout time.Time
	steps   []fleet.StepRecord
	// changed are the steps whose records the last report did not carry.
	changed []int
}

// forRollout makes the timeline that of req, taking up saved, this
// server's records of req, when this worker restarted in the middle of it.
func (tl *timeline) forRollout(req *fleet.UpdateRequest, saved []fleet.StepRecord) {
	if tl.rollout.Equal(req.StartedAt) {
		return
	}
	tl.rollout, tl.steps, tl.changed = req.StartedAt, slices.Clone(saved), nil
}

// unsaved returns the records to report about req that changed since the
// last report: none about another rollout. saved says they went out.
func (tl *timeline) unsaved(req *fleet.UpdateRequest) []fleet.StepRecord {
	if !tl.rollout.Equal(req.StartedAt) {
		return nil
	}
	var out []fleet.StepRecord
	for _, k := range tl.changed {
		if r := tl.step(k); r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// saved records that the records unsaved returned went out.
func (tl *timeline) saved(recs []fleet.StepRecord) {
	tl.changed = slices.DeleteFunc(tl.changed, func(k int) bool {
		return slices.ContainsFunc(recs, func(r fleet.StepRecord) bool { return r.Step == k })
	})
}

// step returns the record of step k, nil when there is none yet.
func (tl *timeline) step(k int) *fleet.StepRecord {
	for i := range tl.steps {
		if tl.steps[i].Step == k {
			return &tl.steps[i]
		}
	}
	return nil
}

// touch returns the record of step k to change, nil when there is none,
// and marks it for the next report.
func (tl *timeline) touch(k int) *fleet.StepRecord {
	r := tl.step(k)
	if r != nil && !slices.Contains(tl.changed, k) {
		tl.changed = append(tl.changed, k)
	}
	return r
}

// begin records that step k began now, unless a record of it is already
// running (a restarted worker resumes the step).
func (tl *timeline) begin(k int, name string, now time.Time) {
	if r := tl.step(k); r != nil {
		if r.Result == fleet.StepRunning {
			return
		}
		tl.steps = slices.DeleteFunc(tl.steps, func(r fleet.StepRecord) bool { return r.Step == k })
	}
	tl.steps = append(tl.steps, fleet.StepRecord{Step: k, Name: name, Start: now.UTC(), Result: fleet.StepRunning})
	tl.touch(k)
}

// attempt records that an attempt of step k's actions began now.
func (tl *timeline) attempt(k int, now time.Time) {
	if r := tl.touch(k); r != nil {
		r.Attempts = append(r.Attempts, fleet.Attempt{Start: now.UTC()})
	}
}

// attemptEnded records how the last attempt of step k ended.
func (tl *timeline) attemptEnded(k int, now time.Time, err error) {
	r := tl.touch(k)
	if r == nil || len(r.Attempts) == 0 {
		return
	}
	a := &r.Attempts[len(r.Attempts)-1]
	a.End = now.UTC()
	if err != nil {
		a.Error = err.Error()
	}
}

// skip records that step k's selector left this server out.
func (tl *timeline) skip(k int) {
	if r := tl.touch(k); r != nil {
		r.Result, r.Message = fleet.StepSkipped, "the step's selector does not match this server's labels"
	}
}

// end records that step k ended now with result.
func (tl *timeline) end(k int, now time.Time, result, msg string) {
	if r := tl.step(k); r != nil && r.Result == fleet.StepRunning {
		tl.touch(k)
		r.End, r.Result, r.Message = now.UTC(), result, msg
	}
}
