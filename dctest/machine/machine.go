package machine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nspawnRun is where systemd-nspawn keeps its propagation mounts. Without
// a host systemd nobody mounts it, and nspawn refuses to create it on the
// root file system, so the labs mount a tmpfs there while machines run.
const nspawnRun = "/run/systemd/nspawn"

var nspawnMount struct {
	sync.Mutex
	users   int
	mounted bool // this process mounted it
}

func holdNspawnRun() error {
	nspawnMount.Lock()
	defer nspawnMount.Unlock()
	if nspawnMount.users == 0 && !isMountPoint(nspawnRun) {
		if err := os.MkdirAll(nspawnRun, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", nspawnRun, "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", nspawnRun, err)
		}
		nspawnMount.mounted = true
	}
	nspawnMount.users++
	return nil
}

func releaseNspawnRun() {
	nspawnMount.Lock()
	defer nspawnMount.Unlock()
	nspawnMount.users--
	if nspawnMount.users == 0 && nspawnMount.mounted {
		unmount(nspawnRun)
		nspawnMount.mounted = false
	}
}

func isMountPoint(path string) bool {
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == path {
			return true
		}
	}
	return false
}

func unmount(path string) error {
	for range 50 {
		err := unix.Unmount(path, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}

// Machine is a boot server: a systemd machine booted from its own
// copy-on-write root (an overlay over the base image), in its own network
// namespace on the lab's bridge.
type Machine struct {
	Name string
	Host *Host
	// Root is the machine's root file system, as the host sees it.
	Root string
	dir  string // upper and work directories of the overlay

	mu     sync.Mutex
	nspawn *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	held   bool
	// cg is the machine's own cgroup.
	cg *cgroups
}

// NewMachine makes a machine's root over base, under dir, on a new host
// of the lab. It does not boot it.
func (l *Lab) NewMachine(name, base, dir string) (*Machine, error) {
	h, err := l.AddHost(name)
	if err != nil {
		return nil, err
	}
	m := &Machine{Name: name, Host: h, dir: filepath.Join(dir, name), Root: filepath.Join(dir, h.NS)}
	for _, d := range []string{m.Root, filepath.Join(m.dir, "upper"), filepath.Join(m.dir, "work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", base, filepath.Join(m.dir, "upper"), filepath.Join(m.dir, "work"))
	if err := unix.Mount("overlay", m.Root, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("overlay root of %s: %w", name, err)
	}
	l.mu.Lock()
	l.machines = append(l.machines, m)
	l.mu.Unlock()
	// Its own identity: a machine id and a host name.
	if err := os.WriteFile(filepath.Join(m.Root, "etc/hostname"), []byte(name+"\n"), 0o644); err != nil {
		return nil, err
	}
	return m, nil
}

// Boot starts the machine's systemd and waits until it says the system
// is running (or degraded, which Wait reports).
func (m *Machine) Boot(ctx context.Context) error {
	m.mu.Lock()
	if m.nspawn != nil {
		m.mu.Unlock()
		return fmt.Errorf("%s is already running", m.Name)
	}
	if !m.held {
		if err := holdNspawnRun(); err != nil {
			m.mu.Unlock()
			return err
		}
		m.held = true
	}
	// Each machine's systemd gets a cgroup of its own: without a host
	// systemd to make one, machines started from one process would share
	// one, and each one's systemd would remove the others' units' cgroups
	// (their units then fail with status 219/CGROUP). nspawn places the
	// machine by its own cgroup in systemd's hierarchy and in the unified
	// one, so it is moved into the machine's cgroup in both.
	cg, err := makeCgroups(m.Host.NS)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.cg = cg
	cmd := exec.Command("sh", "-c", moveScript, "sh",
		"systemd-nspawn", "--keep-unit", "--register=no", "--quiet",
		"-D", m.Root, "-M", m.Name, "--network-namespace-path="+filepath.Join(netnsDir, m.Host.NS),
		"--console=read-only", "--boot")
	cmd.Env = append(os.Environ(), "FDCT_CGROUPS="+strings.Join(cg.dirs, " "), "FDCT_CGROUP2="+cg.unmounted)
	// If the test dies, the machine is powered off with it; the next run's
	// sweep removes what remains.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	m.log = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = &lockedBuffer{b: m.log, mu: &m.mu}, &lockedBuffer{b: m.log, mu: &m.mu}
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("systemd-nspawn %s: %w", m.Name, err)
	}
	m.nspawn = cmd
	exited := make(chan struct{})
	m.exited = exited
	m.mu.Unlock()
	go func() {
		cmd.Wait()
		close(exited)
	}()
	return m.WaitRunning(ctx)
}

// WaitRunning waits until the machine's systemd has finished booting.
func (m *Machine) WaitRunning(ctx context.Context) error {
	var last string
	for {
		m.mu.Lock()
		exited := m.exited
		m.mu.Unlock()
		if _, err := m.PID(); err == nil {
			out, _ := m.Exec(ctx, "systemctl", "is-system-running")
			last = strings.TrimSpace(out)
			switch last {
			case "running":
				return nil
			case "degraded":
				failed, _ := m.Exec(ctx, "systemctl", "--failed", "--no-legend", "--plain")
				return fmt.Errorf("%s booted degraded: %s", m.Name, strings.TrimSpace(failed))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not finish booting (last: %q): %w; nspawn said: %s", m.Name, last, ctx.Err(), m.Output())
		case <-exited:
			return fmt.Errorf("%s: systemd-nspawn exited: %s", m.Name, m.Output())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Output is what systemd-nspawn printed.
func (m *Machine) Output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.log == nil {
		return ""
	}
	return m.log.String()
}

// PID is the process id of the machine's init (its systemd), as the host
// sees it: the child of the nspawn process.
func (m *Machine) PID() (int, error) {
	m.mu.Lock()
	cmd := m.nspawn
	m.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return 0, fmt.Errorf("%s is powered off", m.Name)
	}
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", m.Name, err)
	}
	for _, c := range strings.Fields(string(children)) {
		pid, err := strconv.Atoi(c)
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == "systemd" {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("%s: its systemd has not started", m.Name)
}

// Command prepares a command to run inside the machine, in every one of
// its namespaces, as `machinectl shell` would.
func (m *Machine) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	pid, err := m.PID()
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-a", "--", name}, args...)...), nil
}

// Exec runs a command inside the machine and returns its output, stdout
// and stderr together.
func (m *Machine) Exec(ctx context.Context, name string, args ...string) (string, error) {
	cmd, err := m.Command(ctx, name, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", m.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// PowerOff ends the machine at once, as a power cut: its nspawn process is
// killed and, with it, every process of the machine.
func (m *Machine) PowerOff() {
	m.mu.Lock()
	cmd, exited := m.nspawn, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	// The machine's processes live in its network namespace; killing them
	// all there leaves nothing of it running even if nspawn were gone.
	cmd.Process.Kill()
	killNS(m.Host.NS)
	<-exited
	m.mu.Lock()
	m.nspawn = nil
	cg := m.cg
	m.cg = nil
	m.mu.Unlock()
	cg.remove()
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroups is a machine's cgroup in each hierarchy nspawn reads.
type cgroups struct {
	dirs []string // mounted on the host
	// unmounted is the cgroup's path in the unified hierarchy when the
	// host does not mount it (cgroup v1): the start script and remove
	// mount it privately to reach it.
	unmounted string
}

// moveScript moves itself into the machine's cgroups, then becomes the
// command it is given.
const moveScript = `for d in $FDCT_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 1; done
if [ -n "$FDCT_CGROUP2" ]; then
	exec unshare --mount sh -c 'm=$(mktemp -d) && mount -t cgroup2 none "$m" && mkdir -p "$m$FDCT_CGROUP2" &&
		echo $$ > "$m$FDCT_CGROUP2/cgroup.procs" && umount "$m" && rmdir "$m" && exec "$@"' sh "$@"
fi
exec "$@"`

// cgroup2Command runs a shell script with the unified hierarchy mounted
// at $m, in a mount namespace of its own, for a host that does not mount it.
func cgroup2Command(script string, args ...string) *exec.Cmd {
	return exec.Command("unshare", append([]string{"--mount", "sh", "-c",
		`m=$(mktemp -d) && mount -t cgroup2 none "$m" || exit 1; ` + script + `; umount "$m"; rmdir "$m"`, "sh"}, args...)...)
}

// makeCgroups makes a cgroup named name below this process's own in
// systemd's hierarchy (cgroup v1) and in the unified one.
func makeCgroups(name string) (*cgroups, error) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(self)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			paths[parts[1]] = parts[2]
		}
	}
	cg := &cgroups{}
	if p, ok := paths["name=systemd"]; ok && exists(filepath.Join(cgroupRoot, "systemd/cgroup.procs")) {
		cg.dirs = append(cg.dirs, filepath.Join(cgroupRoot, "systemd", p, name))
	}
	if p, ok := paths[""]; ok {
		switch {
		case exists(filepath.Join(cgroupRoot, "cgroup.procs")):
			cg.dirs = append(cg.dirs, filepath.Join(cgroupRoot, p, name))
		case exists(filepath.Join(cgroupRoot, "unified/cgroup.procs")):
			cg.dirs = append(cg.dirs, filepath.Join(cgroupRoot, "unified", p, name))
		default:
			cg.unmounted = filepath.Join(p, name)
		}
	}
	if len(cg.dirs) == 0 && cg.unmounted == "" {
		return nil, errors.New("no cgroup hierarchy to put a machine in (is /sys/fs/cgroup mounted?)")
	}
	for _, d := range cg.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", d, err)
		}
	}
	return cg, nil
}

// remove removes the cgroups once their processes are gone.
func (cg *cgroups) remove() {
	if cg == nil {
		return
	}
	for _, d := range cg.dirs {
		removeCgroup(d)
	}
	if cg.unmounted != "" {
		removeUnmountedCgroup(cg.unmounted)
	}
}

// removeUnmountedCgroup removes a cgroup of the unified hierarchy that
// the host does not mount, deepest first.
func removeUnmountedCgroup(path string) {
	for range 50 {
		out, _ := cgroup2Command(`[ -e "$m$1" ] || { echo gone; exit 0; }; find "$m$1" -depth -type d -exec rmdir {} \; 2>/dev/null; [ -e "$m$1" ] || echo gone`, path).Output()
		if strings.Contains(string(out), "gone") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountedLeftovers lists lab cgroups at the top of the unified
// hierarchy when the host does not mount it.
func unmountedLeftovers() []string {
	if exists(filepath.Join(cgroupRoot, "cgroup.procs")) || exists(filepath.Join(cgroupRoot, "unified/cgroup.procs")) {
		return nil
	}
	out, _ := cgroup2Command(`for d in "$m"/` + Prefix + `*; do [ -d "$d" ] && echo "${d#$m}"; done`).Output()
	return strings.Fields(string(out))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// removeCgroup removes a cgroup and what its machine's systemd made in
// it, deepest first, once the processes in it are gone.
func removeCgroup(dir string) {
	for range 50 {
		var all []string
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, path)
			}
			return nil
		})
		if len(all) == 0 {
			return
		}
		for i := len(all) - 1; i >= 0; i-- {
			os.Remove(all[i])
		}
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Running reports whether the machine is powered on.
func (m *Machine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nspawn != nil
}

func (m *Machine) close() error {
	m.PowerOff()
	var err error
	if m.Root != "" {
		err = unmount(m.Root)
	}
	m.mu.Lock()
	held := m.held
	m.held = false
	m.mu.Unlock()
	if held {
		releaseNspawnRun()
	}
	return err
}

func killNS(ns string) {
	for range 50 {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
