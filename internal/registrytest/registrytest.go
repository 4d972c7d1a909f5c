// Package registrytest runs an OCI registry on loopback and pushes test
// images to it.
package registrytest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is a registry on loopback.
type Registry struct {
	srv *httptest.Server
	// blobGets counts blob downloads, so tests can tell a pull happened;
	// bytesOut counts the bytes of every answer's body.
	blobGets atomic.Int64
	bytesOut atomic.Int64
	// Host is host:port, the registry part of image names.
	Host string
	// Dial, when set, is how pushes reach the registry (from outside the
	// network namespace it serves in).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New starts a registry; Close stops it.
func New() *Registry { return NewOn(nil) }

// NewOn starts a registry that serves on l (nil: a loopback port).
func NewOn(l net.Listener) *Registry {
	r := &Registry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.blobGets.Add(1)
		}
		h.ServeHTTP(&counting{ResponseWriter: w, n: &r.bytesOut}, req)
	}))
	if l != nil {
		r.srv.Listener.Close()
		r.srv.Listener = l
	}
	r.srv.Start()
	r.Host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// BlobGets is how many blob downloads the registry served.
func (r *Registry) BlobGets() int64 { return r.blobGets.Load() }

// BytesOut is how many bytes of answers the registry sent.
func (r *Registry) BytesOut() int64 { return r.bytesOut.Load() }

type counting struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *counting) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// Push pushes a random image as repo:tag and returns its digest.
func (r *Registry) Push(repo, tag string) (string, error) {
	img, err := random.Image(512, 2)
	if err != nil {
		return "", err
	}
	return r.PushImage(repo, tag, img)
}

// PushImage pushes img as repo:tag and returns its digest.
func (r *Registry) PushImage(repo, tag string, img v1.Image) (string, error) {
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", r.Host, repo, tag))
	if err != nil {
		return "", err
	}
	var opts []remote.Option
	if r.Dial != nil {
		opts = append(opts, remote.WithTransport(&http.Transport{DialContext: r.Dial}))
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// MustPush is Push for tests.
func (r *Registry) MustPush(t testing.TB, repo, tag string) string {
	t.Helper()
	d, err := r.Push(repo, tag)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
