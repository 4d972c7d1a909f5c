package storage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Timeline returns every server's step records of the rollout that started
// at startedAt, each server's in the order of the steps: what its history
// record holds. Nothing on the barrier's path reads them.
func (s *Storage) Timeline(ctx context.Context, startedAt time.Time) (map[string][]fleet.StepRecord, error) {
	return s.readTimeline(ctx, s.timelineDir(startedAt))
}

// ServerTimeline returns server id's step records of the rollout that
// started at startedAt: what a worker that restarted in the middle of it
// takes up.
func (s *Storage) ServerTimeline(ctx context.Context, startedAt time.Time, id string) ([]fleet.StepRecord, error) {
	m, err := s.readTimeline(ctx, s.timelineDir(startedAt)+id+"/")
	return m[id], err
}

func (s *Storage) readTimeline(ctx context.Context, prefix string) (map[string][]fleet.StepRecord, error) {
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the step records: %w", err)
	}
	out := map[string][]fleet.StepRecord{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), s.abs(keyTimelineDir))
		// <rollout>/<server>/<step>
		parts := strings.Split(rest, "/")
		if len(parts) != 3 {
			continue
		}
		var r fleet.StepRecord
		if err := decode(string(kv.Key), kv.Value, &r); err != nil {
			return nil, err
		}
		out[parts[1]] = append(out[parts[1]], r)
	}
	for _, recs := range out {
		slices.SortFunc(recs, func(a, b fleet.StepRecord) int { return a.Step - b.Step })
	}
	return out, nil
}
