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
	"os"
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

// maxLogSize is how large a detached command's log file may grow before a
// run starts it afresh.
const maxLogSize = 4 << 20

// RunDetached runs the command so that it outlives the caller: in a session
// of its own, with its output going to logFile rather than to a pipe. A
// SIGKILL of the caller then neither kills the command nor leaves it
// writing into a closed pipe, and a Ctrl-C at a terminal does not reach it.
// This is how dpkg must run: killed half way, it leaves a package
// half-installed. Once the command exits, its output is read back from the
// file, logged line by line, and its last lines kept for the error, as Run
// does. ctx ending kills the command's whole session.
func RunDetached(ctx context.Context, s Spec, logFile string, log *slog.Logger) error {
	if len(s.Argv) == 0 {
		return fmt.Errorf("empty command")
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if fi, err := os.Stat(logFile); err == nil && fi.Size() > maxLogSize {
		flags |= os.O_TRUNC
	}
	out, err := os.OpenFile(logFile, flags, 0o600)
	if err != nil {
		return fmt.Errorf("output file of %s: %w", s.Argv[0], err)
	}
	defer out.Close()
	start, err := out.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// An *os.File is handed to the child as it is: no copying goroutine in
	// this process that the child's writes would depend on.
	cmd.Stdout, cmd.Stderr = out, out
	if len(s.Env) > 0 {
		cmd.Env = cmd.Environ()
		for k, v := range s.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if err := cmd.Start(); err != nil {
		return &Error{Argv: s.Argv, Err: err}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = fmt.Errorf("%w (%v)", ctx.Err(), <-exited)
	}
	tail := &tail{}
	if in, oerr := os.Open(logFile); oerr == nil {
		if _, serr := in.Seek(start, io.SeekStart); serr == nil {
			sc := bufio.NewScanner(in)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				tail.add(sc.Text())
				log.Info(sc.Text(), "command", s.Argv[0])
			}
		}
		in.Close()
	}
	if err != nil {
		return &Error{Argv: s.Argv, Err: err, Tail: tail.lines()}
	}
	return nil
}
