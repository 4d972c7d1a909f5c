package bootcontents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/stretchr/testify/require"
)

// osServer serves kernel-<v> and initrd-<v> files and counts requests.
type osServer struct {
	srv      *httptest.Server
	requests atomic.Int64
}

func newOSServer(t *testing.T) *osServer {
	o := &osServer{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		w.Write([]byte(content(strings.TrimPrefix(r.URL.Path, "/"))))
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func content(name string) string { return strings.Repeat(name+"\n", 1000) }

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (o *osServer) set(version string) *artifacts.Set {
	f := func(kind string) artifacts.File {
		name := kind + "-" + version
		return artifacts.File{URL: o.srv.URL + "/" + name, Size: int64(len(content(name))), SHA256: sum(content(name))}
	}
	return &artifacts.Set{
		OSImage:   &artifacts.OSImage{Channel: "stable", Version: version, Kernel: f("kernel"), Initrd: f("initrd")},
		Ignitions: []artifacts.Ignition{{Source: "ignitions/boot.yml", Role: "boot"}},
	}
}

func newPublisher(t *testing.T) *Publisher {
	ign := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(ign, "ignitions"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ign, "ignitions/boot.yml"), []byte(`{"role": "{{.Role}}", "os": "{{.OSVersion}}", "kernel": "{{.Kernel}}"}`), 0o644))
	return &Publisher{
		Dir: filepath.Join(t.TempDir(), "boot"), IgnitionDir: ign, Keep: 3,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Download: release.DownloadOptions{RetryBase: time.Millisecond, RetryMax: time.Millisecond, Attempts: 2},
	}
}

func ctx() context.Context { return context.Background() }

func TestPublishSkipAndPrune(t *testing.T) {
	t.Parallel()
	srv := newOSServer(t)
	p := newPublisher(t)

	changed, err := p.Publish(ctx(), srv.set("100.0.0"))
	require.NoError(t, err)
	require.True(t, changed)
	cur, err := p.Current()
	require.NoError(t, err)
	require.Equal(t, "100.0.0", cur)
	kernel, err := readFile(filepath.Join(p.Dir, "current/kernel"))
	require.NoError(t, err)
	require.Equal(t, content("kernel-100.0.0"), kernel)
	ign, err := readFile(filepath.Join(p.Dir, "current/ignitions/boot.ign"))
	require.NoError(t, err)
	require.JSONEq(t, `{"role": "boot", "os": "100.0.0", "kernel": "kernel"}`, ign)
	require.Equal(t, int64(2), srv.requests.Load())

	changed, err = p.Publish(ctx(), srv.set("100.0.0"))
	require.NoError(t, err)
	require.False(t, changed, "publishing the current version again is a no-op")
	require.Equal(t, int64(2), srv.requests.Load(), "nothing was downloaded twice")

	for _, v := range []string{"101.0.0", "102.0.0", "103.0.0"} {
		_, err := p.Publish(ctx(), srv.set(v))
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond) // distinct directory times
	}
	entries, err := readDir(filepath.Join(p.Dir, "versions"))
	require.NoError(t, err)
	require.Equal(t, []string{"101.0.0", "102.0.0", "103.0.0"}, entries, "only the last 3 are kept")
	cur, _ = p.Current()
	require.Equal(t, "103.0.0", cur)

	// Going back to a kept version needs no download.
	before := srv.requests.Load()
	_, err = p.Publish(ctx(), srv.set("101.0.0"))
	require.NoError(t, err)
	require.Equal(t, before, srv.requests.Load())
	cur, _ = p.Current()
	require.Equal(t, "101.0.0", cur)
}

func TestBadChecksumChangesNothing(t *testing.T) {
	t.Parallel()
	srv := newOSServer(t)
	p := newPublisher(t)
	_, err := p.Publish(ctx(), srv.set("100.0.0"))
	require.NoError(t, err)

	bad := srv.set("101.0.0")
	bad.OSImage.Initrd.SHA256 = sum("something else")
	_, err = p.Publish(ctx(), bad)
	require.ErrorIs(t, err, release.ErrChecksum)
	cur, _ := p.Current()
	require.Equal(t, "100.0.0", cur)
	entries, err := readDir(filepath.Join(p.Dir, "versions"))
	require.NoError(t, err)
	require.Equal(t, []string{"100.0.0"}, entries, "no partial version is left")

	missing := srv.set("102.0.0")
	missing.Ignitions[0].Source = "ignitions/nope.yml"
	_, err = p.Publish(ctx(), missing)
	require.ErrorContains(t, err, "ignition boot")
	cur, _ = p.Current()
	require.Equal(t, "100.0.0", cur)
}

func TestReadersNeverSeeAHalfWrittenVersion(t *testing.T) {
	t.Parallel()
	srv := newOSServer(t)
	p := newPublisher(t)
	p.Keep = 2
	_, err := p.Publish(ctx(), srv.set("1.0.0"))
	require.NoError(t, err)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	failures := make(chan string, 1)
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A netboot server resolves current, then reads files.
				dir, err := filepath.EvalSymlinks(filepath.Join(p.Dir, "current"))
				if err != nil {
					select {
					case failures <- "current missing: " + err.Error():
					default:
					}
					return
				}
				data, err1 := readFile(filepath.Join(dir, "manifest.json"))
				kernel, err2 := readFile(filepath.Join(dir, "kernel"))
				initrd, err3 := readFile(filepath.Join(dir, "initrd"))
				if err1 != nil || err2 != nil || err3 != nil {
					// The version was pruned after we resolved it: a
					// reader that is that slow retries, as a netboot
					// server does after a 404.
					if _, statErr := readDir(dir); statErr != nil {
						continue
					}
					select {
					case failures <- fmt.Sprintf("incomplete %s: %v %v %v", dir, err1, err2, err3):
					default:
					}
					return
				}
				var m Manifest
				if json.Unmarshal([]byte(data), &m) != nil || kernel != content("kernel-"+m.Version) || initrd != content("initrd-"+m.Version) {
					select {
					case failures <- "inconsistent " + dir:
					default:
					}
					return
				}
				reads.Add(1)
			}
		}()
	}
	for i := 2; i <= 30; i++ {
		_, err := p.Publish(ctx(), srv.set(fmt.Sprintf("%d.0.0", i)))
		require.NoError(t, err)
	}
	close(stop)
	wg.Wait()
	select {
	case f := <-failures:
		t.Fatal(f)
	default:
	}
	require.Greater(t, reads.Load(), int64(10), "the readers did read")
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}

func readDir(p string) ([]string, error) {
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
