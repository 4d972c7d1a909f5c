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
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
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
	corrupt, wrongKey, noManifest, expired, otherVersion bool
	// channel is the manifest's channel; default production.
	channel string
	// bigger serves a package this much larger than the signed one; with
	// misannounce, GitHub still announces the signed size.
	bigger      int
	misannounce bool
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
	keys := filepath.Join(f.dir, "trusted-keys")
	require.NoError(t, os.Mkdir(keys, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(keys, "release.pub"), []byte(pub.String()+"\n"), 0o644))

	f.set(storage.ConfigEnv, "prod", storage.ConfigGitHubRepo, repo, storage.ConfigGitHubAPIURL, fake.APIURL())
	return &upgradeEnv{
		fleet: f,
		gh:    &ghEnv{fake: fake, debs: map[string][]byte{}, priv: priv, otherPriv: otherPriv},
		root:  root.Dir, admin: root.AdminDir(),
		ops: &Ops{
			DataDir: filepath.Join(f.dir, "data"), Installer: inst, Log: quiet, Metrics: NewMetrics(), TrustedKeys: keys,
			Download: release.DownloadOptions{RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond},
		},
	}
}

// installsAndExits runs a worker of version ver with an empty plan and
// waits until it installed a package and exited for the new binary.
func (e *upgradeEnv) installsAndExits(id, ver string) *runningWorker {
	e.t.Helper()
	w := e.start(id, ver, &artifacts.Plan{}, e.ops)
	select {
	case <-w.done:
		require.ErrorIs(e.t, w.err, ErrUpgraded)
	case <-time.After(60 * time.Second):
		e.t.Fatal("the worker did not install its package and exit")
	}
	return w
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
	channel := o.channel
	if channel == "" {
		channel = trust.ChannelProduction
	}
	now := time.Now()
	if o.expired {
		now = now.Add(-2 * release.Validity[channel])
	}
	signed := filepath.Join(e.t.TempDir(), name)
	require.NoError(e.t, os.WriteFile(signed, content, 0o644))
	m, err := release.NewManifest(v, channel, signed, now, 0)
	require.NoError(e.t, err)
	key := e.gh.priv
	if o.wrongKey {
		key = e.gh.otherPriv
	}
	manifest, err := release.ManifestFiles(m, key)
	require.NoError(e.t, err)
	if o.corrupt {
		content = append([]byte(nil), content...)
		content[len(content)/2] ^= 0xff
	}
	if o.bigger > 0 {
		content = append(append([]byte(nil), content...), make([]byte, o.bigger)...)
	}
	assets := map[string][]byte{name: content, release.SumsAsset: sums, release.SigAsset: release.SignSums(key, sums)}
	if !o.noManifest {
		for n, data := range manifest {
			assets[n] = data
		}
	}
	e.gh.debs[v] = content
	e.gh.fake.AddRelease(repo, githubfake.ReleaseSpec{Tag: "release-" + v, Assets: assets})
	if o.misannounce {
		e.gh.fake.Misannounce(repo, "release-"+v, name, m.Assets[0].Size)
	}
}
