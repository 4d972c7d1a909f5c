package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// PullImage fetches the image or image index digest, every manifest and
// blob below it, from reg into the store, each checked against its digest
// (and a blob against the size its manifest gives), and lists it in the
// store's index. Blobs the store has already are not fetched again.
func (s *Store) pullImage(ctx context.Context, reg registry, digest string) (v1.Descriptor, error) {
	raw, err := reg.manifest(ctx, digest)
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := s.Write(digest, int64(len(raw)), bytes.NewReader(raw)); err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest %s: %w", digest, err)
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
			if _, err := s.pullImage(ctx, reg, m.Digest.String()); err != nil {
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
			d := b.Digest.String()
			if size, ok := s.Has(d); ok && size == b.Size {
				continue
			}
			rc, err := reg.blob(ctx, d)
			if err != nil {
				return v1.Descriptor{}, err
			}
			err = s.Write(d, b.Size, rc)
			rc.Close()
			if err != nil {
				return v1.Descriptor{}, fmt.Errorf("blob %s: %w", d, err)
			}
		}
	default:
		return v1.Descriptor{}, retry.Permanent(fmt.Errorf("%s is a %q, neither an image nor an index", digest, mt))
	}
	return desc, nil
}

// manifestTypeOf reads a manifest's media type (see manifestType).
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

// hasImage reports whether the store lists the image digest whole.
func (s *Store) hasImage(digest string) bool {
	list, err := s.Assets()
	if err != nil {
		return false
	}
	for _, d := range list {
		if d == digest {
			_, ok := s.Has(digest)
			return ok
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
// cache, a peer, or the upstream registry, which opts reach. The copy stays
// in the cache, for peers.
func (f *Fetcher) Image(ctx context.Context, a Asset, repo name.Repository, opts ...remote.Option) (Image, error) {
	f.init()
	store, err := f.Cache.Store(a.Release)
	if err != nil {
		return Image{}, err
	}
	pull := func(ctx context.Context, reg registry) error {
		desc, err := store.pullImage(ctx, reg, a.Digest)
		if err != nil {
			return err
		}
		return store.addImage(desc)
	}
	src := source{
		have: func() bool { return store.hasImage(a.Digest) },
		fromPeer: func(ctx context.Context, base string) error {
			return pull(ctx, &peerRegistry{base: base, repo: repo.RepositoryStr(), client: f.client, timeout: f.Timeout, progress: f.Metrics.in})
		},
		fromUpstream: func(ctx context.Context) error {
			return pull(ctx, &upstreamRegistry{repo: repo, opts: opts, progress: f.Metrics.fromUpstream})
		},
	}
	if err := f.get(ctx, a, store, src); err != nil {
		return Image{}, err
	}
	return store.Image(a.Digest)
}
