package dctest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/dctest/machine"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The machine scenarios run ferry on systemd machines (dctest/machine):
// each boot server boots its own systemd from a copy of a Debian root, on a
// private lab network where every etcd member, the GitHub fake and the
// registry have addresses of their own. ferry's package is installed with
// apt on the machine's own root and its shipped units run unchanged, but
// for harness.MachineDropIns.
var machineDropIns = harness.MachineDropIns(machineTTL)

// machineTTL is the machines' lease-ttl and session-ttl.
var machineTTL = harness.Scaled(3 * time.Second)

// startMachines starts a lab datacenter for a machine scenario, and checks
// when it ends that nothing of it is left on the host.
func startMachines(t *testing.T, limit time.Duration) *dc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the machine scenarios need root (network namespaces, systemd-nspawn); run them as root, after make deps")
	}
	var lab string
	t.Cleanup(func() {
		// Runs after the datacenter's own cleanup (cleanups run last first).
		if lab != "" {
			require.Empty(t, machine.LeftoversOf(lab), "namespaces, mounts and cgroups left on the host")
			require.Empty(t, labProcesses(lab), "machine or lab processes left on the host")
		}
	})
	d := startWith(t, limit, harness.Options{Machines: true, DropIns: machineDropIns})
	lab = d.LabName()
	require.NotEmpty(t, lab)
	return d
}

// labProcesses lists processes of a lab that still run: a systemd-nspawn
// of one of its machines, or anything in one of its namespaces.
func labProcesses(lab string) []string {
	var left []string
	for _, l := range machine.LeftoversOf(lab) {
		if l.Kind != "netns" {
			continue
		}
		out, _ := exec.Command("ip", "netns", "pids", filepath.Base(l.Path)).Output()
		for _, pid := range strings.Fields(string(out)) {
			left = append(left, fmt.Sprintf("pid %s in %s", pid, l.Path))
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.HasPrefix(string(cmdline), "systemd-nspawn\x00") && strings.Contains(string(cmdline), lab) {
			left = append(left, "systemd-nspawn pid "+e.Name())
		}
	}
	return left
}

// bootstrapMachines starts every machine at N, from the run's image with N
// installed by apt, configures and joins the fleet, and waits until it
// completed N.
func (d *dc) bootstrapMachines(env string, ids ...string) {
	d.t.Helper()
	d.bootstrapMachinesBy(d.AddMachineFromImage, env, ids...)
}

// bootstrapMachinesBy is bootstrapMachines with each machine made by add.
func (d *dc) bootstrapMachinesBy(add func(ctx context.Context, id, version string) (*harness.Machine, error), env string, ids ...string) {
	d.t.Helper()
	require.NoError(d.t, d.Publish(N, harness.PublishOptions{CreatedAt: day(1)}))
	require.NoError(d.t, d.Configure(d.ctx, "env", "none"))
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = add(d.ctx, id, N)
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
			waitFor(d.t, time.Minute, fmt.Sprintf("%s on %s to run %s", unit, id, version), func() (bool, string) {
				got, err := m.RunningVersion(d.ctx, unit)
				return err == nil && got == version, fmt.Sprintf("runs %q (%v)", got, err)
			})
		}
	}
}

// TestMachinesSelfUpgradeUnderSystemd: 3 machines get N the way an
// operator installs it (apt-get install on the running machine, whose
// postinst starts both units), then roll out N1 with the default install
// command (systemd-run from inside the worker's sandbox). The postinst
// restarts both units: afterwards both units' main processes run the N1
// binaries, journald holds the rollout's logs and dpkg's database is clean.
// The other machine scenarios start from the run's image with N installed.
func TestMachinesSelfUpgradeUnderSystemd(t *testing.T) {
	d := startMachines(t, within(5*time.Minute))
	d.bootstrapMachinesBy(d.AddMachine, "staging", three...)
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
}

