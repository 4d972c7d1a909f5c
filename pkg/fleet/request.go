// Package fleet is ferry's model of a fleet and its rollouts, apart from
// where it is kept: the request a rollout carries out, each server's
// status, the barrier every member must reach, the typed config and its
// checks, and a snapshot's reading of them in words (a server's phase and
// state). It imports no etcd: pkg/storage keeps these values in etcd, and
// the packages that only read or decide on them depend on this one.
package fleet

import (
	"slices"
	"time"
)

// Cond is the condition a worker reports for the current request.
type Cond string

// Worker conditions.
const (
	CondRunning   Cond = "running"
	CondAborted   Cond = "aborted"
	CondCompleted Cond = "completed"
)

// Phase is where a worker is within a step.
type Phase string

// Phases within a step.
const (
	PhaseUpgrading Phase = "upgrading"
	PhaseWaiting   Phase = "waiting"
	PhaseRunning   Phase = "running"
	PhaseDone      Phase = "done"
	// PhaseRepairing: dpkg's database showed an unfinished install, which
	// the worker is finishing before it goes on.
	PhaseRepairing Phase = "repairing"
	// PhaseRetrying: the step (or the self-upgrade) met a transient error
	// (the network, GitHub, etcd) and the worker tries again with backoff.
	PhaseRetrying Phase = "retrying"
	// PhasePaused: the server waits at the start of a step for the
	// rollout to be resumed: behind a canary, or a `ferry rollout pause`.
	PhasePaused Phase = "paused"
)

// Reasons for an update request.
const (
	ReasonUpdate      = "update"      // a new version
	ReasonReconfigure = "reconfigure" // the same version, new membership
	ReasonRollback    = "rollback"    // back to From, after a failed rollout whose plan said on-failure: rollback
)

// UpdateRequest is status/current: the rollout the fleet must carry out.
type UpdateRequest struct {
	Version   string    `json:"version"`
	Servers   []string  `json:"servers"`
	Stop      bool      `json:"stop"`
	StartedAt time.Time `json:"started_at"`
	Reason    string    `json:"reason"`
	// StopReason says why Stop was set: which server aborted, timed out or died.
	StopReason string `json:"stop_reason,omitempty"`
	// FinishedAt is set when the rollout completed or was stopped, together
	// with its history record. Zero while it runs.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Release is the GitHub release of Version as the updater resolved it
	// when it wrote the request, so that workers download it without an
	// API call each. Nil from an updater that predates it; workers then
	// look the release up themselves.
	Release *ReleaseRef `json:"release,omitempty"`
	// From is the version the fleet ran before this rollout (that of the
	// last completed one), "" when not known; a rollback goes back to it.
	From string `json:"from,omitempty"`
	// Failed are the servers that failed a step whose max-failures
	// tolerated it: they are out of the rollout, no barrier waits for
	// them, and it completes without them. The updater leader adds them.
	Failed []FailedServer `json:"failed,omitempty"`
	// Events are the rollout's transitions that its other fields do not
	// keep (paused, resumed), written by the updater leader.
	Events []RolloutEvent `json:"events,omitempty"`
}

// RolloutEvent is one transition of a rollout.
type RolloutEvent struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"` // paused, resumed
	Message string    `json:"message"`
}

// Refused is refused/<version>: a version that failed a rollout whose plan
// said on-failure: rollback. The updater does not roll it out again until
// an operator clears it (ferry release unrefuse) or a newer release comes.
type Refused struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
	Reason  string    `json:"reason"`
	// Rollout is the StartedAt of the rollout that failed.
	Rollout time.Time `json:"rollout"`
}

