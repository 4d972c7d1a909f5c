package updater

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
)

// Kind is what the leader does next.
type Kind int

// Kinds of action.
const (
	// Wait: nothing to do until etcd changes or Until passes.
	Wait Kind = iota
	// NewRequest: write Request as the new rollout.
	NewRequest
	// Stop: stop the running rollout (Cause says why).
	Stop
	// Complete: every server completed; record success.
	Complete
	// GoOnWithout: a server failed a step whose max-failures tolerates it;
	// the rollout goes on without it (Cause says which and why).
	GoOnWithout
	// ResumeCanary: the pause after a step's canary is over; the rest of
	// the servers may take step Step.
	ResumeCanary
	// RollBack: a server failed a step whose plan says on-failure:
	// rollback; the rollout ends as failed, its version is refused, and
	// Request (back to the version before) starts.
	RollBack
)

func (k Kind) String() string {
	return [...]string{"wait", "new-request", "stop", "complete", "go-on-without", "resume-canary", "rollback"}[k]
}

// Action is NextAction's decision.
type Action struct {
	Kind Kind
	// Why explains the decision in a sentence, for logs.
	Why string
	// Until bounds a Wait; zero means "until something changes".
	Until time.Time
	// Request is the rollout to start, for NewRequest.
	Request *fleet.UpdateRequest
	// Cause is why the rollout stops, for Stop.
	Cause *StopCause
	// Step is the step to resume, for ResumeCanary.
	Step int
	// Paused names the pause the fleet waits in with nobody at work
	// ("pause", or "canary/K" once step K's canary finished it); "" when
	// it is not paused. The leader notifies each pause once.
	Paused string
}

// StopCause describes why a rollout stops, or goes on without a server.
type StopCause struct {
	Result  string // fleet.ResultAborted, ResultTimeout or ResultDead
	Server  string // the server at fault; empty for a timeout
	Message string
	// Step is the step the server failed, and MaxFailures that step's
	// tolerance, for GoOnWithout.
	Step        int
	StepName    string
	MaxFailures int
}

func (c *StopCause) String() string {
	switch c.Result {
	case fleet.ResultAborted:
		if c.Server == "" {
			return c.Message
		}
		return fmt.Sprintf("%s aborted: %s", c.Server, c.Message)
	case fleet.ResultDead:
		return fmt.Sprintf("%s has had no live worker for %s", c.Server, c.Message)
	default:
		return "the rollout timed out: " + c.Message
	}
}

// Input is everything NextAction decides on.
type Input struct {
	Snap *fleet.Snapshot
	// Config is the configuration to act on: the snapshot's, or the last
	// valid one when the stored config is broken.
	Config *fleet.Config
	// ConfigOK is false when the stored config is broken: the running
	// rollout is still watched over, but no new one starts.
	ConfigOK bool
	Now      time.Time
	// MissingSince tells since when this leader has seen no alive/ key for
	// each server of the running rollout.
	MissingSince map[string]time.Time
}

// NextAction decides the updater leader's next move. It is a pure function
// of its input; the leader carries out the action and calls it again.
//
// A running rollout is watched first: an aborted server, the worker timeout,
// or a server with no live worker for longer than dead-server-grace stops it;
// all servers completed finishes it. A stopped rollout waits for `ferry
// recover`. Otherwise a new rollout starts when there is a target version
// the fleet does not run yet (inside a release-time window), or when
// membership changed since the last completed rollout (reconfigure).
func NextAction(in Input) Action {
	snap, cfg, now := in.Snap, in.Config, in.Now
	req := snap.Request

	if req != nil && !req.Finished() {
		return watchRollout(in)
	}
	if req != nil && req.Stop {
		return Action{Kind: Wait, Why: "the rollout to " + req.Version + " is stopped; waiting for `ferry recover`"}
	}
	if !in.ConfigOK {
		return Action{Kind: Wait, Why: "the stored config is broken; no new rollout starts until it is fixed"}
	}
	if cfg.Env == fleet.EnvNone {
		return Action{Kind: Wait, Why: "env is none: the fleet is not updated"}
	}
	members := fleet.SortedIDs(snap.Servers)
	if len(members) == 0 {
		return Action{Kind: Wait, Why: "no server has joined the fleet"}
	}

	target, why := targetVersion(in)
	if !target.IsZero() {
		update, reason := needsUpdate(snap, target)
		if update {
			if !cfg.InReleaseWindow(now) {
				next := cfg.NextReleaseWindow(now)
				return Action{Kind: Wait, Until: next, Why: fmt.Sprintf("%s waits for the next release-time window at %s", target, next.Format(time.RFC3339))}
			}
			return Action{Kind: NewRequest, Why: why, Request: &fleet.UpdateRequest{
				Version: target.String(), From: fleetRan(snap), Servers: members, Reason: fleet.ReasonUpdate, StartedAt: now.UTC(),
			}}
		}
		why = reason
	}
	if req != nil && !slices.Equal(req.Servers, members) {
		return Action{Kind: NewRequest, Why: fmt.Sprintf("membership changed since the rollout to %s", req.Version), Request: &fleet.UpdateRequest{
			Version: req.Version, From: fleetRan(snap), Servers: members, Reason: fleet.ReasonReconfigure, StartedAt: now.UTC(),
		}}
	}
	return Action{Kind: Wait, Why: why}
}

