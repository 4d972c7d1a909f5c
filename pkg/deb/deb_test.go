package deb

import (
	"bytes"
	"context"
	"fmt"
	"github.com/ferry-cd/ferry/pkg/retry"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/stretchr/testify/require"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestInstallIntoRoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := debtest.NewRoot(filepath.Join(dir, "root"))
	require.NoError(t, err)
	ctx := context.Background()
	inst := &Installer{Command: root.InstallCommand(), Log: quiet, Output: filepath.Join(dir, "dpkg.out")}

	v, err := InstalledVersion(ctx, root.AdminDir(), "marker")
	require.NoError(t, err)
	require.Empty(t, v)

	d1 := debtest.Build(t, dir, debtest.Package{Name: "marker", Version: "2026.01.01-1", Files: map[string]string{"/usr/share/marker/v": "one"}})
	d2 := debtest.Build(t, dir, debtest.Package{Name: "marker", Version: "2026.01.02-1", Files: map[string]string{"/usr/share/marker/v": "two"}})
	ver, err := Field(ctx, d2, "Version")
	require.NoError(t, err)
	require.Equal(t, "2026.01.02-1", ver)

	require.NoError(t, inst.Install(ctx, d1))
	v, err = InstalledVersion(ctx, root.AdminDir(), "marker")
	require.NoError(t, err)
	require.Equal(t, "2026.01.01-1", v)

	// A cancelled context does not stop an installation half way.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, inst.Install(cancelled, d2))
	v, err = InstalledVersion(ctx, root.AdminDir(), "marker")
	require.NoError(t, err)
	require.Equal(t, "2026.01.02-1", v)
	got, err := os.ReadFile(filepath.Join(root.Dir, "usr/share/marker/v"))
	require.NoError(t, err)
	require.Equal(t, "two", string(got))

	err = inst.Install(ctx, filepath.Join(dir, "missing.deb"))
	require.ErrorContains(t, err, "install")
	require.ErrorContains(t, err, "dpkg")
}

