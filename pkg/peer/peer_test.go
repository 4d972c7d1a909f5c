package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/containerdtest"
	"github.com/ferry-cd/ferry/internal/etcdtest"
	"github.com/ferry-cd/ferry/internal/registrytest"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

var quiet = slog.New(slog.DiscardHandler)

// site is a few boot servers' peer layers on one etcd.
type site struct {
	t      *testing.T
	st     *storage.Storage
	lease  clientv3.LeaseID
	served atomic.Int64 // what the upstream served, in bytes
	calls  atomic.Int64 // upstream fetches
	file   []byte
	asset  Asset
}

func newSite(t *testing.T, size int) *site {
	t.Helper()
	cli := etcdtest.Client(t)
	st, err := storage.New(cli, etcdtest.Prefix(t))
	require.NoError(t, err)
	lease, err := cli.Grant(t.Context(), 60)
	require.NoError(t, err)
	s := &site{t: t, st: st, lease: lease.ID}
	s.newAsset(size)
	return s
}

// newAsset makes the site's asset a new file of size random bytes.
func (s *site) newAsset(size int) {
	s.file = make([]byte, size)
	rand.Read(s.file)
	sum := sha256.Sum256(s.file)
	s.asset = Asset{Release: "2026.12.06-1", Name: "big_1.0_amd64.deb", Digest: DigestOf(hex.EncodeToString(sum[:])), Size: int64(size)}
}

// server is one boot server: its cache, served over HTTP, and its fetcher.
type server struct {
	id      string
	fetcher *Fetcher
	metrics *Metrics
	srv     *httptest.Server
}

func (s *site) server(id string) *server {
	s.t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	cache := &Cache{Dir: filepath.Join(s.t.TempDir(), "peer")}
	srv := httptest.NewServer(&Server{Cache: cache, Metrics: m, Log: quiet})
	s.t.Cleanup(srv.Close)
	f := &Fetcher{Cache: cache, Storage: s.st, ID: id, URL: srv.URL, Lease: func() clientv3.LeaseID { return s.lease },
		Metrics: m, Log: quiet.With("server", id), Timeout: 500 * time.Millisecond}
	return &server{id: id, fetcher: f, metrics: m, srv: srv}
}

// upstream is the uplink: it writes the file into dir as a download would.
func (s *site) upstream(_ context.Context, dir string, progress func(int64)) (string, error) {
	s.calls.Add(1)
	s.served.Add(int64(len(s.file)))
	progress(int64(len(s.file)))
	path := filepath.Join(dir, s.asset.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, s.file, 0o600)
}

func (s *site) fetch(srv *server) {
	s.t.Helper()
	path, err := srv.fetcher.File(s.t.Context(), s.asset, s.upstream)
	require.NoError(s.t, err)
	got, err := os.ReadFile(path)
	require.NoError(s.t, err)
	require.True(s.t, bytes.Equal(s.file, got), "%s holds other bytes than the release's", srv.id)
}

// announce makes url a holder of the site's asset, as a hostile or dead
// peer would.
func (s *site) announce(id, url string) {
	s.t.Helper()
	require.NoError(s.t, s.st.AnnouncePeer(s.t.Context(), s.asset.Release, s.asset.Digest, id, url, s.lease))
}

func TestOneUpstreamFetchPerSite(t *testing.T) {
	s := newSite(t, 4<<20)
	var servers []*server
	for i := range 10 {
		servers = append(servers, s.server(fmt.Sprintf("bs%02d", i)))
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() { s.fetch(srv) })
	}
	wg.Wait()
	require.EqualValues(t, 1, s.calls.Load(), "the uplink carried the asset more than once")
	var in, out float64
	for _, srv := range servers {
		in += testutil.ToFloat64(srv.metrics.bytes.WithLabelValues("in"))
		out += testutil.ToFloat64(srv.metrics.bytes.WithLabelValues("out"))
	}
	require.Equal(t, float64(9*len(s.file)), in, "nine servers fetch it from peers")
	require.Equal(t, in, out)
	holders, _, err := s.st.PeerHolders(t.Context(), s.asset.Release, s.asset.Digest)
	require.NoError(t, err)
	require.Len(t, holders, 10)
}

