package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

func setWithImageTag(t *testing.T, tag string) (*artifacts.Set, []byte) {
	set := &artifacts.Set{
		Images: []artifacts.Image{{Name: "coredns", Repository: "registry.example/coredns", Tag: tag, Digest: "sha256:" + strings.Repeat(tag[:1], 64)}},
		Plan:   artifacts.Plan{Steps: []artifacts.Step{{Name: "images", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Images: &artifacts.ImagesAction{}}}}}},
	}
	data, err := set.Marshal()
	require.NoError(t, err)
	return set, data
}

func TestArtifactsShowAndDiffFiles(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "artifacts", "show")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "plan", "the built-in set is shown")

	dir := t.TempDir()
	_, a := setWithImageTag(t, "1.11.1")
	_, b := setWithImageTag(t, "2.0.0")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.yaml"), a, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.yaml"), b, 0o644))

	r = f.run("", "-o", "json", "artifacts", "show", "--file", filepath.Join(dir, "a.yaml"))
	require.Equal(t, ExitOK, r.code, r.stderr)
	var set artifacts.Set
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &set))
	require.Equal(t, "1.11.1", set.Images[0].Tag)

	r = f.run("", "artifacts", "diff", "--from", filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml"))
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "~ image/coredns: registry.example/coredns:1.11.1")
	require.Contains(t, r.stdout, "-> registry.example/coredns:2.0.0")
	r = f.run("", "artifacts", "diff", "--from", filepath.Join(dir, "a.yaml"), filepath.Join(dir, "a.yaml"))
	require.Equal(t, "no change\n", r.stdout)

	r = f.run("", "artifacts", "diff", "neither-file-nor-version")
	require.Equal(t, ExitUsage, r.code)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("images: [{name: x, repository: r.example/x, tag: \"1\"}]\n"), 0o644))
	r = f.run("", "artifacts", "show", "--file", filepath.Join(dir, "bad.yaml"))
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "digest")
}

func TestArtifactsDiffAgainstARelease(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	dir := t.TempDir()
	_, a := setWithImageTag(t, "1.11.1")
	_, b := setWithImageTag(t, "2.0.0")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.yaml"), a, 0o644))

	const v = "2026.01.02-1"
	debPath := debtest.Build(t, dir, debtest.Package{Name: "ferry", Version: v, Files: map[string]string{artifacts.InstalledPath: string(b)}})
	pub, priv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	assets, err := release.SignedAssets(v, trust.ChannelProduction, debPath, priv, time.Now(), 0)
	require.NoError(t, err)
	gh := githubfake.New()
	defer gh.Close()
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: "release-" + v, Assets: assets})
	f.githubAPI = gh.APIURL()
	for _, kv := range [][2]string{{"github-repo", "o/r"}, {"env", "staging"}} {
		require.Equal(t, ExitOK, f.run("", "config", "set", kv[0], kv[1]).code)
	}

	r := f.run("", append([]string{"artifacts", "diff", "--from", filepath.Join(dir, "a.yaml"), v}, trustFiles(t, nil, pub)...)...)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "-> registry.example/coredns:2.0.0")

	// A release that does not verify is refused, as a worker would.
	other, _, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	r = f.run("", append([]string{"artifacts", "diff", "--from", filepath.Join(dir, "a.yaml"), v}, trustFiles(t, nil, other)...)...)
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "signature not valid")
}
