// Package machine is dctest's machine backend: a private lab network in
// network namespaces, and boot servers that are systemd machines
// (systemd-nspawn) on it. Nothing it makes touches the host's own network:
// the bridge lives in a namespace of its own, with no route out and no NAT,
// and every namespace, link, mount and process it makes is removed when
// the lab closes, or by the next run when a run was killed.
//
// It needs root, iproute2 and systemd-container (MACHINES.md in the shared
// notes has the recipe this follows).
package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every network namespace a lab makes; the
// process id of the run that made it follows, so that a later run knows
// leftovers from live labs.
const Prefix = "fdct-"

const netnsDir = "/run/netns"

// Subnet is the lab's network; hosts get addresses in it by index.
const Subnet = "10.77.0"

// Lab is a private network: a bridge in a namespace of its own, and hosts
// (namespaces) joined to it by veth pairs.
type Lab struct {
	name string // namespace prefix of this lab: fdct-<pid>-<n>-

	mu       sync.Mutex
	hosts    map[string]*Host
	machines []*Machine
	next     int
}

// Host is a network namespace on the lab's bridge with one address.
type Host struct {
	Name string // short name in the lab, e.g. etcd0 or boot-1
	NS   string // the namespace's name under /run/netns
	IP   string
	veth string // its end of the link, in the lab's namespace
	lab  *Lab
}

var labs struct {
	sync.Mutex
	n int
}