// fleetRan is the version the fleet runs as far as etcd knows: that of the
// last rollout, if it completed; "" otherwise.
func fleetRan(snap *fleet.Snapshot) string {
	if r := snap.Request; r != nil && r.Finished() && !r.Stop {
		return r.Version
	}
	return ""
}

// needsUpdate decides whether the fleet must roll out target. After a
// completed rollout, only a newer target (or a pinned downgrade) does.
// With no request at all (a new fleet, or after `ferry recover`), the target
// is rolled out unless a live worker already runs something newer.
func needsUpdate(snap *fleet.Snapshot, target release.Version) (bool, string) {
	if req := snap.Request; req != nil {
		done := release.ParseVersionOrZero(req.Version)
		switch {
		case target.Newer(done):
			return true, ""
		case target.Compare(done) == 0:
			return false, "the fleet is at " + done.String()
		case downgradeAllowed(snap, target):
			return true, ""
		}
		return false, fmt.Sprintf("the fleet runs %s; %s is older and no pin allows a downgrade", done, target)
	}
	if running := fleetVersion(snap); running.Newer(target) && !downgradeAllowed(snap, target) {
		return false, fmt.Sprintf("a worker runs %s; %s is older and no pin allows a downgrade", running, target)
	}
	return true, ""
}

// watchRollout decides on a rollout in progress.
func watchRollout(in Input) Action {
	snap, cfg, now := in.Snap, in.Config, in.Now
	req := snap.Request
	active := req.Active()
	if len(active) == 0 {
		return Action{Kind: Stop, Why: "every server failed", Cause: &StopCause{Result: fleet.ResultAborted, Message: "every server of the rollout failed"}}
	}
	for _, id := range active {
		if st := snap.Statuses[id]; st.For(req) && st.Cond == fleet.CondAborted {
			cause := &StopCause{Result: fleet.ResultAborted, Server: id, Message: st.Message}
			if tolerated(req, st, cause) {
				return Action{Kind: GoOnWithout, Why: fmt.Sprintf("%s failed step %d; its max-failures %d tolerates it", id, st.Step, st.MaxFailures), Cause: cause}
			}
			return stopOrRollBack(req, st, now, Action{Kind: Stop, Why: "a server aborted", Cause: cause})
		}
	}
	if p := snap.Pin; p != nil && p.StopRunning && p.Version != req.Version && p.PinnedAt.After(req.StartedAt) {
		return Action{Kind: Stop, Why: "pinned to " + p.Version + " with --stop-running", Cause: &StopCause{Result: fleet.ResultAborted,
			Message: fmt.Sprintf("pinned to %s by %s with --stop-running; `ferry recover` rolls out %s", p.Version, cmp.Or(p.By, "an operator"), p.Version)}}
	}
	canary, paused := canaryPause(snap, now)
	if canary.Kind == ResumeCanary {
		return canary
	}
	// worker-timeout counts from the start, or from the last resume; a
	// paused rollout waits for its operator as long as it takes.
	from := req.StartedAt
	if r := snap.Resume; r != nil && r.At.After(from) {
		from = r.At
	}
	deadline := from.Add(cfg.WorkerTimeout)
	if paused {
		deadline = now.Add(cfg.WorkerTimeout)
	}
	if !now.Before(deadline) {
		return Action{Kind: Stop, Why: "worker-timeout passed", Cause: &StopCause{
			Result: fleet.ResultTimeout, Message: fmt.Sprintf("not completed within worker-timeout %s; still running: %v", cfg.WorkerTimeout, unfinished(snap)),
		}}
	}
	wake := deadline
	for _, id := range active {
		if snap.Alive[id] != nil {
			continue
		}
		since, ok := in.MissingSince[id]
		if !ok {
			since = now
		}
		if dead := since.Add(cfg.DeadServerGrace); !now.Before(dead) {
			cause := &StopCause{Result: fleet.ResultDead, Server: id, Message: now.Sub(since).Truncate(time.Second).String()}
			if st := snap.Statuses[id]; st.For(req) && st.Cond == fleet.CondRunning && tolerated(req, st, cause) {
				return Action{Kind: GoOnWithout, Why: fmt.Sprintf("%s has no live worker in step %d; its max-failures %d tolerates it", id, st.Step, st.MaxFailures), Cause: cause}
			}
			return stopOrRollBack(req, snap.Statuses[id], now, Action{Kind: Stop, Why: "a server has no live worker", Cause: cause})
		} else if dead.Before(wake) {
			wake = dead
		}
	}
	if len(unfinished(snap)) == 0 {
		return Action{Kind: Complete, Why: "every server completed " + req.Version}
	}
	if paused {
		if !canary.Until.IsZero() && canary.Until.Before(wake) {
			wake = canary.Until
		}
		return Action{Kind: Wait, Until: wake, Why: canary.Why, Paused: canary.Paused}
	}
	return Action{Kind: Wait, Until: wake, Why: "the rollout to " + req.Version + " is running"}
}

