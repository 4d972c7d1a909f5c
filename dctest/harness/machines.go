package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/dctest/machine"
	"github.com/ferry-cd/ferry/pkg/deb"
	"gopkg.in/yaml.v3"
)

// Paths inside a machine that the harness puts in place.
const (
	// machineMarkers is where the test plan's last step writes its marker.
	machineMarkers = "/var/lib/dctest-markers"
	// MachineArtifacts is the test's artifact set in a machine; a drop-in
	// passes it to ferry-worker with --artifacts.
	MachineArtifacts = "/etc/ferry/dctest-artifacts.yaml"
)

// Machine is a boot server that is a systemd machine on the lab network:
// ferry's package installed on its own root with apt, its shipped units
// run by its own systemd.
type Machine struct {
	ID string
	*machine.Machine
	dc *Datacenter
}

// AddMachine makes and boots a machine, then installs the ferry package of
// version on it the way an operator does: the bootstrap config and the
// release key in /etc/ferry, then `apt-get install ./ferry_….deb`, whose
// postinst starts both units. It does not join the fleet.
func (dc *Datacenter) AddMachine(ctx context.Context, id, version string) (*Machine, error) {
	pkg, ok := dc.opts.Build.Debs[version]
	if !ok {
		return nil, fmt.Errorf("no package of %s was built", version)
	}
	m, err := dc.newMachine(id, dc.base)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(pkg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(m.Root, "root", filepath.Base(pkg)), data, 0o644); err != nil {
		return nil, err
	}
	if err := m.Boot(ctx); err != nil {
		return nil, err
	}
	if _, err := m.Exec(ctx, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-install-recommends", "/root/"+filepath.Base(pkg)); err != nil {
		return nil, err
	}
	return m, m.WaitActive(ctx, "ferry-worker.service", "ferry-updater.service")
}

// AddMachineFromImage makes a machine whose root already has the ferry
// package of version, installed by apt over the base image once for the
// whole run (Build's layers), and boots it with its bootstrap config and
// release key in place: systemd starts both units at boot, as after a
// reboot. It saves each machine its own apt run; AddMachine is the
// operator's first install. It does not join the fleet.
func (dc *Datacenter) AddMachineFromImage(ctx context.Context, id, version string) (*Machine, error) {
	layer, err := dc.opts.Build.layer(dc.base, version)
	if err != nil {
		return nil, err
	}
	m, err := dc.newMachine(id, machine.Over(layer, dc.base))
	if err != nil {
		return nil, err
	}
	if err := m.Boot(ctx); err != nil {
		return nil, err
	}
	return m, m.WaitActive(ctx, "ferry-worker.service", "ferry-updater.service")
}

// newMachine makes a machine over base and provisions it.
func (dc *Datacenter) newMachine(id, base string) (*Machine, error) {
	l, ok := dc.net.(*lab)
	if !ok {
		return nil, errors.New("machines need a datacenter started with Options.Machines")
	}
	mm, err := l.NewMachine(id, base, filepath.Join(dc.Dir, "machines"))
	if err != nil {
		return nil, err
	}
	m := &Machine{ID: id, Machine: mm, dc: dc}
	dc.mu.Lock()
	dc.Machines[id] = m
	dc.mu.Unlock()
	return m, m.provision()
}

// layer is one version's layer: made once, by the first machine that
// needs it, while the others wait.
type layer struct {
	once sync.Once
	dir  string
	err  error
}

// layer returns the layer in which apt installed the package of version
// over base, making it the first time (with a time limit of its own: the
// scenario that happens to make it must not be the one whose end stops it).
func (b *Build) layer(base, version string) (string, error) {
	pkg, ok := b.Debs[version]
	if !ok {
		return "", fmt.Errorf("no package of %s was built", version)
	}
	b.mu.Lock()
	if b.layers == nil {
		b.layers = map[string]*layer{}
	}
	l := b.layers[version]
	if l == nil {
		l = &layer{}
		b.layers[version] = l
	}
	b.mu.Unlock()
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		l.dir, l.err = machine.InstallLayer(ctx, base, pkg, filepath.Join(b.Dir, "layers", version))
	})
	return l.dir, l.err
}

// MachineDropIns are the drop-ins a machine scenario gives the shipped
// units, and nothing else: shorter leases (ttl), so that a dead worker or
// leader is noticed in seconds, and the test's artifact set. None of them
// touches the sandbox.
func MachineDropIns(ttl time.Duration) map[string]string {
	return map[string]string{
		"ferry-worker.service":  "[Service]\nExecStart=\nExecStart=/usr/sbin/ferry-worker --config /etc/ferry/config.yml --lease-ttl " + ttl.String() + " --artifacts " + MachineArtifacts + "\n",
		"ferry-updater.service": "[Service]\nExecStart=\nExecStart=/usr/sbin/ferry-updater --config /etc/ferry/config.yml --session-ttl " + ttl.String() + "\n",
	}
}

