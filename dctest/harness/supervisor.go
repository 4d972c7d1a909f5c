package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Restart policies, as in a systemd unit.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
)

// daemon plays systemd for one program: it starts the binary found at its
// path now (so that a package upgrade takes effect at the next start) and
// restarts it by policy.
type daemon struct {
	name    string
	bin     string
	args    []string
	env     []string
	policy  string
	logPath string
	// onExit is told every exit status (-1 for a signal).
	onExit func(status int)

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	// restarting makes the next exit restart the daemon whatever its status.
	restarting bool
	starts     int
	done       chan struct{}
}

func (d *daemon) start() {
	d.done = make(chan struct{})
	go d.loop()
}

func (d *daemon) loop() {
	defer close(d.done)
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer logf.Close()
	for {
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return
		}
		cmd := exec.Command(d.bin, d.args...)
		cmd.Env = append(append(os.Environ(), oneProc), d.env...)
		// A group of its own: a Ctrl-C at the terminal reaches only the
		// harness, which then stops the daemons in order. If the harness
		// dies without stopping them (SIGKILL, a closed pipe), they die
		// with it rather than linger.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.Stdout, cmd.Stderr = logf, logf
		fmt.Fprintf(logf, "--- supervisor: start %s (start %d)\n", d.name, d.starts+1)
		err := cmd.Start()
		if err == nil {
			d.cmd = cmd
			d.starts++
		}
		d.mu.Unlock()
		status := 1
		if err == nil {
			err = cmd.Wait()
			status = exitStatus(err)
		} else {
			fmt.Fprintf(logf, "--- supervisor: cannot start: %v\n", err)
		}
		fmt.Fprintf(logf, "--- supervisor: %s exited with %d\n", d.name, status)
		if d.onExit != nil {
			d.onExit(status)
		}
		d.mu.Lock()
		d.cmd = nil
		stop := d.stopped || (d.policy == RestartOnFailure && status == 0 && !d.restarting)
		d.restarting = false
		d.mu.Unlock()
		if stop {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return 1
}

// signal sends sig to the running process, if any.
func (d *daemon) signal(sig syscall.Signal) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return false
	}
	return d.cmd.Process.Signal(sig) == nil
}

// restart stops the process and starts it again, as systemctl restart.
func (d *daemon) restart() {
	d.mu.Lock()
	d.restarting = true
	d.mu.Unlock()
	d.signal(syscall.SIGTERM)
}

// kill kills the process with SIGKILL; the policy decides on a restart.
func (d *daemon) kill() bool { return d.signal(syscall.SIGKILL) }

// stop stops supervising and ends the process.
func (d *daemon) stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.kill()
		<-d.done
	}
}

// Starts is how many times the daemon was started.
func (d *daemon) Starts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.starts
}
