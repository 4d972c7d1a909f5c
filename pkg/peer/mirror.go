package peer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Fill brings digest into the cache from a peer, for a registry client
// (containerd, through hosts.toml) that asked this server's mirror for
// content it lacks. It asks the servers that announced content of the
// release being rolled out (or of the one this worker runs), never
// upstream: on a 404 the client goes there itself. A manifest is read up
// to 4 MiB; a blob only when a manifest in the cache gives its size.
func (f *Fetcher) Fill(ctx context.Context, digest string, manifest bool) bool {
	f.init()
	if _, err := ParseDigest(digest); err != nil {
		return false
	}
	f.mu.Lock()
	rel := f.rollout
	f.mu.Unlock()
	if rel == "" {
		rel = f.Running
	}
	store, err := f.Cache.Store(rel)
	if err != nil {
		return false
	}
	kind, size := "manifests", int64(-1)
	if !manifest {
		var ok bool
		if size, ok = store.blobSize(digest); !ok {
			return false
		}
		kind = "blobs"
	}
	peers, err := f.Storage.PeersOf(ctx, rel)
	if err != nil {
		f.Log.Warn("cannot list the peers", "error", err)
		return false
	}
	ids := make([]string, 0, len(peers))
	for id := range peers {
		if id != f.ID && !f.isDropped(id) {
			ids = append(ids, id)
		}
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for _, id := range ids {
		base, err := peerURL(peers[id])
		if err != nil {
			continue
		}
		p := &peerRegistry{base: base, repo: "ferry", client: f.client, timeout: f.Timeout, progress: f.Metrics.in}
		rc, err := p.get(ctx, kind, digest)
		if err != nil {
			continue
		}
		var r io.Reader = rc
		if manifest {
			r = io.LimitReader(rc, maxManifestSize+1)
		}
		err = store.Write(digest, size, r)
		rc.Close()
		if err == nil {
			return true
		}
		f.Log.Warn("a peer could not give what the mirror was asked for", "peer", id, "digest", digest, "error", err)
	}
	return false
}

// blobSize is the size that a manifest the store holds gives digest.
func (s *Store) blobSize(digest string) (int64, bool) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		if info, err := e.Info(); err != nil || info.Size() > maxManifestSize {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(s.dir, "blobs", "sha256", e.Name()))
		if err != nil || !bytes.Contains(raw, []byte(digest)) || !manifestTypeOf(raw).IsImage() {
			continue
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			continue
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if d.Digest.String() == digest {
				return d.Size, true
			}
		}
	}
	return 0, false
}

// hostsMarker starts every hosts.toml ferry writes: one without it is the
// operator's, and is left alone.
const hostsMarker = "# Written by ferry-worker"

// WriteHostsTOML writes containerd's hosts.toml for each registry of
// repos into dir (containerd's config_path, or ctr --hosts-dir): pulls of
// that registry ask mirror (this server's peer server) first, by digest,
// and the registry itself when the mirror does not have it. A hosts.toml
// that ferry did not write is left alone, and reported.
func WriteHostsTOML(dir, mirror string, repos []name.Repository) (skipped []string, err error) {
	done := map[string]bool{}
	for _, repo := range repos {
		reg := repo.Registry
		host := reg.RegistryStr()
		if done[host] {
			continue
		}
		done[host] = true
		path := filepath.Join(dir, host, "hosts.toml")
		if old, err := os.ReadFile(path); err == nil && !strings.HasPrefix(string(old), hostsMarker) {
			skipped = append(skipped, path)
			continue
		}
		server := (&url.URL{Scheme: reg.Scheme(), Host: host}).String()
		body := fmt.Sprintf("%s: pulls by digest ask this boot server's peer layer\n# first, then the registry. Remove this line to keep ferry from rewriting it.\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\"]\n  override_path = true\n",
			hostsMarker, server, strings.TrimSuffix(mirror, "/")+MirrorPath+"/v2")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return skipped, err
		}
		tmp := path + ".ferry-new"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			return skipped, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}
