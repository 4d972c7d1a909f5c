package deb

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/stretchr/testify/require"
)

func TestInstallIntoRoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := debtest.NewRoot(filepath.Join(dir, "root"))
	require.NoError(t, err)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	inst := &Installer{Command: root.InstallCommand(), Log: log}

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