// Pause is status/pause: `ferry rollout pause` holds the rollout at its
// next step boundary until `ferry rollout resume` deletes it.
type Pause struct {
	Rollout time.Time `json:"rollout"`
	At      time.Time `json:"at"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
}

// Resume is status/resume: the rest of the servers may take every step up
// to Step whose canary went first (`ferry rollout resume`, or the updater
// when a step's pause duration has passed).
type Resume struct {
	Rollout time.Time `json:"rollout"`
	Step    int       `json:"step"`
	At      time.Time `json:"at"`
	By      string    `json:"by"`
}

// FailedServer is a server a rollout goes on without.
type FailedServer struct {
	ID       string    `json:"id"`
	Step     int       `json:"step"`
	StepName string    `json:"step_name,omitempty"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// IsFailed reports whether the rollout goes on without server id.
func (r *UpdateRequest) IsFailed(id string) bool {
	for _, f := range r.Failed {
		if f.ID == id {
			return true
		}
	}
	return false
}

// Active is the servers of the rollout that it has not given up on: those
// its barriers wait for and its completion needs.
func (r *UpdateRequest) Active() []string {
	if len(r.Failed) == 0 {
		return r.Servers
	}
	out := make([]string, 0, len(r.Servers))
	for _, id := range r.Servers {
		if !r.IsFailed(id) {
			out = append(out, id)
		}
	}
	return out
}

// FailuresAt counts the servers that failed step k.
func (r *UpdateRequest) FailuresAt(k int) int {
	n := 0
	for _, f := range r.Failed {
		if f.Step == k {
			n++
		}
	}
	return n
}

// ReleaseRef is a release resolved once, for the whole fleet: where its
// assets are, how large GitHub says they are, and the content of its small
// signed files. None of it is trusted: a worker checks the package against
// a manifest signed by a key on its own disk, exactly as if it had asked
// GitHub itself.
type ReleaseRef struct {
	Repo   string     `json:"repo"`
	Tag    string     `json:"tag"`
	Assets []AssetRef `json:"assets"`
}

// AssetRef is one asset of a ReleaseRef.
type AssetRef struct {
	Name string `json:"name"`
	// ID is the asset's API id, for a worker that must use the API (one
	// with a github-token, for a private repository).
	ID   int64 `json:"id"`
	Size int64 `json:"size"`
	// URL is the asset's web download URL, which costs no API request.
	URL string `json:"url,omitempty"`
	// Data is the content of a small file (a manifest, its signature,
	// SHA256SUMS), so that no worker downloads it.
	Data []byte `json:"data,omitempty"`
}

// Finished reports whether the rollout completed or was stopped.
func (r *UpdateRequest) Finished() bool { return !r.FinishedAt.IsZero() }

// IsMember reports whether the server id takes part in the request.
func (r *UpdateRequest) IsMember(id string) bool {
	for _, s := range r.Servers {
		if s == id {
			return true
		}
	}
	return false
}

// UpdateStatus is status/servers/<id>: one worker's progress on the request.
type UpdateStatus struct {
	Version string `json:"version"`
	// Step is the 1-based index of the step the worker is on; 0 before the
	// first step.
	Step     int    `json:"step"`
	StepName string `json:"step_name,omitempty"`
	// Phase is where the worker is within Step: upgrading (itself, before
	// step 1), waiting (for the other servers or a rolling slot), running,
	// or done.
	Phase     Phase     `json:"phase,omitempty"`
	Cond      Cond      `json:"cond"`
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// Rollout is the StartedAt of the request the status is about, so that
	// a late write about an earlier rollout never counts for this one.
	Rollout time.Time `json:"rollout,omitzero"`
	// MaxFailures is the max-failures of the plan's step Step: how many
	// servers may fail it before the fleet stops. The updater, which does
	// not read the plan, decides on it.
	MaxFailures int `json:"max_failures,omitempty"`
	// OnFailure is that of the plan's step Step when it is "rollback".
	OnFailure string `json:"on_failure,omitempty"`
	// Canary and Pause are those of the plan's step Step: how many servers
	// take it first, and how the rest go on ("manual" or a duration).
	Canary int    `json:"canary,omitempty"`
	Pause  string `json:"pause,omitempty"`
}

// Results of a StepRecord.
const (
	StepRunning = "running"
	StepOK      = "ok"
	StepFailed  = "failed"
	StepSkipped = "skipped"
)

// StepRecord is one server's record of one step: when it started (the
// barrier passed), when it ended, every attempt of its actions, and how it
// ended. The worker writes it beside its status, in the same transaction,
// when it changed: each record once or a few times, so that a status write
// costs the same bytes at the last step as at the first.
type StepRecord struct {
	Step     int       `json:"step"`
	Name     string    `json:"name"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
	Result   string    `json:"result"`
	Message  string    `json:"message,omitempty"`
	Attempts []Attempt `json:"attempts,omitempty"`
}

// MergeStepRecords applies later, records written after those of into,
// to into, and returns the result: a record of the same step and start is
// the same record, changed since; one of the same step with another start
// is the step begun again, which replaces the old record and moves to the
// end, in the order the steps began.
func MergeStepRecords(into, later []StepRecord) []StepRecord {
	for _, r := range later {
		i := slices.IndexFunc(into, func(o StepRecord) bool { return o.Step == r.Step })
		switch {
		case i >= 0 && into[i].Start.Equal(r.Start):
			into[i] = r
		case i >= 0:
			into = append(slices.Delete(into, i, i+1), r)
		default:
			into = append(into, r)
		}
	}
	return into
}

// Attempt is one run of a step's actions on a server; Error is "" when it
// succeeded.
type Attempt struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
	Error string    `json:"error,omitempty"`
}

// For reports whether the status is about req (a status that predates
// Rollout is taken as the current request's, as the version matches).
func (st *UpdateStatus) For(req *UpdateRequest) bool {
	return st != nil && req != nil && st.Version == req.Version && (st.Rollout.IsZero() || st.Rollout.Equal(req.StartedAt))
}

// Reached is the barrier the server has reached in req: it has finished
// every step before it. A server that has not reported on req has reached
// none (0); one that completed the plan's S steps has reached S+1, so that
// status/passed at S+1 says the fleet completed.
func (st *UpdateStatus) Reached(req *UpdateRequest) int {
	if !st.For(req) {
		return 0
	}
	if st.Cond == CondCompleted {
		return st.Step + 1
	}
	return st.Step
}

// PlanSteps is status/plan: the names of the steps of the plan that a
// rollout carries out, in order, as a worker at its version read them from
// its artifact set; for the operator's view of the whole plan.
type PlanSteps struct {
	Rollout time.Time `json:"rollout"`
	Steps   []string  `json:"steps"`
}

// Passed is status/passed: the highest barrier of the current rollout that
// every server of it has reached, so that all may start that step. The
// updater leader writes it; workers watch it.
type Passed struct {
	Rollout time.Time `json:"rollout"`
	Step    int       `json:"step"`
}

// ServerInfo is info/servers/<id>: a registered member of the fleet.
type ServerInfo struct {
	Hostname string            `json:"hostname"`
	Labels   map[string]string `json:"labels,omitempty"`
	JoinedAt time.Time         `json:"joined_at"`
}

// Alive is alive/<id>: a running worker, bound to its lease.
type Alive struct {
	// Version is the version of the running worker's binary; Installed
	// what dpkg said of ferry's package when it started: its version, with
	// its condition when that is not installed ok ("2026.12.05-1
	// half-configured"); "" when dpkg could not be asked.
	Installed string    `json:"installed,omitempty"`
	Version   string    `json:"version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
}

// ReleaseInfo is info/release: the newest eligible release the updater saw.
type ReleaseInfo struct {
	// Env is the env the release was chosen for; after a change of env the
	// record is stale until the next check.
	Env         Env       `json:"env"`
	Version     string    `json:"version"`
	Tag         string    `json:"tag"`
	Prerelease  bool      `json:"prerelease"`
	PublishedAt time.Time `json:"published_at"`
}

// CheckInfo is info/check: the updater leader's last release check.
type CheckInfo struct {
	At time.Time `json:"at"`
	// Result is found, none, error or rate_limited.
	Result string `json:"result"`
	// Version is the release found; Error why the check failed.
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
	// Leader is the updater that checked.
	Leader string `json:"leader"`
	// Trigger is the revision of the trigger/check this check answered
	// (`ferry release check-now`, a webhook); 0 for a scheduled one.
	Trigger int64 `json:"trigger,omitempty"`
}

// Pin is the version the fleet must hold.
type Pin struct {
	Version        string    `json:"version"`
	AllowDowngrade bool      `json:"allow_downgrade"`
	PinnedAt       time.Time `json:"pinned_at"`
	// StopRunning asks the updater leader to stop a rollout to another
	// version that was running when the pin was set, at its next safe
	// point (`ferry release pin --stop-running`).
	StopRunning bool `json:"stop_running,omitempty"`
	// By is who pinned.
	By string `json:"by,omitempty"`
}

// ContentsStatus is contents/<target>: the outcome of a once-per-fleet action.
type ContentsStatus struct {
	Version   string    `json:"version"`
	Success   bool      `json:"success"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Installed is install/<id>/<kind>/<name>: what a worker installed.
type Installed struct {
	Version     string    `json:"version"`
	Digest      string    `json:"digest"`
	InstalledAt time.Time `json:"installed_at"`
}

// Results of a rollout, as history records them.
const (
	ResultCompleted = "completed"
	ResultAborted   = "aborted"
	ResultTimeout   = "timeout"
	ResultDead      = "dead-server"
	// ResultFailed: a server failed and the plan said on-failure:
	// rollback; a rollback rollout followed.
	ResultFailed = "failed"
	// ResultCleared: `ferry recover --force` cleared a rollout that was
	// still running.
	ResultCleared = "cleared"
)

// HistoryRecord is history/<started_at>: the outcome of one rollout.
type HistoryRecord struct {
	Version    string    `json:"version"`
	Reason     string    `json:"reason"`
	Servers    []string  `json:"servers"`
	Result     string    `json:"result"`
	StopReason string    `json:"stop_reason,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Durations is each server's time from the start of the rollout to its
	// last status, in seconds.
	Durations map[string]float64 `json:"durations"`
	// Timeline is each server's step records, in the order of the steps.
	Timeline map[string][]StepRecord `json:"timeline,omitempty"`
	// Failed are the servers the rollout went on without.
	Failed []FailedServer `json:"failed,omitempty"`
	// Events are its pauses and resumes.
	Events []RolloutEvent `json:"events,omitempty"`
}

// NewHistoryRecord is the record of req, finished at finishedAt with
// result, from the servers' statuses and their step records (by server).
func NewHistoryRecord(req *UpdateRequest, statuses map[string]*UpdateStatus, timeline map[string][]StepRecord, result string, finishedAt time.Time) *HistoryRecord {
	h := &HistoryRecord{
		Version: req.Version, Reason: req.Reason, Servers: req.Servers, Result: result,
		StartedAt: req.StartedAt, FinishedAt: finishedAt, Durations: map[string]float64{}, Failed: req.Failed, Events: req.Events,
	}
	for _, id := range req.Servers {
		st := statuses[id]
		if st.For(req) && !st.UpdatedAt.IsZero() {
			h.Durations[id] = st.UpdatedAt.Sub(req.StartedAt).Seconds()
		}
		if recs := timeline[id]; len(recs) > 0 {
			if h.Timeline == nil {
				h.Timeline = map[string][]StepRecord{}
			}
			h.Timeline[id] = recs
		}
	}
	return h
}

// Duration is the rollout's wall time.
func (h *HistoryRecord) Duration() time.Duration { return h.FinishedAt.Sub(h.StartedAt) }

// CheckTrigger is trigger/check: a request for an immediate release check,
// written by whichever updater received a GitHub webhook.
type CheckTrigger struct {
	At       time.Time `json:"at"`
	Delivery string    `json:"delivery,omitempty"`
}
