package storage

import "errors"

var (
	// ErrNotFound means the key does not exist. It is never returned for a
	// failed read: a failed read returns the etcd error.
	ErrNotFound = errors.New("not found")

	// ErrInvalid means a value was refused by validation, or a value stored
	// in etcd could not be decoded.
	ErrInvalid = errors.New("invalid value")

	// ErrNoLeader means a fenced write was refused because the caller's
	// leader key no longer exists. The caller must stop acting as leader.
	ErrNoLeader = errors.New("not the leader any more")

	// ErrConflict means a conditional write lost a race with another writer.
	ErrConflict = errors.New("changed concurrently")

	// ErrCompacted means a watch could not resume because etcd compacted the
	// revision it asked for. The caller must take a new snapshot.
	ErrCompacted = errors.New("watch revision was compacted")
)

// ValidationError describes a refused value in words an operator can act on.
type ValidationError struct {
	Key    string
	Value  string // empty for secrets, which are never echoed
	Reason string
	Hint   string // an example of a good value, or what to do
}

func (e *ValidationError) Error() string {
	msg := e.Key + ": "
	if e.Value != "" {
		msg += quote(e.Value) + " "
	}
	msg += e.Reason
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap lets callers test for ErrInvalid with errors.Is.
func (e *ValidationError) Unwrap() error { return ErrInvalid }
