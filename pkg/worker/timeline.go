package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
)

// timeline is this worker's record of the steps of one rollout: when each
// began and ended, every attempt of its actions and the result. The
// records leave the barrier's path: a server's arrival at a barrier writes
// its status alone, the same bytes at every step. The records that changed
// since the last write of them go out
//   - with the worker's next report that is not an arrival (a retry, a
//     failure, a stop, a pause, its completion), in the same transaction;
//   - or on their own once no record has changed for a while
//     (writeBehind): during any step or barrier that lasts longer than
//     that.
//
// So a rollout of quick steps writes its records once, with each server's
// completion, and one of slow steps writes each record while the fleet
// waits anyway, once or twice: never the records an earlier write
// carried. The updater folds them into the rollout's history record
// (`ferry history show`).
//
// Run's goroutine changes it; writeBehind's reads and marks what it wrote.
type timeline struct {
	mu      sync.Mutex
	rollout time.Time
	steps   []fleet.StepRecord
	// changes counts the changes to the records, saved is the count that
	// the last write carried; changed[i] is the change that last touched
	// steps[i].
	changes, saved int
	changed        []int
	// writing is held from unsaved to markSaved around a write of the
	// records, so that the writes land in the order of the changes they
	// carry: readers merge them in that order.
	writing sync.Mutex
}

// forRollout makes the timeline that of req, taking up saved, this
// server's records of req, when this worker restarted in the middle of it.
func (tl *timeline) forRollout(req *fleet.UpdateRequest, saved []fleet.StepRecord) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.rollout.Equal(req.StartedAt) {
		return
	}
	tl.rollout, tl.steps, tl.changes, tl.saved = req.StartedAt, slices.Clone(saved), 0, 0
	tl.changed = make([]int, len(saved))
}

// isFor reports whether the timeline is that of req.
func (tl *timeline) isFor(req *fleet.UpdateRequest) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.rollout.Equal(req.StartedAt)
}

// unsaved returns a copy of the records about req that changed since a
// write last carried them (nil when none did, and about another rollout),
// and what markSaved needs to say that a write carried them.
func (tl *timeline) unsaved(req *fleet.UpdateRequest) ([]fleet.StepRecord, int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if !tl.rollout.Equal(req.StartedAt) || tl.changes == tl.saved {
		return nil, 0
	}
	var out []fleet.StepRecord
	for i, r := range tl.steps {
		if tl.changed[i] > tl.saved {
			r.Attempts = slices.Clone(r.Attempts)
			out = append(out, r)
		}
	}
	return out, tl.changes
}

// markSaved records that a write carried the records as they were after
// change number upTo.
func (tl *timeline) markSaved(upTo int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.saved = max(tl.saved, upTo)
}

// writeBehind writes the records of req that changed, with write, once
// they did and then did not change for a whole quiet period, until ctx
// ends. It looks once a period rather than being woken by each change: a
// step changes the records four times, and a thousand workers that each
// woke four times a step would cost the barrier's busiest moment. A failed
// write is tried again a period later.
func (tl *timeline) writeBehind(ctx context.Context, req *fleet.UpdateRequest, quiet time.Duration, write func(context.Context, []fleet.StepRecord) error) {
	t := time.NewTicker(quiet)
	defer t.Stop()
	seen := -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tl.mu.Lock()
		changes := tl.changes
		tl.mu.Unlock()
		if changes != seen {
			seen = changes // still changing, or not looked at yet
			continue
		}
		tl.writing.Lock()
		if recs, upTo := tl.unsaved(req); recs != nil {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if write(wctx, recs) == nil {
				tl.markSaved(upTo)
			}
			cancel()
		}
		tl.writing.Unlock()
	}
}

// find is the index of step k's record, or -1. Records are kept in the
// order the steps began, so the step running is found first from the end.
// The caller holds mu.
func (tl *timeline) find(k int) int {
	for i := len(tl.steps) - 1; i >= 0; i-- {
		if tl.steps[i].Step == k {
			return i
		}
	}
	return -1
}

// touch returns the record of step k to change, nil when there is none,
// and marks it changed. The caller holds mu.
func (tl *timeline) touch(k int) *fleet.StepRecord {
	i := tl.find(k)
	if i < 0 {
		return nil
	}
	tl.changes++
	tl.changed[i] = tl.changes
	return &tl.steps[i]
}

// begin records that step k began now, unless a record of it is already
// running (a restarted worker resumes the step).
func (tl *timeline) begin(k int, name string, now time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if i := tl.find(k); i >= 0 {
		if tl.steps[i].Result == fleet.StepRunning {
			return
		}
		tl.steps = slices.Delete(tl.steps, i, i+1)
		tl.changed = slices.Delete(tl.changed, i, i+1)
	}
	tl.steps = append(tl.steps, fleet.StepRecord{Step: k, Name: name, Start: now.UTC(), Result: fleet.StepRunning})
	tl.changed = append(tl.changed, 0)
	tl.touch(k)
}

// attempt records that an attempt of step k's actions began now.
func (tl *timeline) attempt(k int, now time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if r := tl.touch(k); r != nil {
		r.Attempts = append(r.Attempts, fleet.Attempt{Start: now.UTC()})
	}
}

// attemptEnded records how the last attempt of step k ended.
func (tl *timeline) attemptEnded(k int, now time.Time, err error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
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
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if r := tl.touch(k); r != nil {
		r.Result, r.Message = fleet.StepSkipped, "the step's selector does not match this server's labels"
	}
}

// end records that step k ended now with result.
func (tl *timeline) end(k int, now time.Time, result, msg string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	i := tl.find(k)
	if i >= 0 && tl.steps[i].Result == fleet.StepRunning {
		r := tl.touch(k)
		r.End, r.Result, r.Message = now.UTC(), result, msg
	}
}
