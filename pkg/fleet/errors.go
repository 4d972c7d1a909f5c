package fleet

import "errors"

// ErrInvalid means a value was refused by validation, or a value stored
// in etcd could not be decoded.
var ErrInvalid = errors.New("invalid value")

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