func TestPeerServesBadBytes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(good []byte) []byte
	}{
		{"corrupted", func(good []byte) []byte { bad := bytes.Clone(good); bad[len(bad)/2] ^= 1; return bad }},
		{"oversized", func(good []byte) []byte { return append(bytes.Clone(good), make([]byte, 1<<20)...) }},
		{"truncated", func(good []byte) []byte { return good[:len(good)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, 1<<20)
			var hostileGets atomic.Int64
			hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hostileGets.Add(1)
				w.Write(tc.serve(s.file))
			}))
			defer hostile.Close()
			good := s.server("bs-good")
			client := s.server("bs-client")

			// The good peer is busy fetching from upstream; the
			// hostile one says it holds the asset already.
			holder, _, err := s.st.ClaimUpstream(t.Context(), s.asset.Release, s.asset.Digest, good.id, s.lease, 0)
			require.NoError(t, err)
			require.Equal(t, good.id, holder)
			s.announce("bs-hostile", hostile.URL)
			done := make(chan error, 1)
			go func() {
				_, err := client.fetcher.File(t.Context(), s.asset, s.upstream)
				done <- err
			}()
			require.Eventually(t, func() bool { return len(client.fetcher.droppedPeers()) == 1 }, 10*time.Second, 10*time.Millisecond)
			require.ErrorIs(t, client.fetcher.droppedPeers()["bs-hostile"], ErrBadContent)

			// The good peer, alone with the hostile one, drops it too
			// and fetches from upstream; the client then takes the
			// asset from it.
			s.fetch(good)
			require.NoError(t, <-done)
			s.fetch(client)
			require.EqualValues(t, 1, s.calls.Load(), "the uplink carried the asset once, for the good peer")
			require.EqualValues(t, 2, hostileGets.Load(), "each server asked the hostile peer once, and dropped it")
			require.Contains(t, good.fetcher.droppedPeers(), "bs-hostile")
			require.Equal(t, 1.0, testutil.ToFloat64(client.metrics.dropped))
			require.GreaterOrEqual(t, testutil.ToFloat64(client.metrics.bytes.WithLabelValues("in")), float64(len(s.file)), "bytes from peers count the bad ones too")

		})
	}
}

func TestPeersDownFallBackToUpstream(t *testing.T) {
	s := newSite(t, 1<<20)
	// One peer is gone (nothing listens at its address), one accepts
	// connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gone := "http://" + l.Addr().String()
	l.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer silent.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			defer c.Close()
		}
	}()
	s.announce("bs-gone", gone)
	s.announce("bs-silent", "http://"+silent.Addr().String())
	client := s.server("bs-client")
	began := time.Now()
	s.fetch(client)
	took := time.Since(began)
	require.EqualValues(t, 1, s.calls.Load(), "with no peer answering, the server fetched upstream")
	require.Empty(t, client.fetcher.droppedPeers(), "a peer that does not answer is not one that lied")
	t.Logf("two dead peers cost %s (peer timeout %s)", took, client.fetcher.Timeout)

	// The next asset: the two are not asked again for a while.
	s.newAsset(1 << 10)
	s.announce("bs-gone", gone)
	s.announce("bs-silent", "http://"+silent.Addr().String())
	s.fetch(client)
	require.EqualValues(t, 2, s.calls.Load())
	require.EqualValues(t, 1, accepted.Load(), "the silent peer cost one timeout, not one per asset")
}

