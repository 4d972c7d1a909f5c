package ci

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

// lockedBuffer is a buffer that a running command writes and a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeReleases: serve-releases serves the ferry packages of a
// directory as signed releases that a server verifies with the key's
// public half, exactly as it would GitHub's, and takes a package copied in
// later.
func TestServeReleases(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "try")
	code, _, errOut := runCI(nil, "keygen", key)
	require.Equal(t, ExitOK, code, errOut)
	pub, err := trust.LoadKeys(key + ".pub")
	require.NoError(t, err)
	releases := filepath.Join(dir, "releases")
	require.NoError(t, os.Mkdir(releases, 0o755))
	build := func(v string) {
		deb := debtest.Build(t, t.TempDir(), debtest.Package{Name: "ferry", Version: v})
		data, err := os.ReadFile(deb)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(releases, release.DebAsset(v)), data, 0o644))
	}
	build("2026.12.06-1")
	require.NoError(t, os.WriteFile(filepath.Join(releases, "notes.txt"), []byte("not a package"), 0o644))

	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"serve-releases", "--key", key + ".key", "--listen", "127.0.0.1:0", "--every", "100ms", releases}, out, io.Discard, func(string) string { return "" })
	}()
	apiURL := regexp.MustCompile(`github-api-url: (\S+)`)
	require.Eventually(t, func() bool { return apiURL.MatchString(out.String()) }, 10*time.Second, 10*time.Millisecond)
	src, err := release.NewSource(release.Options{APIURL: apiURL.FindStringSubmatch(out.String())[1], Repo: "local/ferry"})
	require.NoError(t, err)
	verified := func(v string) bool {
		rel, err := src.Latest(ctx, fleet.EnvProd, nil)
		if err != nil || rel.Version.String() != v {
			return false
		}
		require.NoError(t, src.VerifyRelease(ctx, rel, v, release.Trust{Keys: pub, Channels: []string{trust.ChannelProduction}}))
		return true
	}
	require.Eventually(t, func() bool { return verified("2026.12.06-1") }, 10*time.Second, 50*time.Millisecond)
	build("2026.12.06-2")
	require.Eventually(t, func() bool { return verified("2026.12.06-2") }, 10*time.Second, 50*time.Millisecond, "a package copied in later is served")
	cancel()
	require.Equal(t, ExitOK, <-done)
	require.Contains(t, out.String(), "serving release-2026.12.06-2")
}