// canaryPause looks at the servers held behind a step's canary, or by
// `ferry rollout pause`. paused is true while any is; the action is
// ResumeCanary when a step's pause duration has passed since its canary
// finished it, or else a Wait that says why and until when.
func canaryPause(snap *fleet.Snapshot, now time.Time) (Action, bool) {
	req := snap.Request
	if p := snap.Pause; p != nil {
		why := fmt.Sprintf("the rollout to %s is paused by `ferry rollout pause` (by %s, since %s)", req.Version, p.By, p.At.Format(time.RFC3339))
		if p.Reason != "" {
			why += ": " + p.Reason
		}
		return Action{Kind: Wait, Paused: "pause", Why: why + "; `ferry rollout resume` goes on"}, true
	}
	var held *fleet.UpdateStatus
	for _, id := range req.Active() {
		st := snap.Statuses[id]
		if st.For(req) && st.Cond == fleet.CondRunning && st.Phase == fleet.PhasePaused && st.Canary > 0 && (held == nil || st.Step < held.Step) {
			held = st
		}
	}
	if held == nil || (snap.Resume != nil && snap.Resume.Step >= held.Step) {
		return Action{}, false
	}
	k := held.Step
	why := fmt.Sprintf("the rollout to %s is paused behind the canary of step %d (%s)", req.Version, k, held.StepName)
	var done int
	var doneAt time.Time
	for _, id := range req.Active() {
		if st := snap.Statuses[id]; st.Reached(req) > k {
			done++
			doneAt = later(doneAt, st.UpdatedAt)
		}
	}
	if done < held.Canary {
		return Action{Kind: Wait, Why: why + fmt.Sprintf(": %d of %d canary server(s) finished it", done, held.Canary)}, true
	}
	paused := fmt.Sprintf("canary/%d", k)
	if req.Reason == fleet.ReasonRollback && (held.Pause == "" || held.Pause == "manual") {
		// A rollback runs when nobody may be watching: it keeps its
		// canary and health gates, and waits for no one.
		return Action{Kind: ResumeCanary, Step: k, Why: fmt.Sprintf("the canary finished step %d (%s); a rollback skips the plan's manual pauses", k, held.StepName)}, true
	}
	if held.Pause == "" || held.Pause == "manual" {
		return Action{Kind: Wait, Paused: paused, Why: why + ": the canary finished it; `ferry rollout resume` goes on"}, true
	}
	d, err := time.ParseDuration(held.Pause)
	if err != nil {
		return Action{Kind: Wait, Paused: paused, Why: why + ": pause " + held.Pause + " is not a duration; `ferry rollout resume` goes on"}, true
	}
	if at := doneAt.Add(d); now.Before(at) {
		return Action{Kind: Wait, Paused: paused, Until: at, Why: why + fmt.Sprintf(": the canary finished it; the rest go on at %s (pause %s)", at.Format(time.RFC3339), d)}, true
	}
	return Action{Kind: ResumeCanary, Step: k, Why: fmt.Sprintf("the canary finished step %d (%s) %s ago, its pause", k, held.StepName, d)}, true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// stopOrRollBack turns stop into a rollback when the failed server's step
// says on-failure: rollback and there is a version to go back to. A
// rollback that fails stops: it never rolls back again.
func stopOrRollBack(req *fleet.UpdateRequest, st *fleet.UpdateStatus, now time.Time, stop Action) Action {
	if !st.For(req) || st.OnFailure != "rollback" || req.Reason == fleet.ReasonRollback || req.From == "" || req.From == req.Version {
		return stop
	}
	return Action{
		Kind: RollBack, Cause: stop.Cause,
		Why: fmt.Sprintf("%s; its step says on-failure: rollback, so the fleet goes back to %s", stop.Cause, req.From),
		Request: &fleet.UpdateRequest{
			Version: req.From, From: req.Version, Servers: req.Servers, Reason: fleet.ReasonRollback, StartedAt: now.UTC(),
		},
	}
}

// tolerated reports whether the step a server failed (its status says
// which) tolerates one more failed server, and fills in the cause's step.
func tolerated(req *fleet.UpdateRequest, st *fleet.UpdateStatus, cause *StopCause) bool {
	cause.Step, cause.StepName, cause.MaxFailures = st.Step, st.StepName, st.MaxFailures
	return st.Step > 0 && st.MaxFailures > 0 && req.FailuresAt(st.Step) < st.MaxFailures
}

// unfinished lists the servers of the request that have not completed it,
// leaving out those it goes on without.
func unfinished(snap *fleet.Snapshot) []string {
	var out []string
	for _, id := range snap.Request.Active() {
		st := snap.Statuses[id]
		if !st.For(snap.Request) || st.Cond != fleet.CondCompleted {
			out = append(out, id)
		}
	}
	return out
}

// targetVersion is the version the fleet should run: the newest release
// seen for the current env, held back by the pin; with a pin that allows a
// downgrade, the pin itself.
func targetVersion(in Input) (release.Version, string) {
	snap := in.Snap
	var latest release.Version
	if r := snap.Release; r != nil && r.Env == in.Config.Env {
		latest = release.ParseVersionOrZero(r.Version)
	}
	if p := snap.Pin; p != nil {
		pin := release.ParseVersionOrZero(p.Version)
		switch {
		case pin.IsZero():
			return release.Version{}, "the pin " + p.Version + " is not a version"
		case p.AllowDowngrade:
			return pin, "pinned to " + p.Version
		case latest.IsZero():
			return release.Version{}, "no release seen yet for env " + string(in.Config.Env)
		case latest.Newer(pin):
			return pin, "release " + latest.String() + " is held back by the pin " + p.Version
		}
	}
	if latest.IsZero() {
		return latest, "no release seen yet for env " + string(in.Config.Env)
	}
	if r := snap.Refused[latest.String()]; r != nil {
		return release.Version{}, fmt.Sprintf("release %s is refused since its rollout failed at %s (%s); a newer release, or `ferry release unrefuse %s`, lets it go on", latest, r.At.Format(time.RFC3339), r.Reason, latest)
	}
	return latest, "release " + latest.String() + " is the newest for env " + string(in.Config.Env)
}

// fleetVersion is the newest version any live worker of a member runs.
func fleetVersion(snap *fleet.Snapshot) release.Version {
	var v release.Version
	for id := range snap.Servers {
		if a := snap.Alive[id]; a != nil {
			if av := release.ParseVersionOrZero(a.Version); av.Newer(v) {
				v = av
			}
		}
	}
	return v
}

func downgradeAllowed(snap *fleet.Snapshot, target release.Version) bool {
	return snap.Pin != nil && snap.Pin.AllowDowngrade && release.ParseVersionOrZero(snap.Pin.Version).Compare(target) == 0
}
