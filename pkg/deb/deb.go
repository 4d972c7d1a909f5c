// Package deb installs Debian packages with the configured install command,
// and asks dpkg's database, the only truth about what a server has
// installed, how each package stands.
//
// dpkg runs detached from the worker (a session of its own, output to a
// file), so that a worker killed mid-install cannot kill or stall it. A
// dpkg run that was interrupted all the same is finished with
// `dpkg --configure -a`, and a dpkg lock held by another run is waited
// for, not taken as a failure.
package deb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-cd/ferry/pkg/command"
	"github.com/ferry-cd/ferry/pkg/retry"
)

// Defaults of an Installer.
const (
	DefaultTimeout  = 30 * time.Minute
	DefaultLockWait = 10 * time.Minute
)

// ErrBusy means another dpkg run holds dpkg's lock.
var ErrBusy = errors.New("dpkg is busy: another dpkg run holds its lock")

// Installer runs the install command with a .deb file as its last argument.
type Installer struct {
	// Command is the argument list, ending in -i, e.g. [systemd-run --wait
	// --pipe --quiet dpkg -i] in production or [dpkg --root=R
	// --admindir=R/var/lib/dpkg --force-not-root --force-script-chrootless
	// -i] in dctest. The repair command is the same with --configure -a in
	// place of -i, and --root/--admindir tell which database to query.
	Command []string
	// Timeout bounds one dpkg run.
	Timeout time.Duration
	// LockWait bounds how long a held dpkg lock is waited for.
	LockWait time.Duration
	// Output is the file dpkg writes its output to, kept so that the
	// output of a run the worker did not live to see can be read; default
	// a temporary file per run.
	Output string
	Log    *slog.Logger
}

// CheckCommand tells whether an install command has the shape the
// Installer needs: it ends in -i (or --install).
func CheckCommand(argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("install-command is empty")
	}
	if last := argv[len(argv)-1]; last != "-i" && last != "--install" {
		return fmt.Errorf("install-command must end with dpkg's -i (the .deb is appended), not %q: ferry derives `dpkg --configure -a` from it to repair interrupted installs", last)
	}
	return nil
}

func (i *Installer) log() *slog.Logger {
	if i.Log == nil {
		return slog.Default()
	}
	return i.Log
}

// Install installs file, waiting out another dpkg run's lock and finishing
// an interrupted run first. The dpkg run itself is detached from ctx: a
// dpkg stopped half way leaves a package half-configured, which is worse
// than a shutdown that waits for it. Only Timeout bounds it.
func (i *Installer) Install(ctx context.Context, file string) error {
	if err := CheckCommand(i.Command); err != nil {
		return err
	}
	err := i.run(ctx, "install "+filepath.Base(file), append(i.prefix(), "-i", file))
	if err == nil {
		return nil
	}
	if !killed(err) {
		return fmt.Errorf("install %s: %w", file, err)
	}
	// The install command was killed before it could say how dpkg ended:
	// a stop of the worker's unit signals the systemd-run client, while
	// dpkg goes on in its own unit. dpkg's database says how it ended.
	if ok, qerr := i.installedAsFile(ctx, file); qerr == nil && ok {
		i.log().Warn("the install command was killed, but dpkg finished the install", "file", filepath.Base(file), "error", err)
		return nil
	}
	return fmt.Errorf("install %s: %w", file, &InterruptedError{Err: err})
}

// InterruptedError says that the install command was killed by a signal
// before dpkg was done. It is worth another try: dpkg's own run, in its
// unit, may well finish, and the next install (or a repair) sees it.
type InterruptedError struct{ Err error }

func (e *InterruptedError) Error() string {
	return "the install command was killed before dpkg finished: " + e.Err.Error()
}
func (e *InterruptedError) Unwrap() error   { return e.Err }
func (e *InterruptedError) Transient() bool { return true }

// killed reports whether a command ended by a signal.
func killed(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return ws.Signaled()
		}
	}
	return false
}

