package storage

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type mvccKV = mvccpb.KeyValue

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Snapshot is everything the updater and workers decide on, read at one
// etcd revision.
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
	// Refused are the refused versions, by version.
	Refused map[string]*Refused
	// Leader is the id of the updater that leads, "" while none does.
	Leader string
	// TriggerRev is the mod revision of trigger/check, 0 when none: a
	// larger value than last seen asks for a release check now.
	TriggerRev int64
}

// Snapshot reads config, request, statuses, servers, liveness, pin, release
// info and contents in one transaction, so that they are consistent.
func (s *Storage) Snapshot(ctx context.Context) (*Snapshot, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.abs(keyConfigDir), clientv3.WithPrefix()),
		clientv3.OpGet(s.abs(keyCurrent)),
		clientv3.OpGet(s.abs(keyServerStatus), clientv3.WithPrefix()),
		clientv3.OpGet(s.abs(keyServersDir), clientv3.WithPrefix()),
		clientv3.OpGet(s.abs(keyAliveDir), clientv3.WithPrefix()),
		clientv3.OpGet(s.abs(keyPin)),
		clientv3.OpGet(s.abs(keyReleaseInfo)),
		clientv3.OpGet(s.abs(keyContentsDir), clientv3.WithPrefix()),
		clientv3.OpGet(s.abs(keyTrigger)),
		clientv3.OpGet(s.abs(keyPassed)),
		clientv3.OpGet(s.abs(keyCheck)),
		clientv3.OpGet(s.UpdaterElectionPrefix(), clientv3.WithFirstCreate()...),
		clientv3.OpGet(s.abs(keyPause)),
		clientv3.OpGet(s.abs(keyResume)),
		clientv3.OpGet(s.abs(keyRefusedDir), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	kvs := func(i int) []*mvccKV { return resp.Responses[i].GetResponseRange().Kvs }

	snap := &Snapshot{Revision: resp.Header.Revision}
	if r := kvs(10); len(r) > 0 {
		snap.Check = new(CheckInfo)
		if err := decode(string(r[0].Key), r[0].Value, snap.Check); err != nil {
			return nil, err
		}
	}
	if r := kvs(11); len(r) > 0 {
		snap.Leader = string(r[0].Value)
	}
	if err := s.readHead(snap, kvs(0), kvs(1)); err != nil {
		return nil, err
	}
	if snap.Statuses, err = decodeMap[UpdateStatus](kvs(2), s.abs(keyServerStatus)); err != nil {
		return nil, err
	}
	if snap.Servers, err = decodeMap[ServerInfo](kvs(3), s.abs(keyServersDir)); err != nil {
		return nil, err
	}
	if snap.Alive, err = decodeMap[Alive](kvs(4), s.abs(keyAliveDir)); err != nil {
		return nil, err
	}
	if r := kvs(5); len(r) > 0 {
		snap.Pin = new(Pin)
		if err := decode(string(r[0].Key), r[0].Value, snap.Pin); err != nil {
			return nil, err
		}
	}
	if r := kvs(6); len(r) > 0 {
		snap.Release = new(ReleaseInfo)
		if err := decode(string(r[0].Key), r[0].Value, snap.Release); err != nil {
			return nil, err
		}
	}
	if snap.Contents, err = decodeMap[ContentsStatus](kvs(7), s.abs(keyContentsDir)); err != nil {
		return nil, err
	}
	if r := kvs(8); len(r) > 0 {
		snap.TriggerRev = r[0].ModRevision
	}
	if err := snap.readPassed(kvs(9)); err != nil {
		return nil, err
	}
	if snap.Refused, err = decodeMap[Refused](kvs(14), s.abs(keyRefusedDir)); err != nil {
		return nil, err
	}
	if r := kvs(12); len(r) > 0 && snap.Request != nil {
		p := new(Pause)
		if err := decode(string(r[0].Key), r[0].Value, p); err != nil {
			return nil, err
		}
		if p.Rollout.Equal(snap.Request.StartedAt) {
			snap.Pause = p
		}
	}
	if r := kvs(13); len(r) > 0 && snap.Request != nil {
		res := new(Resume)
		if err := decode(string(r[0].Key), r[0].Value, res); err != nil {
			return nil, err
		}
		if res.Rollout.Equal(snap.Request.StartedAt) {
			snap.Resume = res
		}
	}
	// A small fleet counts its arrivals itself (LocalBarrier): so does
	// the snapshot.
	if req := snap.Request; req != nil {
		reached := make(map[string]int, len(req.Servers))
		for _, id := range req.Servers {
			reached[id] = snap.Statuses[id].Reached(req)
		}
		if low := lowest(req.Active(), reached); low > 0 && (snap.Passed == nil || low > snap.Passed.Step) {
			snap.Passed = &Passed{Rollout: req.StartedAt, Step: low}
		}
	}
	return snap, nil
}

