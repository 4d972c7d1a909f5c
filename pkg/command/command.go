// Package command runs external commands the way ferry's actions need:
// an argument list (never a shell string), every output line logged, and
// the last lines kept for the error message an operator reads.
package command

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TailLines is how many output lines an error keeps.
const TailLines = 10

// Spec is a command to run.
type Spec struct {
	Argv []string
	// Env is added to the worker's environment.
	Env map[string]string
	Dir string
}

// Error is a command that failed; Tail holds its last output lines.
type Error struct {
	Argv []string
	Err  error
	Tail []string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Argv[0], e.Err)
	if len(e.Tail) > 0 {
		msg += ": " + strings.Join(e.Tail, " | ")
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Run runs the command until it exits or ctx ends, logging each output line
// (stdout and stderr together) at info level.
func Run(ctx context.Context, s Spec, log *slog.Logger) error {
	if len(s.Argv) == 0 {
		return fmt.Errorf("empty command")
	}
	cmd := exec.CommandContext(ctx, s.Argv[0], s.Argv[1:]...)
	cmd.Dir = s.Dir
	// A command of its own process group can be ended whole: killing only
	// a shell would leave its children running and holding the output.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if len(s.Env) > 0 {
		cmd.Env = cmd.Environ()
		for k, v := range s.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	tail := &tail{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			log.Info(line, "command", s.Argv[0])
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return &Error{Argv: s.Argv, Err: err, Tail: tail.lines()}
	}
	return nil
}

type tail struct {
	mu  sync.Mutex
	buf []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	if len(t.buf) > TailLines {
		t.buf = t.buf[len(t.buf)-TailLines:]
	}
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