// provision writes what an operator puts on a boot server before it
// installs ferry, and what the test plan's actions act on.
func (m *Machine) provision() error {
	dc := m.dc
	if _, err := dc.writeKeys(filepath.Join(m.Root, "etc/ferry")); err != nil {
		return err
	}
	cfg := dc.serverConfig(map[string]any{
		"server-id": m.ID,
		// The machine's root is an overlay: containerd's own overlay
		// snapshotter cannot stack on it.
		"containerd-snapshotter": "native",
	})
	for k, v := range dc.opts.MachineConfig {
		cfg[k] = v
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	files := map[string]string{
		"etc/ferry/config.yml": string(data),
		// The units the test plan's images restart.
		"etc/systemd/system/dns.service": "[Unit]\nDescription=dctest dns\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
		"etc/systemd/system/ntp.service": "[Unit]\nDescription=dctest ntp\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
	}
	for unit, body := range dc.opts.DropIns {
		files[filepath.Join("etc/systemd/system", unit+".d", "dctest.conf")] = body
	}
	for path, body := range files {
		full := filepath.Join(m.Root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(m.Root, machineMarkers), 0o755); err != nil {
		return err
	}
	return m.copySet()
}

// copySet puts the datacenter's artifact set where the drop-in points.
func (m *Machine) copySet() error {
	data, err := os.ReadFile(m.dc.SetFile)
	if err != nil {
		return err
	}
	path := filepath.Join(m.Root, MachineArtifacts)
	if err := os.WriteFile(path+".new", data, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".new", path)
}

// WaitActive waits until systemd says every unit is active.
func (m *Machine) WaitActive(ctx context.Context, units ...string) error {
	var last string
	for {
		out, err := m.Exec(ctx, "systemctl", append([]string{"is-active"}, units...)...)
		last = strings.Join(strings.Fields(out), " ")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			st, _ := m.Exec(context.Background(), "systemctl", append([]string{"status", "--no-pager", "-n", "20"}, units...)...)
			return fmt.Errorf("%s: %v not active (last: %s): %w\n%s", m.ID, units, last, ctx.Err(), st)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// MainPID is the main process of a unit, in the machine's PID namespace
// (0 when it does not run).
func (m *Machine) MainPID(ctx context.Context, unit string) (int, error) {
	out, err := m.Exec(ctx, "systemctl", "show", "-p", "MainPID", "--value", unit)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// RunningVersion is the version of the binary a unit's main process runs:
// its /proc/PID/exe asked for --version. It fails when the file the process
// was started from has since been replaced (an old binary still running).
func (m *Machine) RunningVersion(ctx context.Context, unit string) (string, error) {
	pid, err := m.MainPID(ctx, unit)
	if err != nil {
		return "", err
	}
	if pid == 0 {
		return "", fmt.Errorf("%s: %s does not run", m.ID, unit)
	}
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	target, err := m.Exec(ctx, "readlink", exe)
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(strings.TrimSpace(target), "(deleted)") {
		return "", fmt.Errorf("%s: %s runs %s, a binary that was replaced since it started", m.ID, unit, strings.TrimSpace(target))
	}
	out, err := m.Exec(ctx, exe, "--version")
	return strings.TrimSpace(out), err
}

// Journal is what the machine's journald holds of a unit, message text only.
func (m *Machine) Journal(ctx context.Context, unit string) (string, error) {
	return m.Exec(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit)
}

func (m *Machine) adminDir() string { return filepath.Join(m.Root, "var/lib/dpkg") }

// InstalledVersion is the ferry version in the machine's dpkg database.
func (m *Machine) InstalledVersion(ctx context.Context) (string, error) {
	return deb.InstalledVersion(ctx, m.adminDir(), "ferry")
}

// PackageVersion is the installed version of another package.
func (m *Machine) PackageVersion(ctx context.Context, pkg string) (string, error) {
	return deb.InstalledVersion(ctx, m.adminDir(), pkg)
}

// Dpkg is how the machine's dpkg database has a package.
func (m *Machine) Dpkg(ctx context.Context, pkg string) (deb.State, error) {
	return deb.Query(ctx, m.adminDir(), pkg)
}

// Audit is what `dpkg --audit` on the machine finds wrong ("" when nothing).
func (m *Machine) Audit(ctx context.Context) (string, error) {
	out, err := m.Exec(ctx, "dpkg", "--audit")
	return strings.TrimSpace(out), err
}

// Marker is the version the last rollout's services step ran at on this
// machine, or "" when it never ran.
func (m *Machine) Marker() string {
	data, _ := os.ReadFile(filepath.Join(m.Root, machineMarkers, m.ID))
	return strings.TrimSpace(string(data))
}

// Machine returns a machine by id.
func (dc *Datacenter) Machine(id string) (*Machine, error) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	m, ok := dc.Machines[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, errNoServer)
	}
	return m, nil
}

// Host is a host of the lab network by name (etcd0, github, boot-1...).
func (dc *Datacenter) Host(name string) (*machine.Host, error) {
	l, ok := dc.net.(*lab)
	if !ok {
		return nil, errors.New("no lab network: the datacenter runs on loopback")
	}
	h, ok := l.Host(name)
	if !ok {
		return nil, fmt.Errorf("the lab has no host %s", name)
	}
	return h, nil
}

// WriteFile writes a file into the machine's root, as seen inside it.
func (m *Machine) WriteFile(path string, data []byte) error {
	full := filepath.Join(m.Root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	return os.WriteFile(full, data, 0o644)
}

// Firewall loads an nftables ruleset into the machine's network
// namespace, in a table of its own (inet dctest), replacing the last one;
// an empty ruleset removes the table.
func (m *Machine) Firewall(ctx context.Context, rules string) error {
	// The table may not be there yet: only the load below must succeed.
	m.Exec(ctx, "nft", "delete", "table", "inet", "dctest")
	if rules == "" {
		return nil
	}
	cmd, err := m.Command(ctx, "nft", "-f", "-")
	if err != nil {
		return err
	}
	cmd.Stdin = strings.NewReader("table inet dctest {\n" + rules + "\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft: %w: %s", m.ID, err, out)
	}
	return nil
}

// LabName starts the name of every namespace, mount and cgroup of the
// datacenter's lab network ("" on loopback).
func (dc *Datacenter) LabName() string {
	if l, ok := dc.net.(*lab); ok {
		return l.Name()
	}
	return ""
}
