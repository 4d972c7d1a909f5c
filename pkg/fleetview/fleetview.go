// Package fleetview is the fleet as an operator reads it: the rollout's
// state in a word, each server's state, phase and installed version, and
// how far the fleet got through the plan's barriers. `ferry status` and the
// updater's status page show the same view, built here from one snapshot.
package fleetview

import (
	"cmp"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
)

// States of a rollout as a whole.
const (
	StateNone      = "none"
	StateRunning   = "running"
	StateAborted   = "aborted" // a server failed; the updater will stop the fleet
	StateStopped   = "stopped" // needs ferry recover
	StateCompleted = "completed"
	StatePaused    = "paused" // held by ferry rollout pause, or behind a canary
)

// Fleet is the view of one snapshot.
type Fleet struct {
	State   string               `json:"state"`
	Request *fleet.UpdateRequest `json:"request"`
	Servers []Server             `json:"servers"`
	Release *fleet.ReleaseInfo   `json:"release"`
	Pin     *fleet.Pin           `json:"pin"`
	// Leader is the updater that leads; Check its last release check.
	Leader string           `json:"leader"`
	Check  *fleet.CheckInfo `json:"last_check"`
	// Passed is the highest barrier every server of the rollout reached
	// (the plan's step count + 1 once all completed); 0 before the first.
	Passed int `json:"passed"`
	// Steps is the rollout's progress through each step seen so far.
	Steps []Step `json:"steps,omitempty"`
	// Pause is the operator's pause of the rollout (`ferry rollout
	// pause`): who, why and since when; nil when there is none.
	Pause *fleet.Pause `json:"pause,omitempty"`
	// CanaryHold is the step whose canary the rest of the servers wait
	// behind, for a resume or the step's pause; 0 when none do.
	CanaryHold int `json:"canary_hold,omitempty"`
}

