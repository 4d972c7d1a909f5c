package command

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
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

func TestRunDetached(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out.log")

	require.NoError(t, RunDetached(ctx, Spec{Argv: []string{"sh", "-c", "echo first $GREETING; ps -o sid= -p $$"}, Env: map[string]string{"GREETING": "world"}}, out, log))
	require.Contains(t, logs.String(), "first world")
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	sid, err := strconv.Atoi(strings.TrimSpace(strings.Split(strings.TrimSpace(string(data)), "\n")[1]))
	require.NoError(t, err)
	mine, err := unix.Getsid(0)
	require.NoError(t, err)
	require.NotEqual(t, mine, sid, "the command runs in a session of its own")

	// Only the lines of this run make its error.
	err = RunDetached(ctx, Spec{Argv: []string{"sh", "-c", "echo second; echo oops >&2; exit 3"}}, out, log)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, []string{"second", "oops"}, ce.Tail)

	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err = RunDetached(tctx, Spec{Argv: []string{"sh", "-c", "sleep 30; echo done"}}, out, log)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 4*time.Second, "ending ctx ends the whole session")

	require.Error(t, RunDetached(ctx, Spec{Argv: []string{"/no/such/binary"}}, out, log))
	require.Error(t, RunDetached(ctx, Spec{Argv: []string{"true"}}, filepath.Join(t.TempDir(), "no/dir/out.log"), log))
}

// TestRunDetachedOutlivesItsCaller SIGKILLs a process that waits in
// RunDetached, and checks that the command still runs to its end.
func TestRunDetachedOutlivesItsCaller(t *testing.T) {
	if dir := os.Getenv("FERRY_DETACHED_HELPER"); dir != "" {
		// The caller: waits for a command that writes a file once the gate exists.
		script := `echo started; while [ ! -e gate ]; do sleep 0.05; done; echo finished; echo done > result`
		RunDetached(context.Background(), Spec{Argv: []string{"sh", "-c", script}, Dir: dir}, filepath.Join(dir, "out.log"), slog.Default())
		os.Exit(0)
	}
	t.Parallel()
	dir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^TestRunDetachedOutlivesItsCaller$")
	helper.Env = append(os.Environ(), "FERRY_DETACHED_HELPER="+dir)
	require.NoError(t, helper.Start())
	require.Eventually(t, func() bool {
		data, _ := os.ReadFile(filepath.Join(dir, "out.log"))
		return string(data) == "started\n"
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, helper.Process.Kill())
	helper.Wait()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644))
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "result"))
		return err == nil && string(data) == "done\n"
	}, 10*time.Second, 10*time.Millisecond, "the command died with its caller")
	data, err := os.ReadFile(filepath.Join(dir, "out.log"))
	require.NoError(t, err)
	require.Equal(t, "started\nfinished\n", string(data), "its output went to the file")
}
