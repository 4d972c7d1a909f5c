package fleet

import "fmt"

// Local is what a worker knows of itself apart from etcd: its binary, its
// own record of the rollout, its version floor's verdict and, once asked,
// dpkg's database.
type Local struct {
	// ID is the server's id; Version the version of the running binary.
	ID, Version string
	// Done is the last step that the worker's own record says it finished
	// in the request's rollout (0 for none, or a record of another one);
	// Completed that the record says it completed the rollout.
	Done      int
	Completed bool
	// Floor is the version floor's verdict on the requested version: nil
	// when this server may run it.
	Floor error
	// Installs is how many times this rollout attempt installed the
	// requested version of ferry.
	Installs int
	// Dpkg is what dpkg's database says of the ferry package and of the
	// packages of the steps done; Repaired that a repair ran since.
	Dpkg     Dpkg
	Repaired bool
}

// Dpkg is dpkg's verdict on the packages a worker relies on.
type Dpkg int

// Verdicts of dpkg's database.
const (
	DpkgUnknown     Dpkg = iota // not asked yet
	DpkgOK                      // every package is installed ok
	DpkgFerryBroken             // ferry's own package is not installed ok
	DpkgOtherBroken             // a package of a done step is not installed ok
)

// MoveKind is what a worker does next.
type MoveKind int

// The worker's moves.
const (
	// MoveIdle: nothing to do until the request changes.
	MoveIdle MoveKind = iota
	// MoveStopped: the rollout was stopped; record that this server
	// stopped at a safe point, before step Step.
	MoveStopped
	// MoveRefuse: abort this server's part of the rollout, for Reason.
	MoveRefuse
	// MoveSelfUpgrade: install the requested version of ferry (again,
	// when dpkg's database says the install did not finish), then exit.
	MoveSelfUpgrade
	// MoveCheckDpkg: ask dpkg's database, then decide again.
	MoveCheckDpkg
	// MoveRepair: finish an interrupted dpkg run, before step Step, then
	// ask dpkg again.
	MoveRepair
	// MoveRunFrom: run the plan from step Step.
	MoveRunFrom
	// MoveWait: the worker cannot go on yet, for Reason; it tries again
	// after a pause.
	MoveWait
)

var moveNames = [...]string{"idle", "stopped", "refuse", "self-upgrade", "check-dpkg", "repair", "run-from", "wait"}

func (k MoveKind) String() string {
	if int(k) < len(moveNames) {
		return moveNames[k]
	}
	return fmt.Sprintf("MoveKind(%d)", int(k))
}

// Move is a worker's decision.
type Move struct {
	Kind MoveKind
	// Step is the step the move is about (MoveStopped, MoveRepair,
	// MoveRunFrom); 0 before the first.
	Step   int
	Reason string
	// Warning is something the worker noticed and should log: etcd says
	// otherwise than its own record.
	Warning string
}

func (m Move) String() string {
	s := m.Kind.String()
	if m.Step > 0 {
		s += fmt.Sprintf("(%d)", m.Step)
	}
	if m.Reason != "" {
		s += ": " + m.Reason
	}
	return s
}

// MaxInstalls is how many times a rollout attempt installs one version of
// ferry before it gives up: an install that does not change the running
// binary is not repeated for ever.
const MaxInstalls = 2

// NextMove is the worker's decision on a snapshot, given what it knows of
// itself. It does nothing itself: the worker carries the move out. Its own
// record, never etcd's copy of its status (which whoever writes etcd can
// forge), says which steps it finished.
func NextMove(l Local, snap *Snapshot) Move {
	req := snap.Request
	if req == nil || !req.IsMember(l.ID) || req.Finished() || req.IsFailed(l.ID) {
		return Move{Kind: MoveIdle}
	}
	own := snap.Statuses[l.ID]
	if !own.For(req) {
		own = nil
	}
	var warning string
	switch {
	case own != nil && own.Cond == CondAborted:
		return Move{Kind: MoveIdle}
	case own != nil && own.Cond == CondCompleted && l.Completed:
		return Move{Kind: MoveIdle}
	case own != nil && own.Cond == CondCompleted:
		warning = "etcd says this server completed the rollout, but its own record does not; running the steps"
		own = nil
	}
	start := l.Done + 1
	if req.Stop {
		return Move{Kind: MoveStopped, Step: start, Warning: warning}
	}
	if l.Version != req.Version {
		// Whoever writes etcd may ask for any version; this server goes
		// back at most one step.
		if l.Floor != nil {
			return Move{Kind: MoveRefuse, Reason: "refused " + req.Version + ": " + l.Floor.Error(), Warning: warning}
		}
		return selfUpgrade(l, snap, req, warning)
	}
	if own != nil && own.Step > 0 {
		said := own.Step
		if own.Phase == PhaseDone {
			said++
		}
		if said != start {
			warning = fmt.Sprintf("etcd's copy of this server's status says step %d is next, its own record says %d; resuming from its record", said, start)
		}
	}
	// The binary says it is the requested version; dpkg's database says
	// whether the install that brought it finished.
	switch {
	case l.Dpkg == DpkgUnknown:
		return Move{Kind: MoveCheckDpkg, Step: start, Warning: warning}
	case l.Dpkg == DpkgOK:
		return Move{Kind: MoveRunFrom, Step: start, Warning: warning}
	case !l.Repaired:
		return Move{Kind: MoveRepair, Step: start, Warning: warning}
	case l.Dpkg == DpkgFerryBroken:
		return selfUpgrade(l, snap, req, warning)
	}
	return Move{Kind: MoveWait, Step: start, Reason: "a package of a done step is not installed, and a repair did not bring it back (dpkg-output.log in the data-dir says why); the worker asks dpkg again every second, so fix the package by hand and it goes on", Warning: warning}
}

func selfUpgrade(l Local, snap *Snapshot, req *UpdateRequest, warning string) Move {
	if snap.Config == nil {
		return Move{Kind: MoveWait, Reason: fmt.Sprintf("cannot self-upgrade: %v", snap.ConfigErr), Warning: warning}
	}
	if l.Installs >= MaxInstalls {
		return Move{Kind: MoveRefuse, Reason: fmt.Sprintf("self-upgrade to %s was installed %d times in this rollout but this worker still runs %s, or dpkg still disagrees; check install-command and the package", req.Version, l.Installs, l.Version), Warning: warning}
	}
	return Move{Kind: MoveSelfUpgrade, Warning: warning}
}
