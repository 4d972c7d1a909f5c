package fleet

import (
	"regexp"
	"sort"
	"strings"
)

// Snapshot is everything the updater and workers decide on, read at one
// revision of the store.
type Snapshot struct {
	// Revision is the etcd revision the snapshot was read at. Watch from
	// Revision+1 to see every later change.
	Revision int64

	// Config is nil when a stored value does not validate; ConfigErr then
	// says which. The rest of the snapshot is still read, so that safety
	// decisions (stopping a failed rollout) never wait for a config fix.
	Config       *Config
	ConfigErr    error
	ConfigValues map[string]string

	Request    *UpdateRequest // nil when there is none
	RequestRev int64          // mod revision of the request, 0 when none
	Statuses   map[string]*UpdateStatus
	Servers    map[string]*ServerInfo
	Alive      map[string]*Alive
	Pin        *Pin         // nil when not pinned
	Release    *ReleaseInfo // nil before the updater has seen a release
	Contents   map[string]*ContentsStatus
	// Passed is the highest barrier of the request that every server has
	// reached, as status/passed says or the statuses show; nil before the
	// first.
	Passed *Passed
	// Check is the leader's last release check; nil before the first.
	Check *CheckInfo
	// Pause and Resume are status/pause and status/resume when they are
	// about the current request; nil otherwise.
	Pause  *Pause
	Resume *Resume
	// Plan is status/plan when it is about the current request; nil
	// otherwise.
	Plan *PlanSteps
	// Refused are the refused versions, by version.
	Refused map[string]*Refused
	// Leader is the id of the updater that leads, "" while none does.
	Leader string
	// TriggerRev is the mod revision of trigger/check, 0 when none: a
	// larger value than last seen asks for a release check now.
	TriggerRev int64
}

// UsePassed takes p as the snapshot's passed barrier when it is about the
// snapshot's request.
func (s *Snapshot) UsePassed(p *Passed) {
	if p != nil && s.Request != nil && p.Rollout.Equal(s.Request.StartedAt) {
		s.Passed = p
	}
}

// CountArrivals raises Passed to the barrier every active member has
// reached by its status, as a fleet of at most LocalBarrier servers counts
// its arrivals itself.
func (s *Snapshot) CountArrivals() {
	req := s.Request
	if req == nil {
		return
	}
	reached := make(map[string]int, len(req.Servers))
	for _, id := range req.Servers {
		reached[id] = s.Statuses[id].Reached(req)
	}
	if low := Lowest(req.Active(), reached); low > 0 && (s.Passed == nil || low > s.Passed.Step) {
		s.Passed = &Passed{Rollout: req.StartedAt, Step: low}
	}
}

// LocalBarrier is the largest fleet whose workers count the arrivals
// themselves, each following every status: a few events per step buy a
// round trip, the coordinator's write of status/passed. Larger fleets
// leave the counting to the coordinator, so that the events per step grow
// linearly with the fleet.
const LocalBarrier = 16

// Lowest is the barrier every member has reached, given each one's.
func Lowest(members []string, reached map[string]int) int {
	low := -1
	for _, id := range members {
		if r := reached[id]; low < 0 || r < low {
			low = r
		}
	}
	return max(low, 0)
}

// Phase is a server's phase in the request as an operator means it: a
// server whose status waits at a barrier that has passed is running that
// step, since a lockstep step writes no report of its own when it starts.
// "" when the server has not reported on the request.
func (s *Snapshot) Phase(id string) Phase {
	st := s.Statuses[id]
	if !st.For(s.Request) {
		return ""
	}
	if st.Phase == PhaseWaiting && st.Cond == CondRunning && s.Passed != nil && s.Passed.Step >= st.Step {
		return PhaseRunning
	}
	return st.Phase
}

// State is a server's state in a rollout, in a word.
type State string

// Server states, as the fleet gauge and the status page name them.
const (
	StateIdle      State = "idle"      // not in the rollout, or not reported on it yet
	StateNotAlive  State = "not-alive" // no live worker (alive/<id> is gone)
	StateUpgrading State = "upgrading"
	StateWaiting   State = "waiting"
	StateRunning   State = "running"
	StateRetrying  State = "retrying"
	StateRepairing State = "repairing"
	StateCompleted State = "completed"
	StateAborted   State = "aborted" // failed, and the fleet stops
	StateStopped   State = "stopped" // stopped at a safe point because the rollout stopped
	StateFailed    State = "failed"  // failed a step that tolerated it; the rollout goes on without it
	StatePaused    State = "paused"  // waits for the canary, or for ferry rollout resume
)

// ServerStates are every state State returns.
var ServerStates = []State{StateIdle, StateNotAlive, StateUpgrading, StateWaiting, StateRunning, StateRetrying, StateRepairing, StateCompleted, StateAborted, StateStopped, StateFailed, StatePaused}

// State is one server's state in the request, in a word.
func (s *Snapshot) State(id string) State {
	if s.Request != nil && s.Request.IsFailed(id) {
		return StateFailed
	}
	if s.Alive[id] == nil {
		return StateNotAlive
	}
	st := s.Statuses[id]
	if s.Request == nil || !s.Request.IsMember(id) || !st.For(s.Request) {
		return StateIdle
	}
	return StateOf(s.Phase(id), st.Cond)
}

// StateOf is the state of a server that reports phase and cond.
func StateOf(phase Phase, cond Cond) State {
	switch cond {
	case CondCompleted:
		return StateCompleted
	case CondAborted:
		if phase == PhaseWaiting {
			// At a barrier: it did not fail, the rollout stopped.
			return StateStopped
		}
		return StateAborted
	}
	switch phase {
	case PhaseUpgrading, PhaseWaiting, PhaseRetrying, PhaseRepairing, PhasePaused:
		return State(phase)
	}
	return StateRunning
}

// DefaultPrefix is the etcd key prefix used when the bootstrap config
// sets none.
const DefaultPrefix = "/ferry/"

// NormalizePrefix checks a key prefix and gives it a trailing "/".
func NormalizePrefix(prefix string) (string, error) {
	if !strings.HasPrefix(prefix, "/") {
		return "", invalid("prefix", prefix, "must start with /", "e.g. "+DefaultPrefix)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix, nil
}

var idPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// ValidateServerID checks a server id: lower-case letters, digits, ".", "_"
// and "-", at most 63 characters, starting and ending with a letter or digit.
func ValidateServerID(id string) error {
	if !idPattern.MatchString(id) {
		return invalid("server id", id, "is not a valid id", "lower-case letters, digits, '.', '_' and '-', e.g. boot-0")
	}
	return nil
}

// SortedIDs returns the keys of a map in order.
func SortedIDs[T any](m map[string]T) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