// Phase is a server's phase in the request as an operator means it: a
// server whose status waits at a barrier that has passed is running that
// step, since a lockstep step writes no report of its own when it starts.
// "" when the server has not reported on the request.
func (s *Snapshot) Phase(id string) string {
	st := s.Statuses[id]
	if !st.For(s.Request) {
		return ""
	}
	if st.Phase == PhaseWaiting && st.Cond == CondRunning && s.Passed != nil && s.Passed.Step >= st.Step {
		return PhaseRunning
	}
	return st.Phase
}

// WorkerSnapshot reads what one worker decides on, and nothing else: the
// config, the request, its own status and status/passed, in one
// transaction. Its cost does not grow with the fleet, so that a fleet that
// wakes on a new request does not read every server's keys N times over.
// Servers, Alive and Contents are left empty.
func (s *Storage) WorkerSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.abs(keyConfigDir), clientv3.WithPrefix()),
		clientv3.OpGet(s.abs(keyCurrent)),
		clientv3.OpGet(s.statusKey(id)),
		clientv3.OpGet(s.abs(keyPassed)),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	kvs := func(i int) []*mvccKV { return resp.Responses[i].GetResponseRange().Kvs }
	snap := &Snapshot{Revision: resp.Header.Revision, Statuses: map[string]*UpdateStatus{}}
	if err := s.readHead(snap, kvs(0), kvs(1)); err != nil {
		return nil, err
	}
	if r := kvs(2); len(r) > 0 {
		st := new(UpdateStatus)
		if err := decode(string(r[0].Key), r[0].Value, st); err != nil {
			return nil, err
		}
		snap.Statuses[id] = st
	}
	if err := snap.readPassed(kvs(3)); err != nil {
		return nil, err
	}
	return snap, nil
}

// readHead decodes the config and the request, which every snapshot reads.
func (s *Storage) readHead(snap *Snapshot, config, current []*mvccKV) error {
	snap.ConfigValues = s.configFromKVs(config)
	snap.Config, snap.ConfigErr = s.parseConfig(snap.ConfigValues)
	if len(current) > 0 {
		snap.Request = new(UpdateRequest)
		if err := decode(string(current[0].Key), current[0].Value, snap.Request); err != nil {
			return err
		}
		snap.RequestRev = current[0].ModRevision
	}
	return nil
}

// readPassed decodes status/passed when it is about the snapshot's request.
func (snap *Snapshot) readPassed(kvs []*mvccKV) error {
	if len(kvs) == 0 {
		return nil
	}
	p := new(Passed)
	if err := decode(string(kvs[0].Key), kvs[0].Value, p); err != nil {
		return err
	}
	if snap.Request != nil && p.Rollout.Equal(snap.Request.StartedAt) {
		snap.Passed = p
	}
	return nil
}

// Server states, as the fleet gauge and the status page name them.
const (
	StateIdle      = "idle"      // not in the rollout, or not reported on it yet
	StateNotAlive  = "not-alive" // no live worker (alive/<id> is gone)
	StateUpgrading = "upgrading"
	StateWaiting   = "waiting"
	StateRunning   = "running"
	StateRetrying  = "retrying"
	StateRepairing = "repairing"
	StateCompleted = "completed"
	StateAborted   = "aborted"
	StateFailed    = "failed" // failed a step that tolerated it; the rollout goes on without it
	StatePaused    = "paused" // waits for the canary, or for ferry rollout resume
)

// ServerStates are every state State returns.
var ServerStates = []string{StateIdle, StateNotAlive, StateUpgrading, StateWaiting, StateRunning, StateRetrying, StateRepairing, StateCompleted, StateAborted, StateFailed, StatePaused}

// State is one server's state in the request, in a word.
func (s *Snapshot) State(id string) string {
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
	switch st.Cond {
	case CondCompleted:
		return StateCompleted
	case CondAborted:
		return StateAborted
	}
	switch s.Phase(id) {
	case PhaseUpgrading:
		return StateUpgrading
	case PhaseWaiting:
		return StateWaiting
	case PhaseRetrying:
		return StateRetrying
	case PhaseRepairing:
		return StateRepairing
	case PhasePaused:
		return StatePaused
	}
	return StateRunning
}