// Server is one server in the view.
type Server struct {
	ID        string              `json:"id"`
	InRequest bool                `json:"in_request"`
	Alive     bool                `json:"alive"`
	Status    *fleet.UpdateStatus `json:"status"`
	// State is the server's state in a word (fleet.Snapshot.State);
	// Phase its phase in the step, a passed barrier counted as running.
	State fleet.State `json:"state"`
	Phase fleet.Phase `json:"phase,omitempty"`
	// Installed is the version of ferry that dpkg says the server has
	// (with its condition when not installed ok), Runs that of its live
	// worker's binary: both "" without a live worker. Target is the
	// version the rollout takes it to, "" when it is not in one.
	Installed string `json:"installed,omitempty"`
	Runs      string `json:"runs,omitempty"`
	Target    string `json:"target,omitempty"`
	// Canary is the step this server took before the rest, who wait
	// behind it; 0 when it is no canary now.
	Canary int `json:"canary,omitempty"`
	// Labels are the server's labels from servers/<id>.
	Labels map[string]string `json:"labels,omitempty"`
	// LastSeen is the last sign of its worker: its last status or the
	// start of its live worker, whichever is later; zero when none.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Step is the fleet's progress through one step of the plan.
type Step struct {
	Step int    `json:"step"`
	Name string `json:"name,omitempty"`
	// Arrived counts the servers that reached the step's barrier (finished
	// every step before it), Done those that finished the step, Of the
	// servers of the rollout.
	Arrived int `json:"arrived"`
	Done    int `json:"done"`
	Of      int `json:"of"`
}

// New builds the view of snap.
func New(snap *fleet.Snapshot) *Fleet {
	v := &Fleet{Request: snap.Request, Release: snap.Release, Pin: snap.Pin, Leader: snap.Leader, Check: snap.Check}
	ids := map[string]bool{}
	if snap.Request != nil {
		for _, id := range snap.Request.Servers {
			ids[id] = true
		}
	}
	for id := range snap.Statuses {
		ids[id] = true
	}
	for id := range snap.Servers {
		ids[id] = true
	}
	for _, id := range fleet.SortedIDs(ids) {
		sv := Server{
			ID:        id,
			InRequest: snap.Request != nil && snap.Request.IsMember(id),
			Target:    target(snap.Request, id),
			Alive:     snap.Alive[id] != nil,
			Status:    snap.Statuses[id],
			State:     snap.State(id),
			Phase:     snap.Phase(id),
		}
		if a := snap.Alive[id]; a != nil {
			sv.Installed, sv.Runs, sv.LastSeen = cmp.Or(a.Installed, a.Version), a.Version, a.StartedAt
		}
		if st := sv.Status; st != nil && st.UpdatedAt.After(sv.LastSeen) {
			sv.LastSeen = st.UpdatedAt
		}
		if info := snap.Servers[id]; info != nil {
			sv.Labels = info.Labels
		}
		v.Servers = append(v.Servers, sv)
	}
	if snap.Passed != nil {
		v.Passed = snap.Passed.Step
	}
	v.State = State(snap)
	v.Pause, v.CanaryHold = snap.Pause, CanaryHold(snap)
	if k := v.CanaryHold; k > 0 {
		for i := range v.Servers {
			if st := v.Servers[i].Status; st.For(snap.Request) && st.Step >= k && !(st.Step == k && st.Phase == fleet.PhasePaused) {
				v.Servers[i].Canary = k
			}
		}
	}
	v.Steps = steps(snap)
	return v
}

// CanaryHold is the highest step at which a server of the running rollout
// waits behind a canary that has not been resumed; 0 when none does.
func CanaryHold(snap *fleet.Snapshot) int {
	req, k := snap.Request, 0
	if req == nil || req.Finished() {
		return 0
	}
	for _, id := range req.Active() {
		if st := snap.Statuses[id]; st.For(req) && st.Cond == fleet.CondRunning && st.Phase == fleet.PhasePaused && st.Canary > 0 && st.Step > k {
			k = st.Step
		}
	}
	if snap.Resume != nil && snap.Resume.Step >= k {
		return 0
	}
	return k
}

// target is the version req takes server id to; "" when it does not.
func target(req *fleet.UpdateRequest, id string) string {
	if req == nil || !req.IsMember(id) {
		return ""
	}
	return req.Version
}

// State is the rollout's state in a word.
func State(snap *fleet.Snapshot) string {
	req := snap.Request
	if req == nil {
		return StateNone
	}
	if req.Stop {
		return StateStopped
	}
	done := true
	for _, id := range req.Active() {
		st := snap.Statuses[id]
		switch {
		case st.For(req) && st.Cond == fleet.CondAborted:
			return StateAborted
		case !st.For(req) || st.Cond != fleet.CondCompleted:
			done = false
		}
	}
	if done {
		return StateCompleted
	}
	if snap.Pause != nil {
		return StatePaused
	}
	// Held behind a canary, with nobody at work: the rollout is paused.
	held, working := false, false
	for _, id := range req.Active() {
		switch snap.Phase(id) {
		case fleet.PhasePaused:
			held = true
		case fleet.PhaseRunning, fleet.PhaseRetrying, fleet.PhaseRepairing, fleet.PhaseUpgrading:
			working = true
		}
	}
	if held && !working {
		return StatePaused
	}
	return StateRunning
}

// steps is the progress through every step of the plan (status/plan), or
// else every step that a server of the rollout has reached, named as the
// statuses name them.
func steps(snap *fleet.Snapshot) []Step {
	req := snap.Request
	if req == nil {
		return nil
	}
	last := 0
	names := map[int]string{}
	reached := make([]int, 0, len(req.Servers))
	for _, id := range req.Servers {
		st := snap.Statuses[id]
		if !st.For(req) {
			reached = append(reached, 0)
			continue
		}
		r := st.Reached(req)
		reached = append(reached, r)
		if st.Step > last {
			last = st.Step
		}
		if st.Step > 0 && st.StepName != "" {
			names[st.Step] = st.StepName
		}
	}
	// The plan, when a worker recorded it, names every step, the ones
	// nobody reached yet too.
	if p := snap.Plan; p != nil {
		last = max(last, len(p.Steps))
		for i, name := range p.Steps {
			names[i+1] = name
		}
	}
	out := make([]Step, 0, last)
	for k := 1; k <= last; k++ {
		s := Step{Step: k, Name: names[k], Of: len(req.Servers)}
		for _, r := range reached {
			if r >= k {
				s.Arrived++
			}
			if r > k {
				s.Done++
			}
		}
		out = append(out, s)
	}
	return out
}
