package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxManifestSize bounds a manifest read from anywhere.
const maxManifestSize = 4 << 20

// registry is where an image's manifests and blobs come from.
type registry interface {
	manifest(ctx context.Context, digest string) ([]byte, error)
	blob(ctx context.Context, digest string) (io.ReadCloser, error)
}

// fetchContent puts one manifest or blob (size: -1 for a manifest) into
// the store, checked against its digest and size.
type fetchContent func(ctx context.Context, digest string, size int64, manifest bool) error

// fromRegistry fetches content straight from reg.
func (s *Store) fromRegistry(reg registry) fetchContent {
	return func(ctx context.Context, digest string, size int64, manifest bool) error {
		if _, ok := s.Has(digest); ok {
			return nil // a digest has one content: what is held is it
		}
		if manifest {
			raw, err := reg.manifest(ctx, digest)
			if err != nil {
				return err
			}
			if err := s.Write(digest, int64(len(raw)), bytes.NewReader(raw)); err != nil {
				return fmt.Errorf("manifest %s: %w", digest, err)
			}
			return nil
		}
		rc, err := reg.blob(ctx, digest)
		if err != nil {
			return err
		}
		defer rc.Close()
		if err := s.Write(digest, size, rc); err != nil {
			return fmt.Errorf("blob %s: %w", digest, err)
		}
		return nil
	}
}

// pullImage fetches the image or image index digest, every manifest and
// blob below it, into the store with fetch, in order: the manifest first,
// then what it lists (checked against the sizes it gives). It returns the
// descriptor to list the image under in the store's index.
func (s *Store) pullImage(ctx context.Context, fetch fetchContent, digest string) (v1.Descriptor, error) {
	if err := fetch(ctx, digest, -1, true); err != nil {
		return v1.Descriptor{}, err
	}
	raw, err := os.ReadFile(s.Path(digest))
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt := manifestTypeOf(raw)
	desc := v1.Descriptor{MediaType: mt, Size: int64(len(raw))}
	if desc.Digest, err = v1.NewHash(digest); err != nil {
		return v1.Descriptor{}, err
	}
	switch {
	case mt.IsIndex():
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return v1.Descriptor{}, retry.Permanent(fmt.Errorf("index %s: %w", digest, err))
		}
		for _, m := range idx.Manifests {
			if _, err := s.pullImage(ctx, fetch, m.Digest.String()); err != nil {
				return v1.Descriptor{}, err
			}
		}
	case mt.IsImage():
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return v1.Descriptor{}, retry.Permanent(fmt.Errorf("manifest %s: %w", digest, err))
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !b.MediaType.IsDistributable() {
				continue
			}
			if err := fetch(ctx, b.Digest.String(), b.Size, false); err != nil {
				return v1.Descriptor{}, err
			}
		}
	default:
		return v1.Descriptor{}, retry.Permanent(fmt.Errorf("%s is a %q, neither an image nor an index", digest, mt))
	}
	return desc, nil
}

// manifestTypeOf reads a manifest's media type from its mediaType field;
// an OCI manifest may leave it out, and then has "manifests" when it is an
// index.
func manifestTypeOf(raw []byte) types.MediaType {
	var m struct {
		MediaType types.MediaType  `json:"mediaType"`
		Manifests *json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.MediaType != "" {
		return m.MediaType
	}
	if m.Manifests != nil {
		return types.OCIImageIndex
	}
	return types.OCIManifestSchema1
}

// addImage lists desc in the store's index.json (replacing the file
// whole), so that the layout reads the image.
func (s *Store) addImage(desc v1.Descriptor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.Layout()
	idx, err := l.ImageIndex()
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		if d.Digest == desc.Digest {
			return nil
		}
	}
	m = m.DeepCopy()
	m.Manifests = append(m.Manifests, desc)
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.replaceFile("index.json", data)
}

// Image is an image or image index that the store holds whole.
type Image struct {
	Image v1.Image      // a single-platform image
	Index v1.ImageIndex // a multi-platform index
}

// Image reads the image digest from the store.
func (s *Store) Image(digest string) (Image, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return Image{}, err
	}
	idx, err := layout.Path(s.dir).ImageIndex()
	if err != nil {
		return Image{}, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return Image{}, err
	}
	for _, d := range m.Manifests {
		if d.Digest != h {
			continue
		}
		if d.MediaType.IsIndex() {
			ii, err := idx.ImageIndex(h)
			return Image{Index: ii}, err
		}
		img, err := idx.Image(h)
		return Image{Image: img}, err
	}
	return Image{}, fmt.Errorf("image %s: not in the cache", digest)
}

// hasImage reports whether the store's index lists the image digest: it
// is listed once every manifest and blob below it is in the store.
func (s *Store) hasImage(digest string) bool {
	idx, err := s.Layout().ImageIndex()
	if err != nil {
		return false
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return false
	}
	for _, d := range m.Manifests {
		if d.Digest.String() == digest {
			return true
		}
	}
	return false
}