func TestStoreRefusesWhatIsNotItsDigest(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	s, err := c.Store("1.0")
	require.NoError(t, err)
	data := []byte("the release's bytes")
	sum := sha256.Sum256(data)
	d := DigestOf(hex.EncodeToString(sum[:]))
	err = s.Write(d, int64(len(data)), bytes.NewReader([]byte("other bytes, same!")))
	require.ErrorIs(t, err, release.ErrChecksum)
	err = s.Write(d, 4, bytes.NewReader(data))
	require.ErrorIs(t, err, release.ErrTooLarge)
	err = s.Write(d, 0, bytes.NewReader(data))
	require.ErrorIs(t, err, release.ErrTooLarge, "a size of 0 takes no byte")
	_, ok := s.Has(d)
	require.False(t, ok, "nothing that failed a check is stored")
	require.NoError(t, s.Write(d, int64(len(data)), bytes.NewReader(data)))
	path, size, ok := c.Find(d)
	require.True(t, ok)
	require.EqualValues(t, len(data), size)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, data, got)
	_, err = c.Store("../etc")
	require.Error(t, err)
	entries, err := os.ReadDir(s.TempDir())
	require.NoError(t, err)
	require.Empty(t, entries, "no temporary file is left behind")
}

func TestServerAnswers(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	s, err := c.Store("1.0")
	require.NoError(t, err)
	data := []byte("0123456789")
	sum := sha256.Sum256(data)
	d := DigestOf(hex.EncodeToString(sum[:]))
	require.NoError(t, s.Write(d, int64(len(data)), bytes.NewReader(data)))
	m := NewMetrics(nil)
	srv := httptest.NewServer(&Server{Cache: c, Metrics: m})
	defer srv.Close()
	get := func(method, path string, header ...string) (*http.Response, string) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	resp, body := get("GET", "/v2/ferry/blobs/"+d)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, string(data), body)
	require.Equal(t, d, resp.Header.Get("Docker-Content-Digest"))
	resp, body = get("GET", "/v2/any/repo/blobs/"+d, "Range", "bytes=4-")
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, "456789", body)
	resp, _ = get("GET", "/v2/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, path := range []string{"/v2/ferry/manifests/latest", "/v2/ferry/blobs/sha256:" + hex.EncodeToString(make([]byte, 32)), "/etc/passwd", "/v2/ferry/blobs/" + d + "/../x"} {
		resp, _ = get("GET", path)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
	}
	resp, _ = get("PUT", "/v2/ferry/blobs/"+d)
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, float64(len(data)+6), testutil.ToFloat64(m.bytes.WithLabelValues("out")))
}

// image pushes a small image to a registry of its own, closed when the
// test ends, and returns it as an asset of the site's release.
func (s *site) image() (*registrytest.Registry, name.Repository, Asset) {
	s.t.Helper()
	reg := registrytest.New()
	s.t.Cleanup(reg.Close)
	digest, err := reg.Push("site/app", "v1")
	require.NoError(s.t, err)
	repo, err := name.NewRepository(reg.Host + "/site/app")
	require.NoError(s.t, err)
	return reg, repo, Asset{Release: s.asset.Release, Name: repo.String(), Digest: digest, Size: -1}
}

