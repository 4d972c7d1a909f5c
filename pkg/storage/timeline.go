package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Timeline returns every server's step records of the rollout that started
// at startedAt: what its history record holds. Nothing on the barrier's
// path reads them.
func (s *Storage) Timeline(ctx context.Context, startedAt time.Time) (map[string][]fleet.StepRecord, error) {
	dir := s.timelineDir(startedAt)
	resp, err := s.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the step records: %w", err)
	}
	out := map[string][]fleet.StepRecord{}
	for _, kv := range resp.Kvs {
		var recs []fleet.StepRecord
		if err := decode(string(kv.Key), kv.Value, &recs); err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(string(kv.Key), dir)] = recs
	}
	return out, nil
}

// ServerTimeline returns server id's step records of the rollout that
// started at startedAt: what a worker that restarted in the middle of it
// takes up.
func (s *Storage) ServerTimeline(ctx context.Context, startedAt time.Time, id string) ([]fleet.StepRecord, error) {
	var recs []fleet.StepRecord
	if _, err := s.get(ctx, s.timelineKey(startedAt, id), &recs); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return recs, nil
}