// upstreamRegistry reads a repository of a registry with the registry
// client, which speaks its authentication and redirects.
type upstreamRegistry struct {
	repo     name.Repository
	opts     []remote.Option
	progress func(int64)
}

func (u *upstreamRegistry) manifest(ctx context.Context, digest string) ([]byte, error) {
	desc, err := remote.Get(u.repo.Digest(digest), append(u.opts, remote.WithContext(ctx))...)
	if err != nil {
		return nil, fmt.Errorf("pull %s@%s: %w", u.repo, digest, err)
	}
	u.progress(int64(len(desc.Manifest)))
	return desc.Manifest, nil
}

func (u *upstreamRegistry) blob(ctx context.Context, digest string) (io.ReadCloser, error) {
	l, err := remote.Layer(u.repo.Digest(digest), append(u.opts, remote.WithContext(ctx))...)
	if err != nil {
		return nil, fmt.Errorf("pull %s@%s: %w", u.repo, digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("pull %s@%s: %w", u.repo, digest, err)
	}
	return &countingReader{rc: rc, fn: u.progress}, nil
}

// peerRegistry reads a peer's Server: plain GETs by digest, nothing to
// authenticate, a busy peer answered at once (503).
type peerRegistry struct {
	base     string
	repo     string
	client   *http.Client
	timeout  time.Duration
	progress func(int64)
}

func (p *peerRegistry) get(ctx context.Context, kind, digest string) (io.ReadCloser, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	idle := time.AfterFunc(p.timeout, func() { cancel(&release.StalledError{After: p.timeout}) })
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, p.base+"/v2/"+p.repo+"/"+kind+"/"+digest, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		idle.Stop()
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		idle.Stop()
		cancel(nil)
		return nil, &release.StatusError{Code: resp.StatusCode, Status: "peer answered " + resp.Status, Header: resp.Header}
	}
	return &countingReader{rc: resp.Body, fn: func(n int64) {
		idle.Reset(p.timeout)
		p.progress(n)
	}, done: func() { idle.Stop(); cancel(nil) }}, nil
}

func (p *peerRegistry) manifest(ctx context.Context, digest string) ([]byte, error) {
	rc, err := p.get(ctx, "manifests", digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxManifestSize {
		return nil, retry.Permanent(fmt.Errorf("manifest %s: more than %d bytes: %w", digest, maxManifestSize, release.ErrTooLarge))
	}
	return data, nil
}

func (p *peerRegistry) blob(ctx context.Context, digest string) (io.ReadCloser, error) {
	return p.get(ctx, "blobs", digest)
}

type countingReader struct {
	rc   io.ReadCloser
	fn   func(int64)
	done func()
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if n > 0 {
		c.fn(int64(n))
	}
	return n, err
}

func (c *countingReader) Close() error {
	if c.done != nil {
		c.done()
	}
	return c.rc.Close()
}

// Image returns a verified copy of the image a (a.Digest is the digest
// the artifact set names) of the repository repo, from this server's
// cache, peers, or the upstream registry, which opts reach. Each manifest
// and blob is an asset of its own: announced as soon as this server holds
// it, so that the fleet takes a layer from the first server that has it
// while that server fetches the next one, and fetched upstream by one
// server for the site. The copy stays in the cache, for peers.
func (f *Fetcher) Image(ctx context.Context, a Asset, repo name.Repository, opts ...remote.Option) (Image, error) {
	f.init()
	store, err := f.Cache.Store(a.Release)
	if err != nil {
		return Image{}, err
	}
	if !store.hasImage(a.Digest) {
		up := &upstreamRegistry{repo: repo, opts: opts, progress: f.Metrics.fromUpstream}
		fetch := func(ctx context.Context, digest string, size int64, manifest bool) error {
			return f.content(ctx, a.Release, store, up, digest, size, manifest)
		}
		desc, err := store.pullImage(ctx, fetch, a.Digest)
		if err != nil {
			return Image{}, err
		}
		if err := store.addImage(desc); err != nil {
			return Image{}, err
		}
	}
	return store.Image(a.Digest)
}

// content fetches one manifest or blob of an image into the store through
// the peer layer (see get).
func (f *Fetcher) content(ctx context.Context, rel string, store *Store, up registry, digest string, size int64, manifest bool) error {
	a := Asset{Release: rel, Name: digest, Digest: digest, Size: size}
	src := source{
		have: func() bool {
			got, ok := store.Has(digest)
			return ok && (size < 0 || got == size)
		},
		fromPeer: func(ctx context.Context, base string) error {
			reg := &peerRegistry{base: base, repo: "ferry", client: f.client, timeout: f.Timeout, progress: f.Metrics.in}
			return store.fromRegistry(reg)(ctx, digest, size, manifest)
		},
		fromUpstream: func(ctx context.Context) error {
			return store.fromRegistry(up)(ctx, digest, size, manifest)
		},
	}
	return f.get(ctx, a, store, src)
}