func TestImageOncePerSite(t *testing.T) {
	s := newSite(t, 1)
	reg, repo, a := s.image()
	digest := a.Digest

	// A hostile peer serves a manifest of its own under the digest.
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`))
	}))
	defer hostile.Close()
	require.NoError(t, s.st.AnnouncePeer(t.Context(), a.Release, a.Digest, "bs-hostile", hostile.URL, s.lease))

	var servers []*server
	for i := range 5 {
		servers = append(servers, s.server(fmt.Sprintf("bs%02d", i)))
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			img, err := srv.fetcher.Image(t.Context(), a, repo)
			require.NoError(t, err)
			require.NotNil(t, img.Image)
			d, err := img.Image.Digest()
			require.NoError(t, err)
			require.Equal(t, digest, d.String())
			layers, err := img.Image.Layers()
			require.NoError(t, err)
			for _, l := range layers {
				rc, err := l.Compressed()
				require.NoError(t, err)
				_, err = io.Copy(io.Discard, rc)
				require.NoError(t, err)
				rc.Close()
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 3, reg.BlobGets(), "the registry served the config and the two layers once, for the whole site")
	// Whoever asked the hostile peer dropped it; the first server, which
	// found no other holder, asked it.
	dropped := 0
	for _, srv := range servers {
		if err, ok := srv.fetcher.droppedPeers()["bs-hostile"]; ok {
			require.ErrorIs(t, err, ErrBadContent, srv.id)
			dropped++
		}
	}
	require.NotZero(t, dropped)
}

// blobSizes are the sizes of an image's manifest, config and layers.
func blobSizes(t testing.TB, img v1.Image) []int64 {
	t.Helper()
	raw, err := img.RawManifest()
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	sizes := []int64{int64(len(raw)), m.Config.Size}
	for _, l := range m.Layers {
		sizes = append(sizes, l.Size)
	}
	return sizes
}

// TestContainerdPullsThroughTheMirror: containerd, given the hosts.toml
// ferry writes, pulls an image of the release by digest from this
// server's mirror, which takes it from the peer that holds it; the
// registry serves no blob.
func TestContainerdPullsThroughTheMirror(t *testing.T) {
	ctd := containerdtest.New(t)
	s := newSite(t, 1)
	reg, repo, a := s.image()
	digest := a.Digest

	holder := s.server("bs-holder")
	_, err := holder.fetcher.Image(t.Context(), a, repo)
	require.NoError(t, err)
	pulled := reg.BlobGets()

	// This server holds nothing yet; its containerd asks its mirror.
	local := s.server("bs-local")
	local.fetcher.Running = a.Release
	local.srv.Config.Handler.(*Server).Fill = local.fetcher.Fill
	hosts := t.TempDir()
	skipped, err := WriteHostsTOML(hosts, local.srv.URL, []name.Repository{repo})
	require.NoError(t, err)
	require.Empty(t, skipped)
	out, err := exec.Command("ctr", "--address", ctd.Address, "-n", "mirror", "images", "pull", "--hosts-dir", hosts, repo.String()+"@"+digest).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, pulled, reg.BlobGets(), "containerd pulled every blob from the mirror, not from the registry")
	_, _, ok := local.fetcher.Cache.Find(digest)
	require.True(t, ok, "the mirror keeps what it fetched")

	// An operator's own hosts.toml is left alone.
	mine := filepath.Join(hosts, reg.Host, "hosts.toml")
	require.NoError(t, os.WriteFile(mine, []byte("server = \"https://elsewhere\"\n"), 0o644))
	skipped, err = WriteHostsTOML(hosts, local.srv.URL, []name.Repository{repo})
	require.NoError(t, err)
	require.Equal(t, []string{mine}, skipped)
}

// TestOneFetchPerWorker: a fetch ahead and a step's own fetch of the same
// asset, in one worker, are one fetch.
func TestOneFetchPerWorker(t *testing.T) {
	s := newSite(t, 1<<20)
	srv := s.server("bs0")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			// As the worker does: each fetch begins the rollout first.
			require.NoError(t, srv.fetcher.Begin(t.Context(), s.asset.Release))
			s.fetch(srv)
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, s.calls.Load())
}

// TestServerBoundsUploads: a server sends at most MaxUploads blobs at
// once and tells the next peer to ask another (503, Retry-After).
func TestServerBoundsUploads(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	s, err := c.Store("1.0")
	require.NoError(t, err)
	data := make([]byte, 32<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	d := DigestOf(hex.EncodeToString(sum[:]))
	require.NoError(t, s.Write(d, int64(len(data)), bytes.NewReader(data)))
	m := NewMetrics(nil)
	srv := httptest.NewServer(&Server{Cache: c, Metrics: m, MaxUploads: 1})
	defer srv.Close()
	// The first download is not read: the server is still sending it.
	first, err := http.Get(srv.URL + "/v2/ferry/blobs/" + d)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, first.StatusCode)
	second, err := http.Get(srv.URL + "/v2/ferry/blobs/" + d)
	require.NoError(t, err)
	second.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, second.StatusCode)
	require.Equal(t, "1", second.Header.Get("Retry-After"))
	require.Equal(t, 1.0, testutil.ToFloat64(m.busy))
	io.Copy(io.Discard, first.Body)
	first.Body.Close()
	require.Eventually(t, func() bool {
		resp, err := http.Get(srv.URL + "/v2/ferry/blobs/" + d)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "the slot is free once the first download ended")
}
