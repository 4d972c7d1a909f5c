package ci

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/internal/registrytest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/stretchr/testify/require"
)

// upstream is a GitHub fake, a registry and an OS feed with a few versions
// of each component, some of them pre-releases.
type upstream struct {
	gh      *githubfake.Server
	reg     *registrytest.Registry
	feed    *httptest.Server
	feedBad bool
	digests map[string]string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{gh: githubfake.New(), reg: registrytest.New(), digests: map[string]string{}}
	t.Cleanup(u.gh.Close)
	t.Cleanup(u.reg.Close)
	dir := t.TempDir()
	for i, v := range []struct {
		tag string
		pre bool
	}{{"v1.2.0", false}, {"v1.3.0", false}, {"v1.4.0-rc.1", true}, {"v1.5.0", false}} {
		ver := strings.TrimPrefix(v.tag, "v")
		deb := debtest.Build(t, dir, debtest.Package{Name: "acme-tools", Version: ver, Files: map[string]string{"/usr/share/acme/v": ver}})
		data, err := os.ReadFile(deb)
		require.NoError(t, err)
		u.gh.AddRelease("acme/tools", githubfake.ReleaseSpec{
			Tag: v.tag, Prerelease: v.pre, CreatedAt: time.Date(2026, 1, i+1, 0, 0, 0, 0, time.UTC),
			Assets: map[string][]byte{"acme-tools_" + ver + "_amd64.deb": data, "acme-tools_" + ver + "_arm64.deb": []byte("not for us")},
		})
	}
	for _, tag := range []string{"1.11.1", "1.12.0", "1.13.0-beta.1", "latest"} {
		u.digests[tag] = u.reg.MustPush(t, "acme/coredns", tag)
	}
	u.feed = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u.feedBad {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		file := func(v, kind string) artifacts.File {
			return artifacts.File{URL: "https://os.example/" + v + "/" + kind, Size: 1000, SHA256: strings.Repeat("a", 64)}
		}
		json.NewEncoder(w).Encode(artifacts.Feed{Versions: []artifacts.FeedVersion{
			{Version: "3760.2.0", Kernel: file("3760.2.0", "kernel"), Initrd: file("3760.2.0", "initrd")},
			{Version: "3815.0.0", Prerelease: true, Kernel: file("3815.0.0", "kernel"), Initrd: file("3815.0.0", "initrd")},
			{Version: "3761.1.0", Kernel: file("3761.1.0", "kernel"), Initrd: file("3761.1.0", "initrd")},
		}})
	}))
	t.Cleanup(u.feed.Close)
	return u
}

// writeSet writes an artifact set that tracks the upstream at old versions.
func (u *upstream) writeSet(t *testing.T) string {
	set := &artifacts.Set{
		Debs: []artifacts.Deb{{Name: "acme-tools", Repository: "acme/tools", Release: "v1.2.0", Asset: "acme-tools_1.2.0_amd64.deb",
			AssetGlob: "acme-tools_*_amd64.deb", Version: "1.2.0", Size: 1, SHA256: strings.Repeat("0", 64)}},
		Images:  []artifacts.Image{{Name: "coredns", Repository: u.reg.Host + "/acme/coredns", Tag: "1.11.1", Digest: u.digests["1.11.1"], Units: []string{"coredns.service"}}},
		OSImage: &artifacts.OSImage{Channel: "stable", Feed: u.feed.URL, Version: "3760.2.0", Kernel: artifacts.File{URL: "https://os.example/k", Size: 1, SHA256: strings.Repeat("b", 64)}, Initrd: artifacts.File{URL: "https://os.example/i", Size: 1, SHA256: strings.Repeat("b", 64)}},
		Plan:    artifacts.Plan{Steps: []artifacts.Step{{Name: "debs", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Debs: &artifacts.DebsAction{}}}}}},
	}
	data, err := set.Marshal()
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "artifacts.yaml")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p
}

func (u *upstream) generate(file string, extra ...string) (int, string, string) {
	return runCI(nil, append([]string{"generate-artifacts", "--file", file, "--github-api-url", u.gh.APIURL()}, extra...)...)
}