// holdStep is a step that waits on every machine until the test releases
// it (releaseHold), so that a fault lands at a known point of a rollout.
func holdStep(name string) artifacts.Step {
	return artifacts.Step{Name: name, Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Run: &artifacts.RunAction{
		Command: "sh", Args: []string{"-c", "while [ ! -e " + holdFile + " ]; do sleep 0.2; done"}}}}}
}

const holdFile = "/var/lib/dctest-hold"

func (d *dc) releaseHold(ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		m, err := d.Machine(id)
		require.NoError(d.t, err)
		require.NoError(d.t, m.WriteFile(holdFile, nil))
	}
}

// rollOutToHold publishes N1, whose plan starts with holdStep (and is
// changed by edit, when set), and returns once every server waits in it.
func (d *dc) rollOutToHold(edit func(*artifacts.Set)) {
	d.t.Helper()
	require.NoError(d.t, d.EditArtifactSet(func(s *artifacts.Set) {
		s.Plan.Steps = append([]artifacts.Step{holdStep("hold")}, s.Plan.Steps...)
		if edit != nil {
			edit(s)
		}
	}))
	require.NoError(d.t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitAllInStep("hold", three...)
}

// requireNeverStopped checks that the fleet rolled out N then N1, each
// once, and was never stopped and recovered.
func (d *dc) requireNeverStopped() {
	d.t.Helper()
	hist := d.history()
	require.Len(d.t, hist, 2, "no stop, no recover")
	require.Equal(d.t, N1, hist[0].Version)
	require.Equal(d.t, fleet.ResultCompleted, hist[0].Result)
}

// waitAllInStep waits until every server runs the named step.
func (d *dc) waitAllInStep(step string, ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		d.waitStep(id, step)
	}
}

// TestMachinesWorkerKilledDuringDpkg: `systemctl kill -s KILL ferry-worker`
// while dpkg, run by the default install command, sits in the postinst of
// the worker's own upgrade. dpkg runs in a unit of its own, so it lives on;
// systemd restarts the worker, which waits for dpkg, and the rollout
// completes with the package installed (ii) everywhere.
func TestMachinesWorkerKilledDuringDpkg(t *testing.T) {
	d := startMachines(t, within(5*time.Minute))
	d.bootstrapMachines("staging", three...)
	const gate = "/var/lib/dctest-postinst-gate"
	gated, err := harness.GatedPackage(build.Debs[N1], gate, d.Dir)
	require.NoError(t, err)
	for _, id := range []string{"boot-0", "boot-2"} {
		m, _ := d.Machine(id)
		require.NoError(t, m.WriteFile(gate, nil))
	}
	m, err := d.Machine("boot-1")
	require.NoError(t, err)
	before, err := m.MainPID(d.ctx, "ferry-worker.service")
	require.NoError(t, err)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2), Deb: gated}))

	waitFor(t, 2*time.Minute, "boot-1's dpkg to run the postinst of "+N1, func() (bool, string) {
		st, err := m.Dpkg(d.ctx, "ferry")
		return err == nil && st.Condition() == "half-configured" && st.Version == N1, fmt.Sprintf("%+v (%v)", st, err)
	})
	_, err = m.Exec(d.ctx, "systemctl", "kill", "-s", "KILL", "ferry-worker.service")
	// systemd in a machine on a cgroup v1 host kills the unit's processes
	// but then fails to walk the controllers' read-only hierarchies.
	if err != nil && !strings.Contains(err.Error(), "Input/output error") {
		require.NoError(t, err)
	}

	// systemd starts the worker again while dpkg still waits in its own unit.
	waitFor(t, time.Minute, "systemd to restart the killed worker", func() (bool, string) {
		pid, err := m.MainPID(d.ctx, "ferry-worker.service")
		return err == nil && pid != 0 && pid != before, fmt.Sprintf("main pid %d, was %d (%v)", pid, before, err)
	})
	// dpkg runs on, in systemd-run's transient unit, not the worker's.
	out, err := m.Exec(d.ctx, "sh", "-c", `for c in /proc/[0-9]*/comm; do [ "$(cat $c 2>/dev/null)" = dpkg ] && cat ${c%comm}cgroup; done; true`)
	require.NoError(t, err)
	require.Contains(t, out, "/system.slice/run-", "dpkg died with the worker, or ran in its unit")
	require.NotContains(t, out, "ferry-worker.service")
	st, err := m.Dpkg(d.ctx, "ferry")
	require.NoError(t, err)
	require.Equal(t, "half-configured", st.Condition(), "dpkg is still in the postinst")

	require.NoError(t, m.WriteFile(gate, nil))
	d.waitCompleted(N1)
	d.requireOnMachines(N1, three...)
	d.requireRunning(N1, three...)
	d.requireNeverStopped()
}

