package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type mvccKV = mvccpb.KeyValue

// Snapshot reads config, request, statuses, servers, liveness, pin, release
// info and contents in one transaction, so that they are consistent.
func (s *Storage) Snapshot(ctx context.Context) (*fleet.Snapshot, error) {
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
		clientv3.OpGet(s.abs(keyPlan)),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	kvs := func(i int) []*mvccKV { return resp.Responses[i].GetResponseRange().Kvs }

	snap := &fleet.Snapshot{Revision: resp.Header.Revision}
	if snap.Check, err = decodeOne[fleet.CheckInfo](kvs(10)); err != nil {
		return nil, err
	}
	if r := kvs(11); len(r) > 0 {
		snap.Leader = string(r[0].Value)
	}
	if err := s.readHead(snap, kvs(0), kvs(1)); err != nil {
		return nil, err
	}
	if snap.Statuses, err = decodeMap[fleet.UpdateStatus](kvs(2), s.abs(keyServerStatus)); err != nil {
		return nil, err
	}
	if snap.Servers, err = decodeMap[fleet.ServerInfo](kvs(3), s.abs(keyServersDir)); err != nil {
		return nil, err
	}
	if snap.Alive, err = decodeMap[fleet.Alive](kvs(4), s.abs(keyAliveDir)); err != nil {
		return nil, err
	}
	if snap.Pin, err = decodeOne[fleet.Pin](kvs(5)); err != nil {
		return nil, err
	}
	if snap.Release, err = decodeOne[fleet.ReleaseInfo](kvs(6)); err != nil {
		return nil, err
	}
	if snap.Contents, err = decodeMap[fleet.ContentsStatus](kvs(7), s.abs(keyContentsDir)); err != nil {
		return nil, err
	}
	if r := kvs(8); len(r) > 0 {
		snap.TriggerRev = r[0].ModRevision
	}
	if err := readPassed(snap, kvs(9)); err != nil {
		return nil, err
	}
	if snap.Refused, err = decodeMap[fleet.Refused](kvs(14), s.abs(keyRefusedDir)); err != nil {
		return nil, err
	}
	if err := readPauseResume(snap, kvs(12), kvs(13)); err != nil {
		return nil, err
	}
	if r := kvs(15); snap.Request != nil {
		p, err := decodeOne[fleet.PlanSteps](r)
		if err != nil {
			return nil, err
		}
		if p != nil && p.Rollout.Equal(snap.Request.StartedAt) {
			snap.Plan = p
		}
	}
	// A small fleet counts its arrivals itself (LocalBarrier): so does
	// the snapshot.
	snap.CountArrivals()
	return snap, nil
}

// WorkerSnapshot reads what one worker decides on, and nothing else: the
// config, the request, its own status, status/passed, status/pause and
// status/resume, in one transaction. Its cost does not grow with the
// fleet, so that a fleet that wakes on a new request does not read every
// server's keys N times over. Servers, Alive and Contents are left empty.
func (s *Storage) WorkerSnapshot(ctx context.Context, id string) (*fleet.Snapshot, error) {
	return s.workerSnapshot(ctx, id, nil)
}

// WorkerSnapshotAt is WorkerSnapshot at the revision of ch, with the
// request that ch carries: a worker woken by a new request does not read
// it again (a thousand servers would read the list of a thousand). It
// falls back to WorkerSnapshot when etcd has compacted that revision.
func (s *Storage) WorkerSnapshotAt(ctx context.Context, id string, ch *RequestChange) (*fleet.Snapshot, error) {
	snap, err := s.workerSnapshot(ctx, id, ch)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return s.WorkerSnapshot(ctx, id)
	}
	return snap, err
}

func (s *Storage) workerSnapshot(ctx context.Context, id string, ch *RequestChange) (*fleet.Snapshot, error) {
	var at []clientv3.OpOption
	if ch != nil {
		at = append(at, clientv3.WithRev(ch.kv.ModRevision))
	}
	ops := []clientv3.Op{
		clientv3.OpGet(s.abs(keyConfigDir), append(at, clientv3.WithPrefix())...),
		clientv3.OpGet(s.statusKey(id), at...),
		clientv3.OpGet(s.abs(keyPassed), at...),
		clientv3.OpGet(s.abs(keyPause), at...),
		clientv3.OpGet(s.abs(keyResume), at...),
	}
	if ch == nil {
		ops = append(ops, clientv3.OpGet(s.abs(keyCurrent)))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	kvs := func(i int) []*mvccKV { return resp.Responses[i].GetResponseRange().Kvs }
	snap := &fleet.Snapshot{Revision: resp.Header.Revision, Statuses: map[string]*fleet.UpdateStatus{}}
	current := kvs(len(ops) - 1)
	if ch != nil {
		snap.Revision, current = ch.kv.ModRevision, nil
		if !ch.deleted {
			current = []*mvccKV{ch.kv}
		}
	}
	if err := s.readHead(snap, kvs(0), current); err != nil {
		return nil, err
	}
	if r := kvs(1); len(r) > 0 {
		st := new(fleet.UpdateStatus)
		if err := decode(string(r[0].Key), r[0].Value, st); err != nil {
			return nil, err
		}
		snap.Statuses[id] = st
	}
	if err := readPassed(snap, kvs(2)); err != nil {
		return nil, err
	}
	if err := readPauseResume(snap, kvs(3), kvs(4)); err != nil {
		return nil, err
	}
	return snap, nil
}

// readHead decodes the config and the request, which every snapshot reads.
func (s *Storage) readHead(snap *fleet.Snapshot, config, current []*mvccKV) error {
	snap.ConfigValues = s.configFromKVs(config)
	snap.Config, snap.ConfigErr = s.parseConfig(snap.ConfigValues)
	if len(current) > 0 {
		snap.Request = new(fleet.UpdateRequest)
		if err := decode(string(current[0].Key), current[0].Value, snap.Request); err != nil {
			return err
		}
		snap.RequestRev = current[0].ModRevision
	}
	return nil
}

// readPauseResume decodes status/pause and status/resume when they are
// about the snapshot's request.
func readPauseResume(snap *fleet.Snapshot, pause, resume []*mvccKV) error {
	if snap.Request == nil {
		return nil
	}
	p, err := decodeOne[fleet.Pause](pause)
	if err != nil {
		return err
	}
	if p != nil && p.Rollout.Equal(snap.Request.StartedAt) {
		snap.Pause = p
	}
	r, err := decodeOne[fleet.Resume](resume)
	if err != nil {
		return err
	}
	if r != nil && r.Rollout.Equal(snap.Request.StartedAt) {
		snap.Resume = r
	}
	return nil
}

// decodeOne decodes the first of kvs, nil when there is none.
func decodeOne[T any](kvs []*mvccKV) (*T, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	v := new(T)
	if err := decode(string(kvs[0].Key), kvs[0].Value, v); err != nil {
		return nil, err
	}
	return v, nil
}

// readPassed decodes status/passed when it is about the snapshot's request.
func readPassed(snap *fleet.Snapshot, kvs []*mvccKV) error {
	if len(kvs) == 0 {
		return nil
	}
	p := new(fleet.Passed)
	if err := decode(string(kvs[0].Key), kvs[0].Value, p); err != nil {
		return err
	}
	snap.UsePassed(p)
	return nil
}