func TestGenerateArtifacts(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)

	file := u.writeSet(t)
	code, out, errOut := u.generate(file)
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "updated")
	set, err := artifacts.Load(file)
	require.NoError(t, err)
	require.Equal(t, "v1.5.0", set.Debs[0].Release, "the newest release")
	require.Equal(t, "1.5.0", set.Debs[0].Version)
	require.Equal(t, "acme-tools_1.5.0_amd64.deb", set.Debs[0].Asset)
	content, _ := u.gh.Asset("acme/tools", "v1.5.0", "acme-tools_1.5.0_amd64.deb")
	require.Equal(t, sha(content), set.Debs[0].SHA256, "hashed from the real asset")
	require.Equal(t, "1.13.0-beta.1", set.Images[0].Tag, "without --release a pre-release tag counts")
	require.Equal(t, u.digests["1.13.0-beta.1"], set.Images[0].Digest)
	require.Equal(t, "3815.0.0", set.OSImage.Version)
	require.Equal(t, []string{"coredns.service"}, set.Images[0].Units, "what is not upstream's is kept")

	// --release skips pre-releases.
	file = u.writeSet(t)
	code, _, errOut = u.generate(file, "--release")
	require.Equal(t, ExitOK, code, errOut)
	set, err = artifacts.Load(file)
	require.NoError(t, err)
	require.Equal(t, "v1.5.0", set.Debs[0].Release)
	require.Equal(t, "1.12.0", set.Images[0].Tag)
	require.Equal(t, "3761.1.0", set.OSImage.Version)

	// A second run with no upstream change gives the same bytes.
	before, err := os.ReadFile(file)
	require.NoError(t, err)
	code, out, errOut = u.generate(file, "--release")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "up to date")
	after, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, string(before), string(after))
}

// TestGenerateArtifactsRefusesAnOlderPackage: a newer upstream tag whose
// package is older in dpkg's order (1.5.0~rc1 sorts before 1.5.0) is not
// taken: the fleet would be asked to downgrade it.
func TestGenerateArtifactsRefusesAnOlderPackage(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	deb := debtest.Build(t, t.TempDir(), debtest.Package{Name: "acme-tools", Version: "1.5.0~rc1"})
	data, err := os.ReadFile(deb)
	require.NoError(t, err)
	u.gh.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v1.6.0", CreatedAt: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC),
		Assets: map[string][]byte{"acme-tools_1.5.0~rc1_amd64.deb": data}})
	file := u.writeSet(t)
	code, _, errOut := u.generate(file)
	require.Equal(t, ExitOK, code, errOut)
	set, err := artifacts.Load(file)
	require.NoError(t, err)
	require.Equal(t, "v1.6.0", set.Debs[0].Release, "the first run takes it: the set held 1.2.0")

	// With 1.5.0 in the set, the same release is refused.
	set.Debs[0].Release, set.Debs[0].Asset, set.Debs[0].Version = "v1.5.0", "acme-tools_1.5.0_amd64.deb", "1.5.0"
	out, err := set.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, out, 0o644))
	code, _, errOut = u.generate(file)
	require.NotEqual(t, ExitOK, code)
	require.Contains(t, errOut, "holds acme-tools 1.5.0~rc1, older than the set's 1.5.0 in dpkg's order")
	after, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, string(out), string(after), "nothing changed")
}

func TestGenerateArtifactsIgnoreFile(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	file := u.writeSet(t)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(file), "artifacts_ignore.yaml"), []byte(`
debs:
  acme-tools: [v1.5.0]
images:
  coredns: ["1.12.0"]
osImage: ["3761.1.0"]
`), 0o644))
	code, _, errOut := u.generate(file, "--release")
	require.Equal(t, ExitOK, code, errOut)
	set, err := artifacts.Load(file)
	require.NoError(t, err)
	require.Equal(t, "v1.3.0", set.Debs[0].Release)
	require.Equal(t, "1.11.1", set.Images[0].Tag)
	require.Equal(t, "3760.2.0", set.OSImage.Version)
}

func TestGenerateArtifactsFailingSourceChangesNothing(t *testing.T) {
	t.Parallel()
	for _, fail := range []string{"github", "registry", "feed"} {
		u := newUpstream(t)
		file := u.writeSet(t)
		before, err := os.ReadFile(file)
		require.NoError(t, err)
		switch fail {
		case "github":
			u.gh.FailNext(1000, http.StatusInternalServerError)
		case "registry":
			u.reg.Close()
		case "feed":
			u.feedBad = true
		}
		code, _, errOut := u.generate(file)
		require.Equal(t, ExitFailure, code, fail)
		require.Contains(t, errOut, "left unchanged", fail)
		after, err := os.ReadFile(file)
		require.NoError(t, err)
		require.Equal(t, string(before), string(after), "%s: the file was touched", fail)
		entries, _ := os.ReadDir(filepath.Dir(file))
		require.Len(t, entries, 1, "%s: no temporary file is left", fail)
	}
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