// TestMachinesPartitionedServer: boot-2's link to the lab is cut in the
// middle of a rollout for longer than its alive lease. As the operator's
// guide says, the leader stops the fleet once boot-2 has had no live
// worker for dead-server-grace. The link comes back, `ferry recover`
// clears the stop, and the rollout completes with no server half-upgraded.
func TestMachinesPartitionedServer(t *testing.T) {
	d := startMachines(t, within(5*time.Minute))
	d.bootstrapMachines("staging", three...)
	d.rollOutToHold(nil)
	m, err := d.Machine("boot-2")
	require.NoError(t, err)
	require.NoError(t, m.Host.Cut())
	cut := time.Now()
	stopped := d.waitState(N1, "stopped")
	t.Logf("the fleet stopped %s after the cut: %s", time.Since(cut).Round(100*time.Millisecond), stopped.Request.StopReason)
	require.Contains(t, stopped.Request.StopReason, "boot-2")
	require.GreaterOrEqual(t, time.Since(cut), harness.DeadServerGrace, "not before dead-server-grace")

	require.NoError(t, m.Host.Mend())
	d.releaseHold(three...)
	d.ferry("recover", "--yes")
	d.waitCompleted(N1)
	d.requireOnMachines(N1, three...)
	d.requireRunning(N1, three...)
}

