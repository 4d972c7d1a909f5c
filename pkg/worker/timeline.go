package worker

import (
	"slices"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
)

// timeline is this worker's record of the steps of one rollout: when each
// began and ended, every attempt of its actions and the result. It rides
// on the worker's reports (UpdateStatus.Timeline), and the updater copies
// it into the rollout's history record (`ferry history show`).
type timeline struct {
	rollout time.Time
	steps   []fleet.StepRecord
}

// forRollout makes the timeline that of req, taking up what the server's
// last report held when this worker restarted in the middle of it.
func (tl *timeline) forRollout(req *fleet.UpdateRequest, own *fleet.UpdateStatus) {
	if tl.rollout.Equal(req.StartedAt) {
		return
	}
	tl.rollout, tl.steps = req.StartedAt, nil
	if own.For(req) {
		tl.steps = slices.Clone(own.Timeline)
	}
}

// of returns the records to report about req: none about another rollout.
func (tl *timeline) of(req *fleet.UpdateRequest) []fleet.StepRecord {
	if !tl.rollout.Equal(req.StartedAt) {
		return nil
	}
	return tl.steps
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
}

// attempt records that an attempt of step k's actions began now.
func (tl *timeline) attempt(k int, now time.Time) {
	if r := tl.step(k); r != nil {
		r.Attempts = append(r.Attempts, fleet.Attempt{Start: now.UTC()})
	}
}

// attemptEnded records how the last attempt of step k ended.
func (tl *timeline) attemptEnded(k int, now time.Time, err error) {
	r := tl.step(k)
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
	if r := tl.step(k); r != nil {
		r.Result, r.Message = fleet.StepSkipped, "the step's selector does not match this server's labels"
	}
}

// end records that step k ended now with result.
func (tl *timeline) end(k int, now time.Time, result, msg string) {
	if r := tl.step(k); r != nil && r.Result == fleet.StepRunning {
		r.End, r.Result, r.Message = now.UTC(), result, msg
	}
}