// installedAsFile waits until no dpkg run holds the database (the one the
// killed command started may still run), then reports whether the package
// in file is installed ok at the file's version.
func (i *Installer) installedAsFile(ctx context.Context, file string) (bool, error) {
	name, err := Field(ctx, file, "Package")
	if err != nil {
		return false, err
	}
	version, err := Field(ctx, file, "Version")
	if err != nil {
		return false, err
	}
	lockWait := i.LockWait
	if lockWait <= 0 {
		lockWait = DefaultLockWait
	}
	// Wait for the run that holds dpkg's lock, up to lockWait.
	_, err = retry.Do(ctx, retry.Policy{Base: 200 * time.Millisecond, Max: 200 * time.Millisecond, Within: lockWait}, func() (struct{}, error) {
		if _, held := lockHolder(i.adminDirOrSystem()); held {
			return struct{}{}, ErrBusy
		}
		return struct{}{}, nil
	})
	if err != nil {
		return false, err
	}
	st, err := i.Query(ctx, name)
	if err != nil {
		return false, err
	}
	return st.Expect(version) == nil, nil
}

// Repair finishes what interrupted dpkg runs left: packages unpacked but
// not configured, half-configured, or waiting for triggers. It returns what
// `dpkg --audit` found ("" when there was nothing to do).
func (i *Installer) Repair(ctx context.Context) (string, error) {
	if err := CheckCommand(i.Command); err != nil {
		return "", err
	}
	found, err := i.Audit(ctx)
	if err != nil || found == "" {
		return found, err
	}
	i.log().Warn("dpkg was interrupted; finishing with dpkg --configure -a", "audit", found)
	if err := i.run(ctx, "configure -a", append(i.prefix(), "--configure", "-a")); err != nil {
		return found, fmt.Errorf("repair with dpkg --configure -a: %w", err)
	}
	return found, nil
}

// Audit returns what `dpkg --audit` says is wrong in the database, in one
// line, or "" when every package is in a sound state.
func (i *Installer) Audit(ctx context.Context) (string, error) {
	args := append(i.dbFlags(), "--audit")
	out, err := exec.CommandContext(ctx, "dpkg", args...).CombinedOutput()
	text := strings.Join(strings.Fields(string(out)), " ")
	if err != nil && text == "" {
		return "", fmt.Errorf("dpkg --audit: %w", err)
	}
	// dpkg --audit exits 1 when it found something, and says what.
	return text, nil
}

// Query returns the state of pkg in the Installer's dpkg database.
func (i *Installer) Query(ctx context.Context, pkg string) (State, error) {
	return Query(ctx, i.AdminDir(), pkg)
}

// prefix is the install command without its final -i.
func (i *Installer) prefix() []string {
	return append([]string(nil), i.Command[:len(i.Command)-1]...)
}

// dbFlags are the install command's --root and --admindir options.
func (i *Installer) dbFlags() []string {
	var out []string
	for _, a := range i.Command {
		if strings.HasPrefix(a, "--root=") || strings.HasPrefix(a, "--admindir=") {
			out = append(out, a)
		}
	}
	return out
}

// AdminDir is the dpkg database the install command writes: its
// --admindir, else <root>/var/lib/dpkg for --root, else "" (the system's).
func (i *Installer) AdminDir() string {
	root := ""
	for _, a := range i.Command {
		if v, ok := strings.CutPrefix(a, "--admindir="); ok {
			return v
		}
		if v, ok := strings.CutPrefix(a, "--root="); ok {
			root = v
		}
	}
	if root != "" {
		return filepath.Join(root, "var/lib/dpkg")
	}
	return ""
}

// run runs one dpkg command, retried while another run holds the lock (up
// to LockWait) and after finishing an interrupted run.
func (i *Installer) run(ctx context.Context, what string, argv []string) error {
	timeout := i.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	lockWait := i.LockWait
	if lockWait <= 0 {
		lockWait = DefaultLockWait
	}
	output := i.Output
	if output == "" {
		f, err := os.CreateTemp("", "ferry-dpkg-*.log")
		if err != nil {
			return err
		}
		f.Close()
		defer os.Remove(f.Name())
		output = f.Name()
	}
	log := i.log()
	repaired := false
	attempt := func() (struct{}, error) {
		if pid, held := lockHolder(i.adminDirOrSystem()); held {
			return struct{}{}, fmt.Errorf("%w (pid %d)", ErrBusy, pid)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		err := command.RunDetached(rctx, command.Spec{Argv: argv}, output, log)
		if err == nil {
			return struct{}{}, nil
		}
		text := err.Error()
		switch {
		case strings.Contains(text, "locked by another process") || strings.Contains(text, "database is locked"):
			return struct{}{}, fmt.Errorf("%w: %v", ErrBusy, err)
		case strings.Contains(text, "dpkg was interrupted") && !repaired:
			repaired = true
			log.Warn("dpkg was interrupted; running dpkg --configure -a before retrying", "run", what)
			if rerr := command.RunDetached(rctx, command.Spec{Argv: append(i.prefix(), "--configure", "-a")}, output, log); rerr != nil {
				return struct{}{}, retry.Permanent(fmt.Errorf("%v; and dpkg --configure -a: %w", err, rerr))
			}
			return struct{}{}, err
		}
		return struct{}{}, retry.Permanent(err)
	}
	// Wait for the run that holds dpkg's lock, up to lockWait.
	_, err := retry.Do(ctx, retry.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second, Within: lockWait, Notify: func(err error, next time.Duration) {
		log.Warn("dpkg cannot run yet; retrying", "run", what, "error", err, "retry_in_seconds", next.Seconds())
	}}, attempt)
	if errors.Is(err, ErrBusy) {
		return fmt.Errorf("waited %s for the dpkg lock: %w", lockWait, err)
	}
	return err
}

