package storage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A server's step records of a rollout are the writes under
// timeline/<started_at>/<id>/, each holding the records that changed since
// the one before: the bytes a rollout writes grow with its steps, not with
// their square. Read in the order they were written, they make the
// server's records (fleet.MergeStepRecords). A key timeline/<started_at>/<id>
// of its own, which an earlier ferry wrote with all the records in it,
// reads the same way.

// Timeline returns every server's step records of the rollout that started
// at startedAt: what its history record holds. Nothing on the barrier's
// path reads them.
func (s *Storage) Timeline(ctx context.Context, startedAt time.Time) (map[string][]fleet.StepRecord, error) {
	return s.readTimeline(ctx, startedAt, "")
}

// ServerTimeline returns server id's step records of the rollout that
// started at startedAt: what a worker that restarted in the middle of it
// takes up.
func (s *Storage) ServerTimeline(ctx context.Context, startedAt time.Time, id string) ([]fleet.StepRecord, error) {
	recs, err := s.readTimeline(ctx, startedAt, id)
	if err != nil {
		return nil, err
	}
	return recs[id], nil
}

// readTimeline reads the writes of server id's step records, or of every
// server's when id is "", and merges each server's in the order they were
// written.
func (s *Storage) readTimeline(ctx context.Context, startedAt time.Time, id string) (map[string][]fleet.StepRecord, error) {
	dir := s.timelineDir(startedAt)
	resp, err := s.cli.Get(ctx, dir+id, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read the step records: %w", err)
	}
	out := map[string][]fleet.StepRecord{}
	for _, kv := range resp.Kvs {
		server, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), dir), "/")
		// The prefix of boot-1 also holds boot-10's writes.
		if id != "" && server != id {
			continue
		}
		var recs []fleet.StepRecord
		if err := decode(string(kv.Key), kv.Value, &recs); err != nil {
			return nil, err
		}
		out[server] = fleet.MergeStepRecords(out[server], recs)
	}
	return out, nil
}
