package retry

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Policy is how Do tries an operation again: after a wait that starts at
// Base and doubles, up to Max, each within 20% either way so that many
// clients do not retry in step (backoff v5's exponential backoff), for at most Tries tries in all (0: until the operation
// succeeds, fails for good, or its context ends).
type Policy struct {
	Base, Max time.Duration
	Tries     uint
	// Within, if set, bounds the time of all the tries: no wait starts
	// that would end past it.
	Within time.Duration
	// Notify, if set, hears each failed try and the wait before the next.
	Notify func(err error, wait time.Duration)
	// Waits, if set, is the wait after failed try n (from 1), in place
	// of the exponential backoff: a plan's own retry-backoff.
	Waits func(n int) time.Duration
}

// waits is a BackOff that asks Policy.Waits.
type waits struct {
	fn func(int) time.Duration
	n  int
}

func (w *waits) NextBackOff() time.Duration { w.n++; return w.fn(w.n) }
func (w *waits) Reset()                     { w.n = 0 }

// BackOff is the policy's waits, for a loop that schedules its own tries.
func (p Policy) BackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = p.Base, max(p.Max, p.Base)
	b.Multiplier, b.RandomizationFactor = 2, 0.2
	return b
}

// Permanent marks err as not worth another try: Do returns it at once.
func Permanent(err error) error { return backoff.Permanent(err) }

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p *backoff.PermanentError
	return errors.As(err, &p)
}

// Again has Do try once more after wait, and start its backoff over: for
// a try that made progress.
func Again(err error, wait time.Duration) error {
	return &askedWait{err: err, wait: wait}
}

// OnlyTransient is err as Do should see it: permanent unless Transient
// says that another try may succeed.
func OnlyTransient(err error) error {
	if err == nil || Transient(err) {
		return err
	}
	return Permanent(err)
}

// Do runs op until it succeeds, returns an error marked Permanent, has run
// Tries times, or ctx ends, and returns its last result and error. It
// starts no wait that would outlast ctx's deadline: it returns the last
// error instead of the deadline's. After a
// failure that asked for a wait (After), it waits that long instead of
// the backoff's wait.
func Do[T any](ctx context.Context, p Policy, op func() (T, error)) (T, error) {
	var b backoff.BackOff = p.BackOff()
	if p.Waits != nil {
		b = &waits{fn: p.Waits}
	}
	opts := []backoff.RetryOption{backoff.WithBackOff(&beforeDeadline{BackOff: b, ctx: ctx}), backoff.WithMaxElapsedTime(p.Within)}
	if p.Tries > 0 {
		opts = append(opts, backoff.WithMaxTries(p.Tries))
	}
	if p.Notify != nil {
		opts = append(opts, backoff.WithNotify(p.Notify))
	}
	return backoff.Retry(ctx, func() (T, error) {
		v, err := op()
		if d, ok := After(err, time.Now()); ok {
			return v, &askedWait{err: err, wait: d}
		}
		return v, err
	}, opts...)
}

// Delay is the wait before the next try after err, from b: what the
// server asked for (After), when that is longer.
func Delay(b backoff.BackOff, err error, now time.Time) time.Duration {
	d := b.NextBackOff()
	if asked, ok := After(err, now); ok && asked > d {
		return asked
	}
	return d
}

// Sleep waits d, or until ctx ends; it reports whether it waited d.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// askedWait is an error after which the server asked for a wait: backoff
// v5 sees a RetryAfterError, everyone else the error itself.
type askedWait struct {
	err  error
	wait time.Duration
}

func (e *askedWait) Error() string { return e.err.Error() }
func (e *askedWait) Unwrap() error { return e.err }

// As makes backoff v5 wait what the server asked for.
func (e *askedWait) As(target any) bool {
	if t, ok := target.(**backoff.RetryAfterError); ok {
		*t = &backoff.RetryAfterError{Duration: e.wait}
		return true
	}
	return false
}

// beforeDeadline stops a backoff whose next wait would outlast the
// context's deadline.
type beforeDeadline struct {
	backoff.BackOff
	ctx context.Context
}

func (b *beforeDeadline) NextBackOff() time.Duration {
	d := b.BackOff.NextBackOff()
	if deadline, ok := b.ctx.Deadline(); ok && d != backoff.Stop && time.Until(deadline) < d {
		return backoff.Stop
	}
	return d
}
