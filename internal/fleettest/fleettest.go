// Package fleettest has helpers for tests that drive a fleet through etcd.
package fleettest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Ctx returns a context that ends with the test, or after a minute.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// AsLeader runs fn as the updater leader, for tests that play the updater
// by hand. It blocks while a real updater leads.
func AsLeader(t testing.TB, st *storage.Storage, fn func(l *storage.Leader) error) {
	t.Helper()
	ctx := Ctx(t)
	sess, err := concurrency.NewSession(st.Client())
	require.NoError(t, err)
	defer sess.Close()
	elec := concurrency.NewElection(sess, st.UpdaterElectionPrefix())
	require.NoError(t, elec.Campaign(ctx, "test"))
	require.NoError(t, fn(st.AsLeader(elec.Key())))
	require.NoError(t, elec.Resign(ctx))
}

// SetConfig sets config keys from key, value pairs.
func SetConfig(t testing.TB, st *storage.Storage, kv ...string) {
	t.Helper()
	for i := 0; i < len(kv); i += 2 {
		_, err := st.SetConfig(Ctx(t), kv[i], kv[i+1])
		require.NoError(t, err, "%s=%s", kv[i], kv[i+1])
	}
}

// StandIn is a leader's writer fenced on a key of the test's own, outside
// the election, which lasts until the test ends: for a test that plays the
// barrier coordinator beside a real updater, which may lead or not.
func StandIn(t testing.TB, st *storage.Storage) *storage.Leader {
	t.Helper()
	key := st.Prefix() + "test/stand-in/" + t.Name()
	_, err := st.Client().Put(Ctx(t), key, "")
	require.NoError(t, err)
	return st.AsLeader(key)
}

// GetRequest reads the current request and its mod revision;
// storage.ErrNotFound when there is none.
func GetRequest(ctx context.Context, st *storage.Storage) (*fleet.UpdateRequest, int64, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, 0, err
	}
	if snap.Request == nil {
		return nil, 0, fmt.Errorf("status/current: %w", storage.ErrNotFound)
	}
	return snap.Request, snap.RequestRev, nil
}

// GetStatuses reads every worker's status, by server id.
func GetStatuses(ctx context.Context, st *storage.Storage) (map[string]*fleet.UpdateStatus, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return snap.Statuses, nil
}

// GetPin reads the pin; storage.ErrNotFound when there is none.
func GetPin(ctx context.Context, st *storage.Storage) (*fleet.Pin, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if snap.Pin == nil {
		return nil, fmt.Errorf("pin: %w", storage.ErrNotFound)
	}
	return snap.Pin, nil
}

// PutRequest writes req as the current request, as leader l, whatever
// request was there: for tests that set a fleet up.
func PutRequest(ctx context.Context, st *storage.Storage, l *storage.Leader, req *fleet.UpdateRequest) error {
	_, rev, err := GetRequest(ctx, st)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return l.ReviseRequest(ctx, req, rev)
}