// NewLab sweeps what killed runs left behind, then makes a lab's bridge.
func NewLab() (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the machine backend needs root (network namespaces, systemd-nspawn)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("ip is missing: apt-get install -y iproute2")
	}
	// Leftovers of a killed run are removed as far as they can be; one
	// that cannot takes nothing from this lab, whose names are its own.
	if err := Sweep(); err != nil {
		fmt.Fprintf(os.Stderr, "dctest: removing what an earlier run left: %v\n", err)
	}
	labs.Lock()
	labs.n++
	n := labs.n
	labs.Unlock()
	l := &Lab{name: fmt.Sprintf("%s%d-%d-", Prefix, os.Getpid(), n), hosts: map[string]*Host{}, next: 2}
	if err := l.ip("netns", "add", l.labNS()); err != nil {
		return nil, fmt.Errorf("the lab's namespace: %w", err)
	}
	for _, args := range [][]string{
		{"-n", l.labNS(), "link", "add", "br0", "type", "bridge"},
		{"-n", l.labNS(), "link", "set", "br0", "up"},
	} {
		if err := l.ip(args...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

func (l *Lab) labNS() string { return l.name + "lab" }

func (l *Lab) ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddHost makes a namespace joined to the bridge, with the next address.
func (l *Lab) AddHost(name string) (*Host, error) {
	l.mu.Lock()
	idx := l.next
	l.next++
	l.mu.Unlock()
	h := &Host{Name: name, NS: l.name + name, IP: fmt.Sprintf("%s.%d", Subnet, idx), veth: fmt.Sprintf("v%d", idx), lab: l}
	if err := l.ip("netns", "add", h.NS); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.hosts[name] = h
	l.mu.Unlock()
	steps := [][]string{
		{"link", "add", h.veth, "netns", l.labNS(), "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"-n", l.labNS(), "link", "set", h.veth, "master", "br0", "up"},
		{"-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
		{"-n", h.NS, "link", "set", "lo", "up"},
	}
	for _, args := range steps {
		if err := l.ip(args...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Host returns a host by its short name.
func (l *Lab) Host(name string) (*Host, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.hosts[name]
	return h, ok
}

// Cut takes the host's link to the bridge down: its packets are dropped,
// as when a cable is pulled, so connections time out rather than fail.
func (h *Host) Cut() error { return h.lab.ip("-n", h.lab.labNS(), "link", "set", h.veth, "down") }

// Mend brings the host's link up again.
func (h *Host) Mend() error { return h.lab.ip("-n", h.lab.labNS(), "link", "set", h.veth, "up") }

// Shape limits what the host sends into the lab to rate (tc's notation,
// such as 100mbit), as a thin uplink would: a token bucket on its end of
// the link.
func (h *Host) Shape(rate string) error {
	out, err := exec.Command("tc", "-n", h.NS, "qdisc", "replace", "dev", "eth0", "root", "tbf",
		"rate", rate, "burst", "256kb", "latency", "100ms").CombinedOutput()
	if err != nil {
		return fmt.Errorf("tc: shape %s to %s: %v: %s", h.Name, rate, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SentBytes is how many bytes the host has sent into the lab.
func (h *Host) SentBytes() (int64, error) {
	out, err := exec.Command("ip", "-n", h.NS, "-j", "-s", "link", "show", "dev", "eth0").Output()
	if err != nil {
		return 0, fmt.Errorf("ip -s link of %s: %w", h.Name, err)
	}
	var links []struct {
		Stats struct {
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, fmt.Errorf("ip -s link of %s: %q: %v", h.Name, out, err)
	}
	return links[0].Stats.TX.Bytes, nil
}

// Command runs a program in the host's network namespace (and nothing else
// of it: the file system is the host's).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + filepath.Join(netnsDir, h.NS), "--", name}, args...)...)
}

// inNS runs f on a thread that has entered the host's network namespace;
// sockets f makes belong to that namespace for their whole life. The
// thread goes back to the test's namespace before it is given back to the
// scheduler; if it cannot, it stays locked and ends with its goroutine.
func (h *Host) inNS(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("open this thread's namespace: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open(filepath.Join(netnsDir, h.NS), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("open namespace %s: %w", h.NS, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", h.NS, err)
			return
		}
		err = f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// Listen opens a TCP listener on the host's address.
func (h *Host) Listen(port int) (net.Listener, error) {
	var l net.Listener
	err := h.inNS(func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(h.IP, strconv.Itoa(port)))
		return err
	})
	return l, err
}

// DialContext dials from the host's namespace, for clients in the test
// process (an etcd client, an HTTP client) that must reach the lab.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNS(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Close removes the lab: every process left in its namespaces is killed,
// then the namespaces go, and the links with them.
func (l *Lab) Close() error {
	l.mu.Lock()
	machines := l.machines
	l.machines = nil
	l.mu.Unlock()
	var errs []error
	for _, m := range machines {
		if err := m.close(); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Lock()
	var names []string
	for _, h := range l.hosts {
		names = append(names, h.NS)
	}
	l.mu.Unlock()
	names = append(names, l.labNS())
	for _, ns := range names {
		if err := removeNS(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeNS kills what runs in a namespace and deletes it.
func removeNS(ns string) error {
	killNS(ns)
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns, err, out)
	}
	return nil
}

// ownerAlive reports whether the run that made a namespace or mount named
// fdct-<pid>-… still runs.
func ownerAlive(name string) bool {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return false
	}
	pidText, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		return false
	}
	return pid == os.Getpid() || unix.Kill(pid, 0) == nil
}

// Sweep removes what runs that no longer live left behind: machines'
// processes, their root mounts, and the lab's namespaces.
func Sweep() error {
	var errs []error
	// Namespaces first: that kills the machines, whose roots are mounts.
	for _, kind := range []string{"netns", "mount"} {
		for _, m := range Leftovers() {
			if m.Kind != kind || ownerAlive(filepath.Base(m.Path)) {
				continue
			}
			if kind == "netns" {
				errs = append(errs, removeNS(filepath.Base(m.Path)))
			} else {
				errs = append(errs, unmount(m.Path))
			}
		}
	}
	for _, l := range Leftovers() {
		if !ownerAlive(filepath.Base(l.Path)) {
			switch l.Kind {
			case "cgroup":
				removeCgroup(l.Path)
			case "cgroup2":
				removeUnmountedCgroup(l.Path)
			}
		}
	}
	nspawnMount.Lock()
	if nspawnMount.users == 0 && isMountPoint(nspawnRun) && !nspawnRunning() {
		errs = append(errs, unmount(nspawnRun))
	}
	nspawnMount.Unlock()
	return errors.Join(errs...)
}

// Leftover is a namespace, a mount or a cgroup that a lab made.
type Leftover struct {
	Kind string // netns, mount, cgroup, or cgroup2 (of an unmounted unified hierarchy)
	Path string
}

func (l Leftover) String() string { return l.Kind + " " + l.Path }

// Leftovers lists every namespace and mount of any lab, live or not, so
// that a test can check that it left none behind.
func Leftovers() []Leftover {
	var out []Leftover
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix) {
			out = append(out, Leftover{Kind: "netns", Path: filepath.Join(netnsDir, e.Name())})
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(filepath.Base(f[1]), Prefix) {
			out = append(out, Leftover{Kind: "mount", Path: f[1]})
		}
	}
	hierarchies, _ := os.ReadDir(cgroupRoot)
	for _, h := range append(hierarchies, nil) {
		dir := cgroupRoot
		if h != nil {
			dir = filepath.Join(cgroupRoot, h.Name())
		}
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.HasPrefix(d.Name(), Prefix) {
				out = append(out, Leftover{Kind: "cgroup", Path: path})
				return filepath.SkipDir
			}
			// Lab cgroups sit a few levels down at most.
			if strings.Count(strings.TrimPrefix(path, cgroupRoot), "/") > 4 {
				return filepath.SkipDir
			}
			return nil
		})
	}
	for _, p := range unmountedLeftovers() {
		out = append(out, Leftover{Kind: "cgroup2", Path: p})
	}
	if isMountPoint(nspawnRun) {
		out = append(out, Leftover{Kind: "mount", Path: nspawnRun})
	}
	return out
}

// nspawnRunning reports whether any systemd-nspawn process runs.
func nspawnRunning() bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.TrimSpace(string(comm)) == "systemd-nspawn" {
			return true
		}
	}
	return false
}

// LeftoversOf lists the leftovers whose names start with prefix: a
// lab's Name, or Prefix and a process id for all labs of one run.
func LeftoversOf(prefix string) []Leftover {
	var out []Leftover
	for _, l := range Leftovers() {
		if strings.HasPrefix(filepath.Base(l.Path), prefix) {
			out = append(out, l)
		}
	}
	return out
}

// Name starts the name of everything the lab makes (namespaces, machine
// roots, cgroups).
func (l *Lab) Name() string { return l.name }
