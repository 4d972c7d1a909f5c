package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

// probeAfter bounds each probe of the endpoints (bootstrap.Config.Probe),
// and is the time between two: the first goes out with the command, and a
// refused connection, a certificate etcd rejects, a server that is not
// etcd or one that does not answer fails the command within it, with its
// cause, instead of at --command-timeout.
const probeAfter = 2 * time.Second

// unreachableError is etcd found unreachable by a probe, with the cause.
type unreachableError struct {
	endpoints string
	cause     error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("etcd at %s cannot be reached: %v", e.endpoints, e.cause)
}

func (e *unreachableError) Unwrap() error { return e.cause }

// storageCall runs fn with a connected storage, bounded by
// --command-timeout. An idempotent fn that meets a transient etcd error (a
// leader change, a member that went away, a request that timed out inside
// etcd) is run again with backoff while the timeout allows, and each retry
// is shown on stderr. Meanwhile, etcd's endpoints are probed every
// probeAfter: when none answers, the command ends at once with the cause.
func (a *app) storageCall(cmd *cobra.Command, idempotent bool, fn func(ctx context.Context, st *storage.Storage) error) error {
	ctx, st, closeFn, err := a.connect(cmd.Context())
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go a.probeWhileWaiting(ctx, cancel)

	_, err = retry.Do(ctx, retry.Policy{Base: 200 * time.Millisecond, Max: 2 * time.Second, Notify: func(err error, wait time.Duration) {
		fmt.Fprintf(a.stderr, "ferry: %v; retrying in %.1fs\n", err, wait.Seconds())
	}}, func() (struct{}, error) {
		err := fn(ctx, st)
		if !idempotent || context.Cause(ctx) != nil {
			return struct{}{}, retry.Permanent(err)
		}
		return struct{}{}, retry.OnlyTransient(err)
	})
	var unreachable *unreachableError
	if errors.As(context.Cause(ctx), &unreachable) {
		return unreachable
	}
	return err
}

// probeWhileWaiting probes etcd's endpoints every probeAfter until ctx
// ends, and cancels ctx with an unreachableError when none answers.
func (a *app) probeWhileWaiting(ctx context.Context, cancel context.CancelCauseFunc) {
	if a.cfg == nil {
		return
	}
	// The first probe goes out with the command: an endpoint that does
	// not answer at all is named within probeAfter, the dial timeout, not
	// at the command's own timeout.
	t := time.NewTicker(probeAfter)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		pctx, pcancel := context.WithTimeout(ctx, probeAfter)
		err := a.cfg.Probe(pctx)
		pcancel()
		if err != nil && ctx.Err() == nil {
			cancel(&unreachableError{endpoints: strings.Join(a.cfg.Endpoints, ","), cause: err})
			return
		}
	}
}
