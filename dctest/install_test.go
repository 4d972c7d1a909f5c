package dctest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/stretchr/testify/require"
)

// TestFirstInstallFromPackage: the .deb installed on a server with no
// config starts nothing and loops on nothing; a config error says which
// key; once the operator writes the config, the server joins and takes
// part in a rollout.
func TestFirstInstallFromPackage(t *testing.T) {
	d := start(t)
	require.NoError(t, d.Publish(N, harness.PublishOptions{CreatedAt: day(1)}))
	require.NoError(t, d.Configure(d.ctx, "env", "staging"))
	s, err := d.InstallServer(d.ctx, "boot-0", N)
	require.NoError(t, err)
	require.NoFileExists(t, s.ConfigPath(), "the package ships no config.yml")
	require.FileExists(t, s.ConfigPath()+".example")

	// systemd starts nothing without config.yml, and never restarts a
	// configuration error.
	for _, unit := range []string{"ferry-worker.service", "ferry-updater.service"} {
		data, err := os.ReadFile(filepath.Join(s.Root.Dir, "lib/systemd/system", unit))
		require.NoError(t, err)
		require.Contains(t, string(data), "ConditionPathExists=/etc/ferry/config.yml")
		require.Contains(t, string(data), "RestartPreventExitStatus=78")
	}
	exitsWithConfigError := func(want string) {
		t.Helper()
		for _, prog := range []string{"ferry-worker", "ferry-updater"} {
			out, err := exec.CommandContext(d.ctx, filepath.Join(s.Root.Dir, "usr/sbin", prog), "--config", s.ConfigPath()).CombinedOutput()
			var ee *exec.ExitError
			require.True(t, errors.As(err, &ee), "%s: %v: %s", prog, err, out)
			require.Equal(t, 78, ee.ExitCode(), "%s: %s", prog, out)
			require.Contains(t, string(out), want, prog)
			require.NotContains(t, string(out), "bootstrap.Config", "no Go type names")
		}
	}
	exitsWithConfigError("does not exist")
	require.NoError(t, os.WriteFile(s.ConfigPath(), []byte("prefx: /ferry/\n"), 0o644))
	exitsWithConfigError(`unknown key "prefx"`)

	require.NoError(t, s.WriteConfig())
	s.Start()
	d.ferry("join", "boot-0")
	d.waitCompleted(N)
	d.requireInstalled(N, "boot-0")
}
