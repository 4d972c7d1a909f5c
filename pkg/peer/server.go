package peer

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
)

// MirrorPath is where the server is a registry mirror for this server's
// own containerd (hosts.toml's host, with override_path): the registry API
// at MirrorPath+"/v2/...".
const MirrorPath = "/mirror"

// DefaultMaxUploads bounds the blobs one server sends to peers at once.
const DefaultMaxUploads = 4

// Server serves a Cache to peers, read-only, in the shape of the registry
// API: GET or HEAD /v2/<name>/blobs/<digest> and
// /v2/<name>/manifests/<digest>. The name is ignored: content is found by
// its digest alone, and only content the cache holds, which was checked
// against a signed digest before it was stored, is served. Anything else,
// a tag included, is 404, so that a registry client goes on to the next
// host.
type Server struct {
	Cache *Cache
	// MaxUploads bounds the blobs served at once; past it a peer is
	// answered 503 with Retry-After and asks another. Default
	// DefaultMaxUploads.
	MaxUploads int
	Metrics    *Metrics
	Log        *slog.Logger
	// Fill, when set, tries to bring content the cache lacks into it (from
	// the other peers) before the server answers 404, for requests under
	// MirrorPath: the server is there a pull-through mirror for this
	// server's own containerd. Peers ask under /v2/, which never fills,
	// so that one request never becomes many.
	Fill func(ctx context.Context, digest string, manifest bool) bool

	once  sync.Once
	slots chan struct{}
}

// route splits a registry API path into kind (blobs, manifests) and
// reference; ok is false for any other path.
func route(path string) (kind, ref string, ok bool) {
	rest, found := strings.CutPrefix(path, "/v2/")
	if !found {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		return "", "", false
	}
	head, ref := rest[:i], rest[i+1:]
	j := strings.LastIndex(head, "/")
	if j <= 0 {
		return "", "", false
	}
	kind = head[j+1:]
	if kind != "blobs" && kind != "manifests" {
		return "", "", false
	}
	return kind, ref, true
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	path, mirror := strings.CutPrefix(r.URL.Path, MirrorPath)
	if mirror {
		path = "/v2" + path
	}
	if path == "/v2/" || path == "/v2" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}\n"))
		return
	}
	kind, ref, ok := route(path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if _, err := ParseDigest(ref); err != nil {
		http.Error(w, "content is served by digest only", http.StatusNotFound)
		return
	}
	file, _, ok := s.Cache.Find(ref)
	if !ok && mirror && s.Fill != nil && s.Fill(r.Context(), ref, kind == "manifests") {
		file, _, ok = s.Cache.Find(ref)
	}
	if !ok {
		http.Error(w, "not here", http.StatusNotFound)
		return
	}
	f, err := os.Open(file)
	if err != nil {
		http.Error(w, "not here", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Docker-Content-Digest", ref)
	w.Header().Set("Content-Type", "application/octet-stream")
	if kind == "manifests" && fi.Size() <= maxManifestSize {
		raw, err := os.ReadFile(file)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(manifestTypeOf(raw)))
	}
	if r.Method == http.MethodGet && kind == "blobs" {
		release, ok := s.acquire()
		if !ok {
			s.Metrics.busy.Inc()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "serving as many peers as it may; ask another", http.StatusServiceUnavailable)
			return
		}
		defer release()
	}
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", fi.ModTime(), f)
	s.Metrics.out(cw.n)
}

func (s *Server) init() {
	s.once.Do(func() {
		n := s.MaxUploads
		if n <= 0 {
			n = DefaultMaxUploads
		}
		s.slots = make(chan struct{}, n)
		if s.Metrics == nil {
			s.Metrics = NewMetrics(nil)
		}
	})
}

func (s *Server) acquire() (func(), bool) {
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, true
	default:
		return nil, false
	}
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}
