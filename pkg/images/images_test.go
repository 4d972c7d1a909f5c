package images

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/containerdtest"
	"github.com/ferry-cd/ferry/internal/registrytest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/require"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func pushed(t *testing.T, reg *registrytest.Registry, name, tag string) *artifacts.Image {
	d := reg.MustPush(t, "ferry/"+name, tag)
	return &artifacts.Image{Name: name, Repository: reg.Host + "/ferry/" + name, Tag: tag, Digest: d}
}

func TestPullRefusesAnotherDigest(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	defer reg.Close()
	im := pushed(t, reg, "app", "1.0")
	wrong := *im
	wrong.Digest = "sha256:" + strings.Repeat("0", 64)
	_, err := (&Puller{}).Pull(ctx(t), &wrong)
	require.Error(t, err)

	p, err := (&Puller{}).Pull(ctx(t), im)
	require.NoError(t, err)
	d, err := p.digest()
	require.NoError(t, err)
	require.Equal(t, im.Digest, d.String())
}

func TestOCIDir(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	defer reg.Close()
	rt := &OCIDir{Dir: t.TempDir() + "/oci"}
	im := pushed(t, reg, "app", "1.0")

	ok, err := rt.Present(ctx(t), im)
	require.NoError(t, err)
	require.False(t, ok)
	p, err := (&Puller{}).Pull(ctx(t), im)
	require.NoError(t, err)
	require.NoError(t, rt.Import(ctx(t), im, p))
	ok, err = rt.Present(ctx(t), im)
	require.NoError(t, err)
	require.True(t, ok)

	// A new build under the same name replaces the old one.
	im2 := pushed(t, reg, "app", "1.0")
	require.NotEqual(t, im.Digest, im2.Digest)
	p2, err := (&Puller{}).Pull(ctx(t), im2)
	require.NoError(t, err)
	require.NoError(t, rt.Import(ctx(t), im2, p2))
	ok, err = rt.Present(ctx(t), im2)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = rt.Present(ctx(t), im)
	require.NoError(t, err)
	require.False(t, ok)
}

func TestContainerd(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	defer reg.Close()
	ctd := containerdtest.New(t)
	rt := &Containerd{Address: ctd.Address, Namespace: "ferry", WorkDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	im := pushed(t, reg, "app", "1.0")

	ok, err := rt.Present(ctx(t), im)
	require.NoError(t, err)
	require.False(t, ok)
	p, err := (&Puller{}).Pull(ctx(t), im)
	require.NoError(t, err)
	require.NoError(t, rt.Import(ctx(t), im, p))

	out, err := exec.Command("ctr", "--address", ctd.Address, "-n", "ferry", "images", "ls").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), im.Ref())
	require.Contains(t, string(out), im.Digest, "the imported image keeps the registry's digest")
	ok, err = rt.Present(ctx(t), im)
	require.NoError(t, err)
	require.True(t, ok)

	bad := &Containerd{Address: ctd.Address + ".nope", Namespace: "ferry", WorkDir: t.TempDir()}
	short, cancel := context.WithTimeout(ctx(t), 500*time.Millisecond)
	defer cancel()
	_, err = bad.Present(short, im)
	require.Error(t, err)
}

// digest is the digest of what was pulled: the index, or the image.
func (p Pulled) digest() (v1.Hash, error) {
	if p.Index != nil {
		return p.Index.Digest()
	}
	return p.Image.Digest()
}