func (i *Installer) adminDirOrSystem() string {
	if d := i.AdminDir(); d != "" {
		return d
	}
	return "/var/lib/dpkg"
}

// lockHolder tells whether another process holds one of dpkg's locks in
// admindir, and which. dpkg takes fcntl write locks on both files.
func lockHolder(admindir string) (int, bool) {
	for _, name := range []string{"lock-frontend", "lock"} {
		f, err := os.Open(filepath.Join(admindir, name))
		if err != nil {
			continue
		}
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
		err = syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk)
		f.Close()
		if err == nil && lk.Type != syscall.F_UNLCK {
			return int(lk.Pid), true
		}
	}
	return 0, false
}

// State is how dpkg's database has a package.
type State struct {
	Package string
	// Status is dpkg's three words, e.g. "install ok installed" or
	// "install ok unpacked"; "" when dpkg does not know the package.
	Status  string
	Version string
}

// Installed reports whether the package is fully installed.
func (s State) Installed() bool { return s.Status == "install ok installed" }

// Condition is the last word of the status (installed, unpacked,
// half-configured, half-installed, triggers-pending, ...), or
// not-installed.
func (s State) Condition() string {
	f := strings.Fields(s.Status)
	if len(f) == 0 {
		return "not-installed"
	}
	return f[len(f)-1]
}

func (s State) String() string {
	if s.Version == "" {
		return s.Package + " " + s.Condition()
	}
	return fmt.Sprintf("%s %s %s", s.Package, s.Condition(), s.Version)
}

// NotInstalledError says that a package is not installed ok at the version
// expected.
type NotInstalledError struct {
	State State
	Want  string
}

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("dpkg has %s; expected %s installed at %s", e.State, e.State.Package, e.Want)
}

// Expect returns a *NotInstalledError unless the package is installed ok at
// version want.
func (s State) Expect(want string) error {
	if s.Installed() && s.Version == want {
		return nil
	}
	return &NotInstalledError{State: s, Want: want}
}

// Query returns the state of pkg in admindir ("" uses the system's).
func Query(ctx context.Context, admindir, pkg string) (State, error) {
	args := []string{"-W", "-f", "${Status}\t${Version}", pkg}
	if admindir != "" {
		args = append([]string{"--admindir=" + admindir}, args...)
	}
	out, err := exec.CommandContext(ctx, "dpkg-query", args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
			return State{Package: pkg}, nil
		}
		return State{}, fmt.Errorf("dpkg-query %s: %w", pkg, err)
	}
	status, ver, _ := strings.Cut(strings.TrimSpace(string(out)), "\t")
	if strings.HasSuffix(status, " not-installed") {
		return State{Package: pkg}, nil
	}
	return State{Package: pkg, Status: status, Version: ver}, nil
}

// InstalledVersion returns the version of a package dpkg has installed in
// admindir ("" uses the system's), or "" when it is not fully installed.
func InstalledVersion(ctx context.Context, admindir, pkg string) (string, error) {
	s, err := Query(ctx, admindir, pkg)
	if err != nil || !s.Installed() {
		return "", err
	}
	return s.Version, nil
}

// Field reads a control field (Package, Version, ...) of a .deb file.
func Field(ctx context.Context, file, name string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", file, name).Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-deb -f %s %s: %w", file, name, err)
	}
	return strings.TrimSpace(string(out)), nil
}
