package dctest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/dctest/machine"
	"github.com/stretchr/testify/require"
)

// The machine scenarios run ferry on systemd machines (dctest/machine):
// each boot server boots its own systemd from a copy of a Debian root, on a
// private lab network where every etcd member, the GitHub fake and the
// registry have addresses of their own. ferry's package is installed with
// apt on the machine's own root and its shipped units run unchanged, but
// for these drop-ins, the only settings the scenarios change: shorter
// leases, so that a dead worker or leader is noticed in seconds, and the
// test's artifact set. None of them touches the sandbox.
var machineDropIns = map[string]string{
	"ferry-worker.service": "[Service]\nExecStart=\nExecStart=/usr/sbin/ferry-worker --config /etc/ferry/config.yml --lease-ttl 3s --artifacts " + harness.MachineArtifacts + "\n",
	"ferry-updater.service": "[Service]\nExecStart=\nExecStart=/usr/sbin/ferry-updater --config /etc/ferry/config.yml --session-ttl 3s\n",
}

// startMachines starts a lab datacenter for a machine scenario, and checks
// when it ends that nothing of it is left on the host.
func startMachines(t *testing.T, limit time.Duration) *dc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the machine scenarios need root (network namespaces, systemd-nspawn); run them as root, after make deps")
	}
	t.Cleanup(func() {
		// Runs after the datacenter's own cleanup (cleanups run last first).
		require.Empty(t, machine.LeftoversOf(os.Getpid()), "namespaces and mounts left on the host")
		require.Empty(t, labProcesses(), "machine or lab processes left on the host")
	})
	return startWith(t, limit, harness.Options{Machines: true, DropIns: machineDropIns})
}

// labProcesses lists processes of this run's lab that still run: any
// systemd-nspawn child of this process, or anything in a lab namespace.
func labProcesses() []string {
	var left []string
	for _, l := range machine.LeftoversOf(os.Getpid()) {
		left = append(left, l.String())
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || string(comm) != "systemd-nspawn\n" {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		var pid, ppid int
		var name, state string
		fmt.Sscanf(string(stat), "%d %s %s %d", &pid, &name, &state, &ppid)
		if ppid == os.Getpid() {
			left = append(left, fmt.Sprintf("systemd-nspawn pid %d", pid))
		}
	}
	return left
}

// bootstrapMachines installs N on every machine with apt, configures and
// joins the fleet, and waits until it completed N.
func (d *dc) bootstrapMachines(env string, ids ...string) {
	d.t.Helper()
	require.NoError(d.t, d.Publish(N, harness.PublishOptions{CreatedAt: day(1)}))
	require.NoError(d.t, d.Configure(d.ctx, "env", "none"))
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = d.AddMachine(d.ctx, id, N)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(d.t, err)
	}
	for _, id := range ids {
		d.ferry("join", id)
	}
	d.ferry("config", "set", "env", env)
	d.waitCompleted(N)
	d.requireOnMachines(N, ids...)
}

// requireOnMachines checks that dpkg has version installed on every
// machine, with nothing half-done, and that the plan ran to its end there.
func (d *dc) requireOnMachines(version string, ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		m, err := d.Machine(id)
		require.NoError(d.t, err)
		st, err := m.Dpkg(d.ctx, "ferry")
		require.NoError(d.t, err)
		require.NoError(d.t, st.Expect(version), "dpkg on %s (ii)", id)
		tools, err := m.PackageVersion(d.ctx, "acme-tools")
		require.NoError(d.t, err)
		require.Equal(d.t, "1.0.0", tools, "the plan's extra package on %s", id)
		require.Equal(d.t, version, m.Marker(), "the plan's last step ran at %s on %s", version, id)
		audit, err := m.Audit(d.ctx)
		require.NoError(d.t, err)
		require.Empty(d.t, audit, "dpkg --audit on %s", id)
	}
}

// requireRunning checks that both units' main processes run the binaries
// of version, on every machine.
func (d *dc) requireRunning(version string, ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		m, err := d.Machine(id)
		require.NoError(d.t, err)
		for _, unit := range []string{"ferry-worker.service", "ferry-updater.service"} {
			var got string
			require.Eventually(d.t, func() bool {
				got, err = m.RunningVersion(d.ctx, unit)
				return err == nil && got == version
			}, time.Minute, 200*time.Millisecond, "%s on %s runs %q (%v), not %s", unit, id, got, err, version)
		}
	}
}

// TestMachinesSelfUpgradeUnderSystemd: 3 machines at N roll out N1 with
// the default install command (systemd-run from inside the worker's
// sandbox). The postinst restarts both units: afterwards both units' main
// processes run the N1 binaries, journald holds the rollout's logs and
// dpkg's database is clean.
func TestMachinesSelfUpgradeUnderSystemd(t *testing.T) {
	d := startMachines(t, 5*time.Minute)
	d.bootstrapMachines("staging", three...)
	d.requireRunning(N, three...)

	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireOnMachines(N1, three...)
	d.requireRunning(N1, three...)
	for _, id := range three {
		m, _ := d.Machine(id)
		j, err := m.Journal(d.ctx, "ferry-worker")
		require.NoError(t, err)
		require.Contains(t, j, `"ferry_version":"`+N1+`"`, "journald has the new worker's logs on %s", id)
		require.Contains(t, j, `"ferry_version":"`+N+`"`, "journald has the old worker's logs on %s", id)
	}
	_ = context.Background
}
