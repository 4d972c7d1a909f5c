package storage

import (
	"context"

	"github.com/ferry-cd/ferry/pkg/fleet"
)

// getRequest reads the current request and its mod revision, or
// ErrNotFound.
func getRequest(ctx context.Context, st *Storage) (*fleet.UpdateRequest, int64, error) {
	var req fleet.UpdateRequest
	rev, err := st.get(ctx, st.abs(keyCurrent), &req)
	if err != nil {
		return nil, 0, err
	}
	return &req, rev, nil
}

// getPin reads the pin, or ErrNotFound.
func getPin(ctx context.Context, st *Storage) (*fleet.Pin, error) {
	var p fleet.Pin
	if _, err := st.get(ctx, st.abs(keyPin), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// putRequest writes the request as leader l, whatever was there.
func putRequest(ctx context.Context, l *Leader, req *fleet.UpdateRequest) error {
	return l.fencedPut(ctx, l.s.abs(keyCurrent), req)
}

// statuses reads every worker's status, by server id.
func (s *Storage) statuses(ctx context.Context) (map[string]*fleet.UpdateStatus, error) {
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return snap.Statuses, nil
}