// TestMachinesPartitionedLeader: the updater leader's machine drops its
// updater's packets to etcd (nftables, by the updater's user), while its
// worker goes on. Another updater leads within session-ttl and a margin.
// While the old one is cut off, GitHub starts failing, so that an updater
// that still believed it led would record its next release check as soon
// as it reached etcd again. It records none: every check recorded after
// the change of leader names the new leader, the old one stands again
// with a new session, and the rollout has one history record.
func TestMachinesPartitionedLeader(t *testing.T) {
	d := startMachines(t, within(5*time.Minute))
	d.bootstrapMachines("staging", three...)
	d.rollOutToHold(nil)
	// The updaters restart after the upgrade too (the postinst's restart,
	// which waits CANCELLATION_DELAY_SECONDS): the one to cut off is a
	// leader that runs N1.
	d.requireRunning(N1, three...)
	old, m := d.machineLeader()

	// Everything written from here on, in order.
	cli := d.Store.Client()
	from, err := cli.Get(d.ctx, d.Prefix+"info/check")
	require.NoError(t, err)
	events := cli.Watch(d.ctx, d.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from.Header.Revision+1))

	require.NoError(t, m.Firewall(d.ctx, `chain out { type filter hook output priority 0; policy accept; meta skuid "ferry" tcp dport 2379 drop; }`))
	cut := time.Now()
	var next string
	waitFor(t, 3*time.Second+15*time.Second, "another updater to lead after "+old+" was cut off", func() (bool, string) {
		next, _ = d.updaterLeader()
		return next != "" && next != old, fmt.Sprintf("leader %q", next)
	})
	t.Logf("%s leads %s after %s was cut off (session-ttl %s)", next, time.Since(cut).Round(100*time.Millisecond), old, machineTTL)
	electedRev := d.electionRev(next)

	// GitHub fails: the new leader records the failed check.
	d.GitHub.FailNext(1_000_000, http.StatusServiceUnavailable)
	var checks []fleet.CheckInfo
	seen := func(timeout time.Duration) {
		deadline := time.After(timeout)
		for {
			select {
			case resp := <-events:
				for _, ev := range resp.Events {
					if string(ev.Kv.Key) != d.Prefix+"info/check" || ev.Kv.ModRevision <= electedRev {
						continue
					}
					var c fleet.CheckInfo
					require.NoError(t, json.Unmarshal(ev.Kv.Value, &c))
					checks = append(checks, c)
				}
			case <-deadline:
				return
			}
		}
	}
	waitFor(t, time.Minute, "the new leader to record the failing check", func() (bool, string) {
		seen(200 * time.Millisecond)
		return len(checks) > 0 && checks[len(checks)-1].Result == "error", fmt.Sprintf("checks %+v", checks)
	})

	// The old leader reaches etcd again while GitHub still fails.
	require.NoError(t, m.Firewall(d.ctx, ""))
	waitFor(t, time.Minute, "the old leader to notice it lost the lead", func() (bool, string) {
		j, _ := m.Journal(d.ctx, "ferry-updater")
		return strings.Contains(j, "campaigning again") || strings.Contains(j, "lost the lead"), "its journal: " + tail(j, 5)
	})
	// It stands again with a new session: its key in the election is
	// younger than the new leader's, so it cannot fence a write on the old.
	waitFor(t, time.Minute, old+" to campaign again with a new session", func() (bool, string) {
		resp, err := cli.Get(d.ctx, d.Store.UpdaterElectionPrefix(), clientv3.WithPrefix())
		if err != nil {
			return false, err.Error()
		}
		var keys []string
		for _, kv := range resp.Kvs {
			if string(kv.Value) == old && kv.CreateRevision > electedRev {
				return true, ""
			}
			keys = append(keys, fmt.Sprintf("%s at revision %d", kv.Value, kv.CreateRevision))
		}
		return false, fmt.Sprintf("candidates %v; the leader's since %d", keys, electedRev)
	})
	// A few of its check intervals (1s) with etcd back and GitHub failing.
	seen(4 * time.Second)
	d.GitHub.ClearFaults()
	d.releaseHold(three...)
	d.waitCompleted(N1)
	seen(time.Second)
	for _, c := range checks {
		require.Equal(t, next, c.Leader, "a release check (%s at %s) was recorded by %s after %s took the lead", c.Result, c.At, c.Leader, next)
	}
	var n1 int
	for _, h := range d.history() {
		if h.Version == N1 {
			n1++
		}
	}
	require.Equal(t, 1, n1, "one history record for the rollout")
	d.requireOnMachines(N1, three...)
}

// machineLeader waits until the updater that leads the election is a
// running process that says it leads with that key (after an upgrade the
// key of the updater that was stopped can lead for up to its session-ttl).
func (d *dc) machineLeader() (string, *harness.Machine) {
	d.t.Helper()
	var id string
	waitFor(d.t, within(time.Minute), "a running updater that says it leads with the election's first key", func() (bool, string) {
		resp, err := d.Store.Client().Get(d.ctx, d.Store.UpdaterElectionPrefix(), clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			return false, fmt.Sprintf("no election key (%v)", err)
		}
		var key string
		id, key = string(resp.Kvs[0].Value), string(resp.Kvs[0].Key)
		m, err := d.Machine(id)
		if err != nil {
			return false, err.Error()
		}
		// What the updater running now said: after its last start.
		j, _ := m.Journal(d.ctx, "ferry-updater")
		if i := strings.LastIndex(j, `"msg":"starting"`); i >= 0 {
			j = j[i:]
		}
		return strings.Contains(j, `"msg":"leading"`) && strings.Contains(j, `"key":"`+key+`"`), fmt.Sprintf("%s holds %s", id, key)
	})
	m, err := d.Machine(id)
	require.NoError(d.t, err)
	return id, m
}