// gated builds a package whose postinst waits until gate exists: dpkg then
// holds its lock with the package half-configured.
func gated(t *testing.T, dir, name, version, gate string) string {
	return debtest.Build(t, dir, debtest.Package{Name: name, Version: version,
		Files:    map[string]string{"/usr/share/" + name + "/v": version},
		Postinst: fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done`, gate)})
}

func TestInstallWaitsForTheLockAndRepairFinishesInterruptedRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := debtest.NewRoot(filepath.Join(dir, "root"))
	require.NoError(t, err)
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	inst := &Installer{Command: root.InstallCommand(), Log: log, Output: filepath.Join(dir, "dpkg.out")}
	require.Equal(t, root.AdminDir(), inst.AdminDir())
	gate := filepath.Join(dir, "gate")
	// Whatever happens, no postinst is left waiting.
	t.Cleanup(func() { os.WriteFile(gate, nil, 0o644) })
	slow := gated(t, dir, "slow", "1.0", gate)
	other := debtest.Build(t, dir, debtest.Package{Name: "other", Version: "2.0", Files: map[string]string{"/usr/share/other/v": "2.0"}})

	// A dpkg run of its own, as one left behind by a killed worker.
	first := exec.Command(inst.Command[0], append(inst.Command[1:], slow)...)
	first.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, first.Start())
	require.Eventually(t, func() bool {
		s, err := inst.Query(ctx, "slow")
		return err == nil && s.Condition() == "half-configured"
	}, 30*time.Second, 20*time.Millisecond)
	s, err := inst.Query(ctx, "slow")
	require.NoError(t, err)
	require.ErrorContains(t, s.Expect("1.0"), "dpkg has slow half-configured 1.0; expected slow installed at 1.0")
	audit, err := inst.Audit(ctx)
	require.NoError(t, err)
	require.Contains(t, audit, "slow")

	installed := make(chan error, 1)
	go func() { installed <- inst.Install(ctx, other) }()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "dpkg is busy") }, 30*time.Second, 20*time.Millisecond,
		"the second run waits for the lock")
	select {
	case err := <-installed:
		t.Fatalf("the install did not wait for the lock: %v", err)
	default:
	}
	// A short wait gives up, with a message that says why.
	short := &Installer{Command: inst.Command, Log: quiet, LockWait: 300 * time.Millisecond, Output: inst.Output}
	err = short.Install(ctx, other)
	require.ErrorIs(t, err, ErrBusy)
	require.ErrorContains(t, err, "waited 300ms for the dpkg lock")

	// The first run is killed in its postinst: the package stays
	// half-configured until a repair finishes it. dpkg alone dies, at once: killing its postinst too could let dpkg
	// see the script fail first and unwind the upgrade.
	require.NoError(t, first.Process.Kill())
	first.Wait()
	require.NoError(t, <-installed, "the lock was freed")
	v, err := InstalledVersion(ctx, root.AdminDir(), "other")
	require.NoError(t, err)
	require.Equal(t, "2.0", v)
	s, err = inst.Query(ctx, "slow")
	require.NoError(t, err)
	require.Equal(t, "half-configured", s.Condition())

	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	found, err := inst.Repair(ctx)
	require.NoError(t, err)
	require.Contains(t, found, "slow")
	s, err = inst.Query(ctx, "slow")
	require.NoError(t, err)
	require.NoError(t, s.Expect("1.0"))
	found, err = inst.Repair(ctx)
	require.NoError(t, err)
	require.Empty(t, found, "nothing left to repair")

	missing, err := inst.Query(ctx, "never-installed")
	require.NoError(t, err)
	require.Equal(t, "not-installed", missing.Condition())
	require.False(t, missing.Installed())
}

func TestCheckCommand(t *testing.T) {
	require.NoError(t, CheckCommand([]string{"systemd-run", "--wait", "--pipe", "dpkg", "-i"}))
	require.ErrorContains(t, CheckCommand(nil), "empty")
	require.ErrorContains(t, CheckCommand([]string{"apt-get", "install"}), `must end with dpkg's -i`)
	i := &Installer{Command: []string{"dpkg", "--root=/srv/r", "-i"}}
	require.Equal(t, "/srv/r/var/lib/dpkg", i.AdminDir())
	require.Equal(t, []string{"dpkg", "--root=/srv/r"}, i.prefix())
	require.Empty(t, (&Installer{Command: []string{"dpkg", "-i"}}).AdminDir())
}

// TestInstallCommandKilledWhileDpkgGoesOn: the install command (as the
// systemd-run client, when a stop of the worker's unit signals it) is
// killed while dpkg goes on by itself. How dpkg ended decides: installed
// is success; still unfinished when the lock wait runs out is an error
// worth retrying, never a failed package.
func TestInstallCommandKilledWhileDpkgGoesOn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := debtest.NewRoot(filepath.Join(dir, "root"))
	require.NoError(t, err)
	ctx := context.Background()
	// dpkg in a session of its own, and the command itself killed at once.
	detach := []string{"sh", "-c", `setsid "$0" "$@" </dev/null >/dev/null 2>&1 & sleep 0.2; kill -TERM $$`}
	cmd := append(detach, root.InstallCommand()...)
	inst := &Installer{Command: cmd, Log: quiet, Output: filepath.Join(dir, "dpkg.out")}

	fine := debtest.Build(t, dir, debtest.Package{Name: "fine", Version: "1.0", Files: map[string]string{"/usr/share/fine/v": "1.0"}})
	require.NoError(t, inst.Install(ctx, fine), "dpkg finished the install the killed command started")
	v, err := InstalledVersion(ctx, root.AdminDir(), "fine")
	require.NoError(t, err)
	require.Equal(t, "1.0", v)

	gate := filepath.Join(dir, "gate")
	t.Cleanup(func() { os.WriteFile(gate, nil, 0o644) })
	slow := gated(t, dir, "slow", "1.0", gate)
	short := &Installer{Command: cmd, Log: quiet, Output: inst.Output, LockWait: 500 * time.Millisecond}
	err = short.Install(ctx, slow)
	var interrupted *InterruptedError
	require.ErrorAs(t, err, &interrupted)
	require.True(t, retry.Transient(err), "an interrupted install is tried again: %v", err)
	// dpkg finishes once the gate opens; the next look at the database
	// sees the package installed.
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	require.Eventually(t, func() bool {
		ok, err := inst.installedAsFile(ctx, slow)
		return err == nil && ok
	}, 30*time.Second, 50*time.Millisecond, "dpkg never finished the interrupted install")
}
