// Package peer lets the boot servers of a site fetch each release asset
// over the site's uplink once, and from each other after that.
//
// Every worker keeps what it verified (packages, and the manifests and
// blobs of images) in a Cache, addressed by SHA-256 digest, and serves it
// read-only to its peers over HTTP in the registry API's shape
// (/v2/<name>/blobs/<digest>, /v2/<name>/manifests/<digest>). A Fetcher
// gets an asset from a peer that announced it in etcd before it goes
// upstream, and checks every byte against the digest and size that the
// signed release gives, exactly as it does for GitHub or a registry. A
// peer therefore needs no trust: one that serves bad bytes is dropped for
// the rest of the rollout, and a dead or slow one costs one timeout.
package peer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/retry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// digestRE is the only form of digest the cache takes: lower-case SHA-256.
var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ParseDigest checks that d is "sha256:<64 hex digits>".
func ParseDigest(d string) (v1.Hash, error) {
	if !digestRE.MatchString(d) {
		return v1.Hash{}, fmt.Errorf("%q is not a sha256 digest", d)
	}
	return v1.NewHash(d)
}

// DigestOf is the digest of a file whose SHA-256 is sum (hex).
func DigestOf(sum string) string { return "sha256:" + strings.ToLower(sum) }

// Cache is a data-dir's store of verified content, one Store per release.
// Only the release being rolled out (and the one before it) is kept.
type Cache struct {
	Dir string

	mu     sync.Mutex
	stores map[string]*Store
}

// releaseRE is a release directory's name: a version as ferry writes it.
var releaseRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+~_-]*$`)

// Store returns the store of release, creating it.
func (c *Cache) Store(rel string) (*Store, error) {
	if !releaseRE.MatchString(rel) {
		return nil, fmt.Errorf("release %q cannot name a directory", rel)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.stores[rel]; s != nil {
		return s, nil
	}
	s, err := openStore(filepath.Join(c.Dir, rel))
	if err != nil {
		return nil, err
	}
	if c.stores == nil {
		c.stores = map[string]*Store{}
	}
	c.stores[rel] = s
	return s, nil
}

// Releases lists the releases the cache holds.
func (c *Cache) Releases() ([]string, error) {
	entries, err := os.ReadDir(c.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rels []string
	for _, e := range entries {
		if e.IsDir() && releaseRE.MatchString(e.Name()) {
			rels = append(rels, e.Name())
		}
	}
	return rels, nil
}

// Keep removes the stores of every release but those given.
func (c *Cache) Keep(rels ...string) error {
	have, err := c.Releases()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range have {
		if !slices.Contains(rels, r) {
			delete(c.stores, r)
			if err := os.RemoveAll(filepath.Join(c.Dir, r)); err != nil {
				return fmt.Errorf("remove the cache of %s: %w", r, err)
			}
		}
	}
	return nil
}

// Find returns the path of digest's content in any release's store.
func (c *Cache) Find(digest string) (string, int64, bool) {
	rels, err := c.Releases()
	if err != nil {
		return "", 0, false
	}
	for _, r := range rels {
		s, err := c.Store(r)
		if err != nil {
			continue
		}
		if size, ok := s.Has(digest); ok {
			return s.Path(digest), size, true
		}
	}
	return "", 0, false
}

// Store is the verified content of one release, in an OCI image layout
// directory: blobs/sha256/<hex>. Nothing enters it unchecked: a blob is
// written to a temporary file, hashed, and renamed into place only when its
// digest and size are those asked for.
type Store struct {
	dir string
	mu  sync.Mutex
}

// assetsFile lists the digests of the release's assets that the store
// holds whole (packages, and images with every blob), to announce again
// after a restart.
const assetsFile = "assets.json"

func openStore(dir string) (*Store, error) {
	if _, err := layout.FromPath(dir); err != nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return nil, err
		}
		if _, err := layout.Write(dir, empty.Index); err != nil {
			return nil, fmt.Errorf("peer cache %s: %w", dir, err)
		}
	}
	return &Store{dir: dir}, nil
}

// Layout is the store as an OCI image layout.
func (s *Store) Layout() layout.Path { return layout.Path(s.dir) }

// Path is where digest's content is (or would be).
func (s *Store) Path(digest string) string {
	return filepath.Join(s.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// Has reports whether the store holds digest, and its size.
func (s *Store) Has(digest string) (int64, bool) {
	if !digestRE.MatchString(digest) {
		return 0, false
	}
	fi, err := os.Stat(s.Path(digest))
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

// Write stores what r delivers as digest, checking that it has that
// SHA-256 and, when size >= 0, exactly size bytes; reading stops at the
// first byte past size. Content that fails a check is never stored:
// the error wraps release.ErrChecksum or release.ErrTooLarge, and is
// permanent.
func (s *Store) Write(digest string, size int64, r io.Reader) error {
	if _, err := ParseDigest(digest); err != nil {
		return retry.Permanent(err)
	}
	if _, ok := s.Has(digest); ok {
		return nil
	}
	tmp, err := s.temp()
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	w := &release.HashingWriter{W: tmp, H: sha256.New(), Limit: size}
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	if size >= 0 && w.N != size {
		return retry.Permanent(fmt.Errorf("%s: %d bytes, expected %d: %w", digest, w.N, size, release.ErrChecksum))
	}
	if got := "sha256:" + hex.EncodeToString(w.H.Sum(nil)); got != digest {
		return retry.Permanent(fmt.Errorf("content is %s, expected %s: %w", got, digest, release.ErrChecksum))
	}
	return s.commit(tmp, digest)
}

// Adopt moves a file that the caller verified to have digest into the
// store (the same file system: a rename, not a copy), at Path(digest).
func (s *Store) Adopt(path, digest string) error {
	if _, err := ParseDigest(digest); err != nil {
		return err
	}
	final := s.Path(digest)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return err
	}
	if err := os.Rename(path, final); err != nil {
		return fmt.Errorf("keep %s for peers: %w", filepath.Base(path), err)
	}
	return nil
}

// TempDir is where downloads into the store are written before they are
// checked: on the store's file system, so that Adopt is a rename.
func (s *Store) TempDir() string { return filepath.Join(s.dir, "tmp") }

func (s *Store) temp() (*os.File, error) {
	if err := os.MkdirAll(s.TempDir(), 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(s.TempDir(), ".blob-")
}

func (s *Store) commit(tmp *os.File, digest string) error {
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	final := s.Path(digest)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), final)
}

// Assets lists the assets the store holds whole.
func (s *Store) Assets() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readAssets()
}

func (s *Store) readAssets() ([]string, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, assetsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []string
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(s.dir, assetsFile), err)
	}
	return list, nil
}

// markAsset records that the store holds the asset digest whole.
func (s *Store) markAsset(digest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	list, err := s.readAssets()
	if err != nil {
		return err
	}
	if slices.Contains(list, digest) {
		return nil
	}
	data, err := json.Marshal(append(list, digest))
	if err != nil {
		return err
	}
	return s.replaceFile(assetsFile, data)
}

// replaceFile replaces the store's file name with data whole: a reader
// sees the old file or the new one, never a part.
func (s *Store) replaceFile(name string, data []byte) error {
	tmp, err := s.temp()
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(s.dir, name))
}
