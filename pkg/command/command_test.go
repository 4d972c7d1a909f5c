package command

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()

	require.NoError(t, Run(ctx, Spec{Argv: []string{"sh", "-c", "echo hello $GREETING"}, Env: map[string]string{"GREETING": "world"}}, log))
	require.Contains(t, logs.String(), "hello world")

	err := Run(ctx, Spec{Argv: []string{"sh", "-c", "for i in $(seq 1 20); do echo line$i; done; echo oops >&2; exit 3"}}, log)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.Len(t, ce.Tail, TailLines)
	require.Equal(t, "oops", ce.Tail[TailLines-1])
	require.Equal(t, "line12", ce.Tail[0])
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee))
	require.Equal(t, 3, ee.ExitCode())
	require.True(t, strings.HasSuffix(err.Error(), "line20 | oops"))

	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = Run(tctx, Spec{Argv: []string{"sleep", "10"}}, log)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Cancelling ends the children of a shell too, at once.
	began := time.Now()
	tctx2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	err = Run(tctx2, Spec{Argv: []string{"sh", "-c", "sleep 30; echo done"}}, log)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 4*time.Second, "a grandchild kept the command alive")

	require.Error(t, Run(ctx, Spec{Argv: []string{"/no/such/binary"}}, log))
	require.Error(t, Run(ctx, Spec{}, log))
}
