package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/registrytest"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkUplinkBytes reports the bytes that cross the site's uplink (the
// package server and the registry) while N simulated boot servers fetch a
// release's package and image at once, with the peer layer and, as the
// reference in the same run, without it (each server fetches upstream).
func BenchmarkUplinkBytes(b *testing.B) {
	const pkgSize, layerSize, layers = 16 << 20, 8 << 20, 4
	reg := registrytest.New()
	defer reg.Close()
	img, err := random.Image(layerSize, layers)
	if err != nil {
		b.Fatal(err)
	}
	digest, err := reg.PushImage("site/app", "v1", img)
	if err != nil {
		b.Fatal(err)
	}
	repo, err := name.NewRepository(reg.Host + "/site/app")
	if err != nil {
		b.Fatal(err)
	}
	imageSize := int64(0)
	for _, sz := range blobSizes(b, img) {
		imageSize += sz
	}

	file := make([]byte, pkgSize)
	rand.Read(file)
	sum := sha256.Sum256(file)
	var served atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(file))
		served.Add(cw.n)
	}))
	defer up.Close()
	uplink := func() int64 { return served.Load() + reg.BytesOut() }
	assets := float64(pkgSize + imageSize)

	for _, n := range []int{3, 30} {
		for _, peers := range []bool{true, false} {
			b.Run(fmt.Sprintf("servers=%d/peers=%v", n, peers), func(b *testing.B) {
				cli := etcdtest.Client(b)
				st, err := storage.New(cli, etcdtest.Prefix(b))
				if err != nil {
					b.Fatal(err)
				}
				lease, err := cli.Grant(b.Context(), 600)
				if err != nil {
					b.Fatal(err)
				}
				var fetchers []*Fetcher
				for i := range n {
					cache := &Cache{Dir: filepath.Join(b.TempDir(), "peer")}
					srv := httptest.NewServer(&Server{Cache: cache, Metrics: NewMetrics(nil)})
					defer srv.Close()
					fetchers = append(fetchers, &Fetcher{Cache: cache, Storage: st, ID: fmt.Sprintf("bs%02d", i), URL: srv.URL,
						Lease: func() clientv3.LeaseID { return lease.ID }, Log: quiet})
				}
				b.ResetTimer()
				var bytesUp int64
				var took time.Duration
				for r := 0; r < b.N; r++ {
					rel := fmt.Sprintf("1.0.%d", r)
					pkg := Asset{Release: rel, Name: "big_1.0_amd64.deb", Digest: DigestOf(hex.EncodeToString(sum[:])), Size: pkgSize}
					im := Asset{Release: rel, Name: repo.String(), Digest: digest, Size: -1}
					before, began := uplink(), time.Now()
					var wg sync.WaitGroup
					for _, f := range fetchers {
						wg.Go(func() {
							if err := fetchBoth(b.Context(), f, peers, up.URL, pkg, im, repo); err != nil {
								b.Error(err)
							}
						})
					}
					wg.Wait()
					took += time.Since(began)
					bytesUp += uplink() - before
				}
				per := float64(bytesUp) / float64(b.N)
				b.ReportMetric(per/(1<<20), "uplink-MiB/rollout")
				b.ReportMetric(per/assets, "uplink/assets")
				b.ReportMetric(took.Seconds()/float64(b.N), "s/download-phase")
			})
		}
	}
}

// fetchBoth is one server's download phase: the package, then the image,
// through the peer layer or straight from upstream.
func fetchBoth(ctx context.Context, f *Fetcher, peers bool, pkgURL string, pkg, im Asset, repo name.Repository) error {
	upstream := func(ctx context.Context, dir string, progress func(int64)) (string, error) {
		return release.DownloadURL(ctx, http.DefaultClient, pkgURL, dir, pkg.Name, pkg.Digest[len("sha256:"):], release.DownloadOptions{MaxSize: pkg.Size, Progress: progress})
	}
	if !peers {
		f.init()
		store, err := f.Cache.Store(pkg.Release)
		if err != nil {
			return err
		}
		if _, err := upstream(ctx, store.TempDir(), func(int64) {}); err != nil {
			return err
		}
		_, err = store.pullImage(ctx, store.fromRegistry(&upstreamRegistry{repo: repo, progress: func(int64) {}}), im.Digest)
		return err
	}
	if _, err := f.File(ctx, pkg, upstream); err != nil {
		return err
	}
	_, err := f.Image(ctx, im, repo)
	return err
}
