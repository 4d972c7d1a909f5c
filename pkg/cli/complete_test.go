package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// TestCompletion: the shell completion offers config keys, the fleet's
// server ids and the versions it ran, never file names where a file makes
// no sense.
func TestCompletion(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	for _, id := range []string{"boot-1", "boot-0"} {
		require.Equal(t, ExitOK, f.run("", "join", id).code)
	}
	fleettest.AsLeader(t, f.st, func(key string) error {
		return f.st.PutReleaseInfo(f.ctx(), &storage.ReleaseInfo{Env: storage.EnvProd, Version: "2026.01.03-1", Tag: "release-2026.01.03-1", PublishedAt: time.Now()}, key)
	})

	complete := func(args ...string) []string {
		t.Helper()
		r := f.run("", append([]string{"__complete"}, args...)...)
		require.Equal(t, ExitOK, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Equal(t, ":4", lines[len(lines)-1], "no file names: %s", r.stdout)
		return lines[:len(lines)-1]
	}
	keys := complete("config", "set", "")
	require.Contains(t, keys, "worker-retry-budget")
	require.Contains(t, keys, "env")
	require.Equal(t, keys, complete("config", "get", ""))
	require.Empty(t, complete("config", "get", "env", ""), "one key")
	require.Equal(t, []string{"boot-0", "boot-1"}, complete("leave", ""))
	require.Equal(t, []string{"2026.01.03-1"}, complete("release", "pin", ""))
	require.Empty(t, complete("status", ""))
}