// electionRev is the create revision of a server's key in the updaters'
// election: when it became a candidate that now leads.
func (d *dc) electionRev(id string) int64 {
	d.t.Helper()
	resp, err := d.Store.Client().Get(d.ctx, d.Store.UpdaterElectionPrefix(), clientv3.WithFirstCreate()...)
	require.NoError(d.t, err)
	require.NotEmpty(d.t, resp.Kvs)
	require.Equal(d.t, id, string(resp.Kvs[0].Value))
	return resp.Kvs[0].CreateRevision
}

// TestMachinesGitHubUnreachable: the lab drops every packet to the GitHub
// fake for 2 minutes in the middle of a rollout, when the workers must
// fetch an extra package from it. The one that claimed it for the site
// retries and says RETRYING (the claim passes to another worker after a
// failed try), the others wait for it, and the rollout completes once
// GitHub answers again, never stopped, with the package fetched from
// GitHub once for the three.
func TestMachinesGitHubUnreachable(t *testing.T) {
	d := startMachines(t, within(7*time.Minute))
	d.bootstrapMachines("staging", three...)
	// N1 brings acme-tools 1.0.1, from GitHub, after a hold. Its release
	// is published once GitHub is cut off: a worker fetches a package
	// ahead while the hold lasts, and must not have it yet.
	data := buildDeb(t, d.Dir, "acme-tools", "1.0.1")
	d.rollOutToHold(func(s *artifacts.Set) {
		s.Debs[0] = artifacts.Deb{Name: "acme-tools", Repository: "acme/tools", Release: "v1.0.1", Asset: "acme-tools_1.0.1_amd64.deb", Version: "1.0.1", Size: int64(len(data)), SHA256: sha256hex(data)}
		s.Plan.Steps[1].Parallel = 3
	})
	gh, err := d.Host("github")
	require.NoError(t, err)
	require.NoError(t, gh.Cut())
	cut := time.Now()
	d.GitHub.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v1.0.1", Assets: map[string][]byte{"acme-tools_1.0.1_amd64.deb": data}})
	d.releaseHold(three...)

	waitFor(t, 100*time.Second, "a worker to say it retries", func() (bool, string) {
		snap, err := d.Store.Snapshot(d.ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, id := range three {
			if snap.Phase(id) == fleet.PhaseRetrying {
				return true, ""
			}
		}
		return false, "phases now " + phases(snap)
	})
	// ferry status says so too, while a worker waits for its next try (a
	// try lasts until the download gives up, so ask until one is seen).
	d.waitFleet(time.Minute, "ferry status to show a worker RETRYING", func() (bool, string) {
		status := d.ferry("status")
		return strings.Contains(strings.ToUpper(status), "RETRYING"), status
	})
	// The whole outage: the rollout must not stop in it.
	for time.Since(cut) < 2*time.Minute {
		s, err := d.Status(d.ctx)
		require.NoError(t, err)
		require.False(t, s.Request.Stop, "the fleet stopped while GitHub was away: %s", s.Request.StopReason)
		require.NotEqual(t, "completed", s.State)
		time.Sleep(2 * time.Second)
	}
	require.NoError(t, gh.Mend())
	d.waitCompleted(N1)
	for _, id := range three {
		m, _ := d.Machine(id)
		v, err := m.PackageVersion(d.ctx, "acme-tools")
		require.NoError(t, err)
		require.Equal(t, "1.0.1", v, id)
	}
	require.Equal(t, 1, d.GitHub.Counters().Downloads["acme-tools_1.0.1_amd64.deb"], "downloads of the package that reached GitHub, for three machines")
	d.requireNeverStopped()
}

// TestMachinesRebootMidRollout: boot-1 loses power in the middle of a step
// (its nspawn process is killed) and boots again. systemd starts both
// units at boot, the worker resumes where the fleet is, and the rollout
// completes. dead-server-grace is a minute here, of the order of its
// default (2m), as an operator sets it to cover a reboot: the datacenter's
// 5s is shorter than a machine's boot on a loaded host (a run beside a
// busy core took 9s and stopped the fleet). TestMachinesPartitionedServer
// shows the grace at work.
func TestMachinesRebootMidRollout(t *testing.T) {
	d := startMachines(t, within(5*time.Minute))
	d.bootstrapMachines("staging", three...)
	d.ferry("config", "set", "dead-server-grace", within(time.Minute).String())
	d.rollOutToHold(nil)
	m, err := d.Machine("boot-1")
	require.NoError(t, err)
	m.PowerOff()
	require.NoError(t, m.Boot(d.ctx))
	require.NoError(t, m.WaitActive(d.ctx, "ferry-worker.service", "ferry-updater.service"))
	d.releaseHold(three...)
	d.waitCompleted(N1)
	d.requireOnMachines(N1, three...)
	d.requireRunning(N1, three...)
	d.requireNeverStopped()
}

// TestMachinesEveryActionUnderTheSandbox: N1's plan has every action type
// (debs, images into the machine's containerd, restart-units, boot
// contents, run) and both kinds of health check, all run by the shipped
// worker unit with its sandbox. The running units score in `systemd-analyze
// security` what the unit files score offline.
func TestMachinesEveryActionUnderTheSandbox(t *testing.T) {
	d := startMachines(t, within(5*time.Minute))
	d.bootstrapMachines("staging", three...)
	// Each asset crossed the uplink once for the three machines: the first
	// to need it fetched it, the others took it from that machine's peer
	// server, on the lab network.
	set, err := artifacts.Load(d.SetFile)
	require.NoError(t, err)
	require.EqualValues(t, 3*len(set.Images), d.Registry.BlobGets(), "blobs the registry served: a config and two layers per image, once")
	for _, deb := range set.Debs {
		require.EqualValues(t, deb.Size, d.GitHub.Counters().BytesServed[deb.Asset], "bytes of %s GitHub served", deb.Asset)
	}
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		s.Plan.Steps = append(s.Plan.Steps, artifacts.Step{
			Name: "checks", Strategy: artifacts.Lockstep,
			Actions: []artifacts.Action{{RestartUnits: &artifacts.RestartUnitsAction{Units: []string{"dns.service"}}}},
			Health: []artifacts.HealthCheck{
				{HTTP: &artifacts.HTTPCheck{URL: "http://127.0.0.1:9712/healthz"}},
				{Command: &artifacts.RunAction{Command: "systemctl", Args: []string{"is-active", "dns.service", "ntp.service"}}},
			},
		})
	}))
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireOnMachines(N1, three...)
	ferry, _ := d.GitHub.Asset(harness.Repo, release.PrefixRelease+N1, release.DebAsset(N1))
	require.EqualValues(t, len(ferry), d.GitHub.Counters().BytesServed[release.DebAsset(N1)], "bytes of ferry's package GitHub served to three machines")

	contents, err := d.Store.GetContents(d.ctx, "boot")
	require.NoError(t, err)
	require.NotNil(t, contents)
	for _, id := range three {
		m, _ := d.Machine(id)
		images, err := m.Exec(d.ctx, "ctr", "-n", "ferry", "images", "ls", "-q")
		require.NoError(t, err)
		for _, im := range set.Images {
			require.Contains(t, images, im.Repository, "%s's containerd has %s", id, im.Name)
		}
		for _, unit := range []string{"dns.service", "ntp.service"} {
			out, err := m.Exec(d.ctx, "systemctl", "show", "-p", "NRestarts,ActiveState", unit)
			require.NoError(t, err)
			require.Contains(t, out, "ActiveState=active", "%s restarted %s", id, unit)
		}
	}
	// The leader step published the boot contents, once for the fleet:
	// on the machine of the worker that led it (it may be another one
	// than N's), through the shipped sandbox (ProtectSystem=yes).
	require.Equal(t, N1, contents.Version)
	require.True(t, contents.Success)
	var published int
	for _, id := range three {
		m, _ := d.Machine(id)
		if target, err := os.Readlink(m.Root + "/srv/ferry/boot/current"); err == nil {
			require.Contains(t, target, set.OSImage.Version)
			published++
		}
	}
	require.GreaterOrEqual(t, published, 1, "boot contents published on a machine")

	m, _ := d.Machine("boot-0")
	for _, unit := range []string{"ferry-worker.service", "ferry-updater.service"} {
		online, err := m.Exec(d.ctx, "systemd-analyze", "security", "--no-pager", unit)
		require.NoError(t, err)
		offline, err := m.Exec(d.ctx, "systemd-analyze", "security", "--no-pager", "--offline=yes", "/lib/systemd/system/"+unit)
		require.NoError(t, err)
		require.Equal(t, exposure(t, offline), exposure(t, online), "%s scores the same running as offline; what differs:\n%s", unit, lineDiff(offline, online))
		t.Logf("%s: %s", unit, exposure(t, online))
	}

	// A configuration error exits 78, which the units do not restart
	// (once the postinst's restart of the updaters is over).
	d.requireRunning(N1, "boot-0")
	config, err := os.ReadFile(m.Root + "/etc/ferry/config.yml")
	require.NoError(t, err)
	require.NoError(t, m.WriteFile("/etc/ferry/config.yml", append(config, []byte("no-such-key: 1\n")...)))
	// Type=simple: the start succeeds, then the process exits 78.
	_, err = m.Exec(d.ctx, "systemctl", "restart", "ferry-worker.service")
	require.NoError(t, err)
	show := func(unit string) string {
		out, err := m.Exec(d.ctx, "systemctl", "show", "-p", "ActiveState,ExecMainStatus,NRestarts", unit)
		require.NoError(t, err)
		return out
	}
	waitFor(t, 30*time.Second, "ferry-worker with a bad config to fail", func() (bool, string) {
		s := show("ferry-worker.service")
		return strings.Contains(s, "ActiveState=failed"), s
	})
	require.Contains(t, show("ferry-worker.service"), "ExecMainStatus=78")
	require.Contains(t, show("ferry-worker.service"), "NRestarts=0", "exit status 78 is not restarted")
	j, err := m.Journal(d.ctx, "ferry-worker")
	require.NoError(t, err)
	require.Contains(t, j, "no-such-key", "the journal says what is wrong")
	// No config at all: the units do not start (ConditionPathExists).
	require.NoError(t, os.Remove(m.Root+"/etc/ferry/config.yml"))
	_, err = m.Exec(d.ctx, "systemctl", "reset-failed", "ferry-worker.service", "ferry-updater.service")
	require.NoError(t, err)
	_, err = m.Exec(d.ctx, "systemctl", "restart", "ferry-worker.service", "ferry-updater.service")
	require.NoError(t, err)
	for _, unit := range []string{"ferry-worker.service", "ferry-updater.service"} {
		out, err := m.Exec(d.ctx, "systemctl", "show", "-p", "ActiveState,ConditionResult", unit)
		require.NoError(t, err)
		require.Contains(t, out, "ConditionResult=no", unit)
		require.Contains(t, out, "ActiveState=inactive", unit)
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func exposure(t *testing.T, out string) string {
	t.Helper()
	m := exposureLine.FindStringSubmatch(out)
	require.NotNil(t, m, "no exposure level in: %s", out)
	return m[1]
}

// lineDiff lists the lines of a that b lacks (-) and those of b that a
// lacks (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[strings.TrimSpace(l)] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out []string
	for l := range ina {
		if !inb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range inb {
		if !ina[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func buildDeb(t *testing.T, dir, name, version string) []byte {
	t.Helper()
	path, err := debtest.BuildErr(dir, debtest.Package{Name: name, Version: version, Files: map[string]string{"/usr/share/" + name + "/version": version}})
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data
}
