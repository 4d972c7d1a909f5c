// Package debian holds the ferry package's nfpm configuration, systemd
// units and maintainer scripts; its test builds the package with `make deb`
// and installs, upgrades and removes it with real dpkg.
package debian

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

const (
	v1 = "2026.01.01-1"
	v2 = "2026.01.02-1"
)

// makeDeb returns the package `make deb` built at a version: the run's
// (make test builds it once for every test) or one built now under dir.
func makeDeb(t *testing.T, version, dir string) string {
	t.Helper()
	path, err := debtest.FerryPackage("..", dir, version)
	require.NoError(t, err)
	require.FileExists(t, path)
	require.FileExists(t, filepath.Join(filepath.Dir(path), "SHA256SUMS"))
	return path
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", name, args, out)
	return string(out)
}

func TestPackage(t *testing.T) {
	dir := t.TempDir()
	deb1 := makeDeb(t, v1, dir)
	deb2 := makeDeb(t, v2, dir)

	t.Run("layout", func(t *testing.T) {
		info := run(t, "dpkg-deb", "--info", deb2)
		require.Contains(t, info, "Package: ferry")
		require.Contains(t, info, "Version: "+v2)
		require.Contains(t, info, "Architecture: amd64")
		for _, script := range []string{"postinst", "prerm", "postrm", "conffiles"} {
			require.Contains(t, info, script)
		}
		contents := run(t, "dpkg-deb", "--contents", deb2)
		for _, path := range []string{
			"./usr/bin/ferry", "./usr/sbin/ferry-updater", "./usr/sbin/ferry-worker", "./usr/bin/ferry-ci",
			"./lib/systemd/system/ferry-updater.service", "./lib/systemd/system/ferry-worker.service",
			"./etc/ferry/config.yml.example", "./usr/share/ferry/artifacts.yaml", "./usr/share/ferry/ignitions/boot.yml",
			"./usr/share/doc/ferry/README.md", "./usr/share/doc/ferry/operator-guide.md",
			"./usr/share/doc/ferry/copyright", "./usr/share/doc/ferry/changelog.Debian.gz",
			"./usr/lib/sysusers.d/ferry.conf", "./etc/ferry/trusted-keys/",
			"./usr/share/man/man1/ferry.1.gz", "./usr/share/man/man1/ferry-status.1.gz", "./usr/share/man/man1/ferry-ci.1.gz",
			"./usr/share/man/man8/ferry-updater.8.gz", "./usr/share/man/man8/ferry-worker.8.gz",
			"./usr/share/bash-completion/completions/ferry", "./usr/share/zsh/vendor-completions/_ferry",
			"./usr/share/fish/vendor_completions.d/ferry.fish",
			"./usr/share/ferry/grafana/ferry.json", "./usr/share/ferry/prometheus/ferry-alerts.yml",
		} {
			require.Contains(t, contents, path+"\n", "the package lacks %s", path)
		}
		require.Regexp(t, `-rwxr-xr-x root/root\s+\d+ .* \./usr/sbin/ferry-worker`, contents)
		require.NotContains(t, contents, "./etc/ferry/config.yml\n", "an unconfigured server must start nothing")
		conffiles := run(t, "dpkg-deb", "--info", deb2, "conffiles")
		require.Equal(t, "/etc/ferry/config.yml.example\n", conffiles)
	})

	t.Run("install upgrade remove with dpkg", func(t *testing.T) {
		root, err := debtest.NewRoot(filepath.Join(t.TempDir(), "root"))
		require.NoError(t, err)
		ctx := context.Background()
		dpkg := func(args ...string) string {
			t.Helper()
			cmd := root.InstallCommand()
			cmd = append(cmd[:len(cmd)-1], args...) // drop the trailing -i
			return run(t, cmd[0], cmd[1:]...)
		}
		version := func() string {
			v, err := deb.InstalledVersion(ctx, root.AdminDir(), "ferry")
			require.NoError(t, err)
			return v
		}
		conf := filepath.Join(root.Dir, "etc/ferry/config.yml.example")

		// The maintainer scripts run without systemd (DPKG_ROOT is set by
		// dpkg for a foreign root): they must succeed and touch nothing.
		dpkg("-i", deb1)
		require.Equal(t, v1, version())
		out, err := exec.Command(filepath.Join(root.Dir, "usr/sbin/ferry-worker"), "--version").Output()
		require.NoError(t, err)
		require.Equal(t, v1+"\n", string(out), "the installed binary reports the package version")

		// No config.yml: the daemons refuse to start, with EX_CONFIG (78),
		// which the units do not restart.
		out, err = exec.Command(filepath.Join(root.Dir, "usr/sbin/ferry-worker"), "--config", filepath.Join(root.Dir, "etc/ferry/config.yml")).CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		require.Equal(t, 78, ee.ExitCode(), "%s", out)
		require.Contains(t, string(out), "does not exist")

		// An operator's edit of the conffile survives the upgrade.
		require.NoError(t, os.WriteFile(conf, []byte("server-id: boot-7\n"), 0o644))
		dpkg("-i", deb2)
		require.Equal(t, v2, version())
		out, err = exec.Command(filepath.Join(root.Dir, "usr/bin/ferry"), "--version").Output()
		require.NoError(t, err)
		require.Contains(t, string(out), v2)
		kept, err := os.ReadFile(conf)
		require.NoError(t, err)
		require.Equal(t, "server-id: boot-7\n", string(kept))

		dpkg("--remove", "ferry")
		require.Empty(t, version())
		require.NoFileExists(t, filepath.Join(root.Dir, "usr/sbin/ferry-worker"))
		require.FileExists(t, conf, "remove keeps the configuration")
		dpkg("--purge", "ferry")
		require.NoFileExists(t, conf, "purge removes it")
	})

	t.Run("lintian has no errors", func(t *testing.T) {
		out, _ := exec.Command("lintian", "--tag-display-limit", "0", deb2).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			require.False(t, strings.HasPrefix(line, "E:"), "lintian: %s\n%s", line, out)
			require.NotContains(t, line, "no-manual-page", "every program has a man page")
		}
	})

	t.Run("systemd units verify", func(t *testing.T) {
		root, err := debtest.NewRoot(filepath.Join(t.TempDir(), "root"))
		require.NoError(t, err)
		cmd := root.InstallCommand()
		run(t, cmd[0], append(cmd[1:], deb2)...)
		out, err := exec.Command("systemd-analyze", "verify", "--root="+root.Dir, "--recursive-errors=no", "--man=no",
			"/lib/systemd/system/ferry-worker.service", "/lib/systemd/system/ferry-updater.service").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze complained")

		// How exposed each daemon is, as systemd rates it (0 safe .. 10).
		for unit, most := range map[string]float64{"ferry-updater.service": 3.0, "ferry-worker.service": 6.5} {
			out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root.Dir, "--no-pager", "/lib/systemd/system/"+unit).CombinedOutput()
			m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unit) + `: (\d+\.\d+)`).FindStringSubmatch(string(out))
			require.NotNil(t, m, "systemd-analyze security %s: %s", unit, out)
			level, err := strconv.ParseFloat(m[1], 64)
			require.NoError(t, err)
			require.LessOrEqual(t, level, most, "%s is too exposed:\n%s", unit, out)
			t.Logf("%s: exposure %.1f (at most %.1f)", unit, level, most)
		}
	})

	t.Run("the signature verifies with minisign", func(t *testing.T) {
		tmp := t.TempDir()
		keys := filepath.Join(tmp, "release")
		_, err := trust.WriteKeyPair(keys, "")
		require.NoError(t, err)
		// A copy: the package's directory may be the whole run's.
		data, err := os.ReadFile(filepath.Join(filepath.Dir(deb2), "SHA256SUMS"))
		require.NoError(t, err)
		sums := filepath.Join(tmp, "SHA256SUMS")
		require.NoError(t, os.WriteFile(sums, data, 0o644))
		run(t, filepath.Join(filepath.Dir(deb2), "bin", "ferry-ci"), "sign", "--key", keys+".key", sums)
		out := run(t, "minisign", "-Vm", sums, "-p", keys+".pub")
		require.Contains(t, out, "Signature and comment signature verified")
		run(t, filepath.Join(filepath.Dir(deb2), "bin", "ferry-ci"), "verify", "--pub", keys+".pub", sums)

		// A changed SHA256SUMS fails both.
		require.NoError(t, os.WriteFile(sums, []byte(strings.Repeat("0", 64)+"  evil.deb\n"), 0o644))
		require.Error(t, exec.Command("minisign", "-Vm", sums, "-p", keys+".pub").Run())
		require.Error(t, exec.Command(filepath.Join(filepath.Dir(deb2), "bin", "ferry-ci"), "verify", "--pub", keys+".pub", sums).Run())
	})
}
