package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Change is one key that changed after a snapshot.
type Change struct {
	// Key is relative to the prefix, e.g. "status/servers/boot-0".
	Key      string
	Revision int64
	Deleted  bool
}

// WaitChange blocks until at least one key under the prefix changes at a
// revision after afterRev. Pass a snapshot's Revision to see every change
// made after it, including those made before this call. When etcd has
// compacted afterRev+1 it returns ErrCompacted, and the caller must take a
// new snapshot.
func (s *Storage) WaitChange(ctx context.Context, afterRev int64) error {
	_, err := s.waitChanges(ctx, afterRev)
	return err
}

// waitChanges is WaitChange, which also returns the changes of the first
// batch etcd delivers.
func (s *Storage) waitChanges(ctx context.Context, afterRev int64) ([]Change, error) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	wch := s.cli.Watch(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(afterRev+1))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return nil, fmt.Errorf("resume at revision %d (compacted at %d): %w", afterRev+1, resp.CompactRevision, ErrCompacted)
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil, fmt.Errorf("resume at revision %d: %w", afterRev+1, ErrCompacted)
			}
			return nil, fmt.Errorf("watch %s: %w", s.prefix, err)
		}
		var changes []Change
		for _, ev := range resp.Events {
			key := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
			// Which server holds which asset is for workers only; a
			// rollout's fetches must not wake the updater.
			if strings.HasPrefix(key, keyPeersDir) {
				continue
			}
			changes = append(changes, Change{Key: key, Revision: ev.Kv.ModRevision, Deleted: ev.Type == clientv3.EventTypeDelete})
		}
		if len(changes) > 0 {
			return changes, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("watch %s: channel closed", s.prefix)
}

// RequestChange is a change of status/current that WaitRequest saw: the
// key as the change left it, at its revision.
type RequestChange struct {
	kv      *mvccpb.KeyValue
	deleted bool
}

// WaitRequest blocks until status/current changes at a revision after
// afterRev, and returns the last change etcd delivered. An idle worker
// waits here rather than on the whole prefix, so that the statuses of a
// large fleet do not wake it, and it re-reads nothing until its request
// changes; then WorkerSnapshotAt reads the rest at the change's revision.
func (s *Storage) WaitRequest(ctx context.Context, afterRev int64) (*RequestChange, error) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.cli.Watch(ctx, s.abs(keyCurrent), clientv3.WithRev(afterRev+1)) {
		if resp.CompactRevision != 0 {
			return nil, fmt.Errorf("resume at revision %d (compacted at %d): %w", afterRev+1, resp.CompactRevision, ErrCompacted)
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil, fmt.Errorf("resume at revision %d: %w", afterRev+1, ErrCompacted)
			}
			return nil, fmt.Errorf("watch the request: %w", err)
		}
		if n := len(resp.Events); n > 0 {
			ev := resp.Events[n-1]
			return &RequestChange{kv: ev.Kv, deleted: ev.Type == clientv3.EventTypeDelete}, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("watch the request: channel closed")
}
