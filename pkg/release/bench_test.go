package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/fleet"
)

// The download benchmark runs each download in a child process (this test
// binary again), so that the child's peak RSS is the downloader's alone.
const childEnv = "FERRY_BENCH_DOWNLOAD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(downloadChild(spec))
	}
	os.Exit(m.Run())
}

// downloadChild downloads one asset: spec is "apiURL asset-name sha256 dir".
func downloadChild(spec string) int {
	var api, name, sum, dir string
	if _, err := fmt.Sscan(spec, &api, &name, &sum, &dir); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		return 2
	}
	ctx := context.Background()
	src, err := NewSource(Options{APIURL: api, Repo: testRepo})
	if err == nil {
		var rel *Release
		if rel, err = src.ByTag(ctx, "release-2026.01.02-1"); err == nil {
			a, _ := rel.Asset(name)
			_, err = src.DownloadFile(ctx, a, dir, sum, DownloadOptions{})
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// writeRandomFile writes size pseudo-random bytes and returns their SHA-256.
func writeRandomFile(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{1})
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// BenchmarkDownload reports, for a 16 MiB and a 256 MiB package, the peak
// RSS of a process that downloads and verifies it (it must not grow with
// the size) and its throughput next to curl's on the same loopback server,
// and next to curl followed by a sync of the file (ferry syncs before it
// renames a verified download into place).
func BenchmarkDownload(b *testing.B) {
	for _, mib := range []int64{16, 256} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			dir := b.TempDir()
			asset := filepath.Join(dir, "asset.deb")
			sum, err := writeRandomFile(asset, mib<<20)
			if err != nil {
				b.Fatal(err)
			}
			fake := githubfake.New()
			defer fake.Close()
			fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", AssetFiles: map[string]string{"asset.deb": asset}})

			// Best of three of each, alternating, because this machine is
			// noisy: ferry (which fsyncs before it renames the file into
			// place), curl, and curl followed by a sync of its file, the
			// fair reference.
			var peakKB int64
			ferry, curl, curlSync := time.Duration(1<<62), time.Duration(1<<62), time.Duration(1<<62)
			curlBin, curlErr := exec.LookPath("curl")
			for i := 0; i < 3*b.N; i++ {
				out := filepath.Join(dir, "out"+strconv.Itoa(i))
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), childEnv+"="+fmt.Sprintf("%s asset.deb %s %s", fake.APIURL(), sum, out))
				cmd.Stderr = os.Stderr
				began := time.Now()
				if err := cmd.Run(); err != nil {
					b.Fatalf("download child: %v", err)
				}
				ferry = min(ferry, time.Since(began))
				peakKB = max(peakKB, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
				os.RemoveAll(out)

				if curlErr != nil {
					continue
				}
				file := filepath.Join(dir, "curl.out")
				began = time.Now()
				c := exec.Command(curlBin, "-sSfL", "-o", file, "-H", "Accept: application/octet-stream", assetURL(b, fake))
				if err := c.Run(); err != nil {
					b.Fatalf("curl: %v", err)
				}
				curl = min(curl, time.Since(began))
				if err := exec.Command("sync", file).Run(); err != nil {
					b.Fatalf("sync: %v", err)
				}
				curlSync = min(curlSync, time.Since(began))
				os.Remove(file)
			}
			rate := func(d time.Duration) float64 { return float64(mib) / d.Seconds() }
			b.ReportMetric(float64(peakKB)/1024, "peak-RSS-MiB")
			b.ReportMetric(rate(ferry), "ferry-MiB/s")
			if curlErr == nil {
				b.ReportMetric(rate(curl), "curl-MiB/s")
				b.ReportMetric(rate(curlSync), "curl+sync-MiB/s")
				b.ReportMetric(curlSync.Seconds()/ferry.Seconds(), "ferry/(curl+sync)")
			}
		})
	}
}

// assetURL is the API URL of the benchmark asset, which curl follows to the
// download URL as the worker does.
func assetURL(b *testing.B, fake *githubfake.Server) string {
	src, err := NewSource(Options{APIURL: fake.APIURL(), Repo: testRepo})
	if err != nil {
		b.Fatal(err)
	}
	rel, err := src.ByTag(context.Background(), "release-2026.01.02-1")
	if err != nil {
		b.Fatal(err)
	}
	a, _ := rel.Asset("asset.deb")
	return fmt.Sprintf("%srepos/%s/releases/assets/%d", fake.APIURL(), testRepo, a.ID)
}

// BenchmarkIdlePolls reports the GitHub requests that count against the
// rate limit while nothing changes: after the first, there are none.
func BenchmarkIdlePolls(b *testing.B) {
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.01-1"})
	src, err := NewSource(Options{APIURL: fake.APIURL(), Repo: testRepo})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := src.Latest(ctx, fleet.EnvProd, nil); err != nil {
		b.Fatal(err)
	}
	fake.ResetCounters()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := src.Latest(ctx, fleet.EnvProd, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	c := fake.Counters()
	b.ReportMetric(float64(c.Counted)/float64(b.N), "counted-requests/poll")
	b.ReportMetric(float64(c.NotModified)/float64(b.N), "304s/poll")
}
