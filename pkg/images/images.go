// Package images pulls container images by digest and imports them into a
// boot server's runtime: containerd (through ctr) or an OCI image layout
// directory.
package images

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/command"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Annotations that name an image in an OCI archive.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// Runtime is where images go.
type Runtime interface {
	// Present reports whether the image is there at its digest.
	Present(ctx context.Context, im *artifacts.Image) (bool, error)
	// Import stores an image (or index) that was pulled.
	Import(ctx context.Context, im *artifacts.Image, pulled Pulled) error
}

// Pulled is an image or image index fetched from a registry.
type Pulled struct {
	Image v1.Image      // set for a single-platform image
	Index v1.ImageIndex // set for a multi-platform index
}

// Puller fetches images from registries.
type Puller struct {
	// Proxy is an HTTP proxy URL; empty means none.
	Proxy string
}

func (p *Puller) transport() (http.RoundTripper, error) {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.ResponseHeaderTimeout = release.HeaderTimeout
	if p.Proxy != "" {
		u, err := release.ProxyURL(p.Proxy)
		if err != nil {
			return nil, err
		}
		t.Proxy = http.ProxyURL(u)
	}
	return t, nil
}

// Options are how the registry client reaches registries.
func (p *Puller) Options() ([]remote.Option, error) {
	tr, err := p.transport()
	if err != nil {
		return nil, err
	}
	return []remote.Option{remote.WithTransport(tr)}, nil
}

// Pull fetches the image by digest and checks that the registry's answer
// has that digest.
func (p *Puller) Pull(ctx context.Context, im *artifacts.Image) (Pulled, error) {
	ref, err := name.NewDigest(im.DigestRef())
	if err != nil {
		return Pulled{}, fmt.Errorf("image %s: %w", im.Name, err)
	}
	tr, err := p.transport()
	if err != nil {
		return Pulled{}, err
	}
	desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(tr))
	if err != nil {
		return Pulled{}, fmt.Errorf("pull %s: %w", im.DigestRef(), err)
	}
	if desc.Digest.String() != im.Digest {
		return Pulled{}, fmt.Errorf("pull %s: the registry answered digest %s", im.DigestRef(), desc.Digest)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Pulled{}, fmt.Errorf("pull %s: %w", im.DigestRef(), err)
		}
		return Pulled{Index: idx}, nil
	}
	img, err := desc.Image()
	if err != nil {
		return Pulled{}, fmt.Errorf("pull %s: %w", im.DigestRef(), err)
	}
	return Pulled{Image: img}, nil
}

// appendTo adds the pulled image to an OCI layout, named for ctr and OCI.
func (p Pulled) appendTo(l layout.Path, im *artifacts.Image) error {
	annotations := layout.WithAnnotations(map[string]string{
		annotationContainerdName: im.Ref(),
		annotationRefName:        im.Tag,
	})
	if p.Index != nil {
		return l.AppendIndex(p.Index, annotations)
	}
	return l.AppendImage(p.Image, annotations)
}

// OCIDir keeps images in an OCI image layout directory, for sites that load
// images into their runtime another way.
type OCIDir struct {
	Dir string
}

func (o *OCIDir) path() (layout.Path, error) {
	l, err := layout.FromPath(o.Dir)
	if err == nil {
		return l, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("OCI layout %s: %w", o.Dir, err)
	}
	return layout.Write(o.Dir, empty.Index)
}

// Present reports whether the layout's index holds the digest under the
// image's name.
func (o *OCIDir) Present(_ context.Context, im *artifacts.Image) (bool, error) {
	l, err := layout.FromPath(o.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	idx, err := l.ImageIndex()
	if err != nil {
		return false, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return false, err
	}
	for _, d := range m.Manifests {
		if d.Digest.String() == im.Digest && d.Annotations[annotationContainerdName] == im.Ref() {
			return true, nil
		}
	}
	return false, nil
}

// Import adds the image, replacing an older one of the same name.
func (o *OCIDir) Import(_ context.Context, im *artifacts.Image, p Pulled) error {
	l, err := o.path()
	if err != nil {
		return err
	}
	if err := l.RemoveDescriptors(func(d v1.Descriptor) bool { return d.Annotations[annotationContainerdName] == im.Ref() }); err != nil {
		return fmt.Errorf("OCI layout %s: %w", o.Dir, err)
	}
	if err := p.appendTo(l, im); err != nil {
		return fmt.Errorf("OCI layout %s: %w", o.Dir, err)
	}
	return nil
}

// Containerd imports images into containerd with ctr, in one namespace.
type Containerd struct {
	// Address is containerd's socket.
	Address   string
	Namespace string
	// Snapshotter unpacks the image; empty means containerd's default.
	Snapshotter string
	// WorkDir holds the temporary OCI archive of an import.
	WorkDir string
	Log     *slog.Logger
}

func (c *Containerd) ctr(args ...string) []string {
	return append([]string{"ctr", "--address", c.Address, "--namespace", c.Namespace, "--connect-timeout", "10s"}, args...)
}

// Present reports whether containerd has the image under its name at the
// digest.
func (c *Containerd) Present(ctx context.Context, im *artifacts.Image) (bool, error) {
	argv := c.ctr("images", "ls")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return false, fmt.Errorf("ctr images ls: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return false, fmt.Errorf("ctr images ls: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] == im.Ref() && f[2] == im.Digest {
			return true, nil
		}
	}
	return false, nil
}

// Import writes the image as an OCI archive on disk (never whole in
// memory) and has ctr import and unpack it.
func (c *Containerd) Import(ctx context.Context, im *artifacts.Image, p Pulled) error {
	dir, err := os.MkdirTemp(c.WorkDir, ".image-"+im.Name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		return err
	}
	if err := p.appendTo(l, im); err != nil {
		return fmt.Errorf("write %s: %w", im.Name, err)
	}
	archive := filepath.Join(dir, "image.tar")
	if err := tarDir(filepath.Join(dir, "layout"), archive); err != nil {
		return err
	}
	ref, err := name.ParseReference(im.Ref())
	if err != nil {
		return err
	}
	args := []string{"images", "import", "--base-name", ref.Context().Name()}
	if c.Snapshotter != "" {
		args = append(args, "--snapshotter", c.Snapshotter)
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	return command.Run(ctx, command.Spec{Argv: c.ctr(append(args, archive)...)}, log)
}

// tarDir writes the files under dir into a tar file.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := tar.NewWriter(bw)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := w.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(w, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
