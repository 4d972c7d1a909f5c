package storage

import "errors"

var (
	// ErrNotFound means the key does not exist. It is never returned for a
	// failed read: a failed read returns the etcd error.
	ErrNotFound = errors.New("not found")

	// ErrNoLeader means a fenced write was refused because the caller's
	// leader key no longer exists. The caller must stop acting as leader.
	ErrNoLeader = errors.New("not the leader any more")

	// ErrConflict means a conditional write lost a race with another writer.
	ErrConflict = errors.New("changed concurrently")

	// ErrCompacted means a watch could not resume because etcd compacted the
	// revision it asked for. The caller must take a new snapshot.
	ErrCompacted = errors.New("watch revision was compacted")
)
