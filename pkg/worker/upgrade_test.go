package worker

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

const repo = "ferry-cd/ferry"

// upgradeEnv is a server whose dpkg root holds ferry v1, a GitHub fake and
// a signing key that the fleet trusts.
type upgradeEnv struct {
	*fleet
	gh    *ghEnv
	root  string
	admin string
	ops   *Ops
}

type ghEnv struct {
	fake      *githubfake.Server
	debs      map[string][]byte
	priv      minisign.PrivateKey
	otherPriv minisign.PrivateKey
}

type publishOptions struct {
	corrupt, wrongKey, noSig, noSums, otherVersion bool
}

func ferryPackage(v string) debtest.Package {
	return debtest.Package{Name: "ferry", Version: v, Files: map[string]string{"/usr/share/ferry/marker": v}}
}

func newUpgradeEnv(t *testing.T) *upgradeEnv {
	t.Helper()
	f := newFleet(t)
	fake := githubfake.New()
	t.Cleanup(fake.Close)
	pub, priv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	_, otherPriv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)

	root, err := debtest.NewRoot(filepath.Join(f.dir, "root"))
	require.NoError(t, err)
	inst := &deb.Installer{Command: root.InstallCommand(), Log: quiet}
	require.NoError(t, inst.Install(f.ctx(), debtest.Build(t, f.dir, ferryPackage(v1))))

	f.set(storage.ConfigEnv, "prod", storage.ConfigGitHubRepo, repo, storage.ConfigGitHubAPIURL, fake.APIURL(), storage.ConfigSigningKeys, pub.String())
	return &upgradeEnv{
		fleet: f,
		gh:    &ghEnv{fake: fake, debs: map[string][]byte{}, priv: priv, otherPriv: otherPriv},
		root:  root.Dir, admin: root.AdminDir(),
		ops: &Ops{
			DataDir: filepath.Join(f.dir, "data"), Installer: inst, Log: quiet, Metrics: NewMetrics(),
			Download: release.DownloadOptions{RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond},
		},
	}
}

// publish puts release-<v> on the fake with the assets a release has,
// spoiled as the options say.
func (e *upgradeEnv) publish(v string, o publishOptions) {
	e.t.Helper()
	pkgVersion := v
	if o.otherVersion {
		pkgVersion = "2026.01.09-1"
	}
	path := debtest.Build(e.t, e.t.TempDir(), ferryPackage(pkgVersion))
	content, err := os.ReadFile(path)
	require.NoError(e.t, err)
	name := release.DebAsset(v)
	sums, err := release.MakeSums(map[string]io.Reader{name: bytes.NewReader(content)})
	require.NoError(e.t, err)
	key := e.gh.priv
	if o.wrongKey {
		key = e.gh.otherPriv
	}
	if o.corrupt {
		content = append([]byte(nil), content...)
		content[len(content)/2] ^= 0xff
	}
	assets := map[string][]byte{name: content, release.SumsAsset: sums, release.SigAsset: release.SignSums(key, sums)}
	if o.noSig {
		delete(assets, release.SigAsset)
	}
	if o.noSums {
		delete(assets, release.SumsAsset)
	}
	e.gh.debs[v] = content
	e.gh.fake.AddRelease(repo, githubfake.ReleaseSpec{Tag: "release-" + v, Assets: assets})
}
