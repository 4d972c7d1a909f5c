package worker

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

const repo = "ferry-cd/ferry"

// upgradeEnv is a server whose dpkg root holds ferry v1, a GitHub fake and
// a signing key that the fleet trusts.
type upgradeEnv struct {
	*testFleet
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
	// key signs the manifest instead of the release key.
	key *minisign.PrivateKey
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

func newUpgradeEnv(t testing.TB) *upgradeEnv {
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

	f.set(fleet.ConfigEnv, "prod", fleet.ConfigGitHubRepo, repo)
	f.useGitHub(fake.APIURL())
	return &upgradeEnv{
		testFleet: f,
		gh:        &ghEnv{fake: fake, debs: map[string][]byte{}, priv: priv, otherPriv: otherPriv},
		root:      root.Dir, admin: root.AdminDir(),
		ops: &Ops{
			DataDir: filepath.Join(f.dir, "data"), Installer: inst, Log: quiet, Metrics: NewMetrics(), TrustedKeys: keys,
			Channels: []string{trust.ChannelProduction}, Storage: f.st,
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
	if o.key != nil {
		key = *o.key
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

// requireRefused waits until boot-0 aborts, saying want, and checks that
// it still runs v1 and kept no download.
func (e *upgradeEnv) requireRefused(want string) {
	e.t.Helper()
	st := e.waitStatus("boot-0", cond(fleet.CondAborted))
	require.Contains(e.t, st.Message, want)
	v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
	require.NoError(e.t, err)
	require.Equal(e.t, v1, v, "nothing was installed")
	requireNoDownloads(e.t, e.ops.DataDir)
}

// requestResolved starts a rollout to v whose request carries the release
// as the updater resolves it.
func (e *upgradeEnv) requestResolved(v string, servers ...string) *fleet.UpdateRequest {
	e.t.Helper()
	src, err := release.NewSource(release.Options{APIURL: e.gh.fake.APIURL(), Repo: repo})
	require.NoError(e.t, err)
	ref, err := src.Resolve(e.ctx(), fleet.EnvProd, v)
	require.NoError(e.t, err)
	return e.requestWith(v, ref, servers...)
}

// requestWith starts a rollout to v whose request carries ref.
func (e *upgradeEnv) requestWith(v string, ref *fleet.ReleaseRef, servers ...string) *fleet.UpdateRequest {
	e.t.Helper()
	for _, s := range servers {
		_, err := e.st.JoinServer(e.ctx(), s, &fleet.ServerInfo{})
		require.NoError(e.t, err)
	}
	req := &fleet.UpdateRequest{Version: v, Servers: servers, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC(), Release: ref}
	e.leader(func(l *storage.Leader) error { return l.StartRequest(e.ctx(), req) })
	e.coordinate(req)
	return req
}

// TestSelfUpgradeFromResolvedRequest: with the release in the request, the
// worker makes no GitHub API request: it reads the manifest from the
// request and the package from its web download URL.
func TestSelfUpgradeFromResolvedRequest(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	e.publish(v2, publishOptions{})
	e.requestResolved(v2, "boot-0")
	e.gh.fake.ResetCounters()
	e.installsAndExits("boot-0", v1)

	v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
	require.NoError(t, err)
	require.Equal(t, v2, v)
	c := e.gh.fake.Counters()
	require.Zero(t, c.Counted, "no API request")
	require.Equal(t, 1, c.Web, "one web download: the package")
	require.Equal(t, 1, c.Downloads[release.DebAsset(v2)])
}

// TestSelfUpgradeRefusesTamperedRequest: whoever writes etcd can change the
// resolved release in the request, but not make the worker install what the
// release keys did not sign.
func TestSelfUpgradeRefusesTamperedRequest(t *testing.T) {
	t.Parallel()
	cases := map[string]func(e *upgradeEnv, ref *fleet.ReleaseRef){
		"manifest edited": func(e *upgradeEnv, ref *fleet.ReleaseRef) {
			edited := false
			for i, a := range ref.Assets {
				if a.Name == trust.ManifestAsset(trust.ChannelProduction) {
					ref.Assets[i].Data = bytes.Replace(a.Data, []byte(`"sha256": "`), []byte(`"sha256": "00`), 1)
					edited = !bytes.Equal(a.Data, ref.Assets[i].Data)
				}
			}
			require.True(e.t, edited, "the manifest is in the request")
		},
		"package URL pointed at another file": func(e *upgradeEnv, ref *fleet.ReleaseRef) {
			evil := debtest.Build(e.t, e.t.TempDir(), ferryPackage(v2))
			content, err := os.ReadFile(evil)
			require.NoError(e.t, err)
			e.gh.fake.AddRelease(repo, githubfake.ReleaseSpec{Tag: "evil", Assets: map[string][]byte{"evil.deb": append(content, 0)}})
			pointed := false
			for i, a := range ref.Assets {
				if a.Name == release.DebAsset(v2) {
					ref.Assets[i].URL = strings.Replace(a.URL, "/release-"+v2+"/"+a.Name, "/evil/evil.deb", 1)
					pointed = ref.Assets[i].URL != a.URL
				}
			}
			require.True(e.t, pointed, "the package URL is in the request")
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newUpgradeEnv(t)
			e.publish(v2, publishOptions{})
			src, err := release.NewSource(release.Options{APIURL: e.gh.fake.APIURL(), Repo: repo})
			require.NoError(t, err)
			ref, err := src.Resolve(e.ctx(), fleet.EnvProd, v2)
			require.NoError(t, err)
			tamper(e, ref)
			e.requestWith(v2, ref, "boot-0")
			e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
			e.requireRefused("self-upgrade to " + v2 + " failed")
		})
	}
}

// TestEtcdCannotWidenTheChannel: a server takes the channels its own
// config names. An etcd writer who sets env dev cannot make a production
// server install a test build, and a key trusted for the test channel
// alone (the nightly's) cannot sign a production manifest.
func TestEtcdCannotWidenTheChannel(t *testing.T) {
	t.Parallel()
	_, ciKey, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	ciPub := ciKey.Public().(minisign.PublicKey)
	cases := []struct {
		name     string
		channels []string
		opts     publishOptions
		want     string // "" installs
	}{
		{name: "test build, production server", channels: []string{trust.ChannelProduction}, opts: publishOptions{channel: trust.ChannelTest}, want: "no signed manifest for a channel this server takes ([production])"},
		{name: "staging build, production server", channels: []string{trust.ChannelProduction}, opts: publishOptions{channel: trust.ChannelStaging}, want: "no signed manifest for a channel this server takes ([production])"},
		{name: "production manifest signed by the test channel's key", channels: trust.Channels, opts: publishOptions{key: &ciKey}, want: "signature not valid"},
		{name: "test build, lab server", channels: trust.Channels, opts: publishOptions{channel: trust.ChannelTest, key: &ciKey}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newUpgradeEnv(t)
			e.ops.Channels = c.channels
			ciDir := filepath.Join(e.ops.TrustedKeys, trust.ChannelTest)
			require.NoError(t, os.Mkdir(ciDir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(ciDir, "nightly.pub"), []byte(ciPub.String()+"\n"), 0o644))
			e.set(fleet.ConfigEnv, "dev")
			e.publish(v2, c.opts)
			e.request(v2, "boot-0")
			if c.want == "" {
				e.installsAndExits("boot-0", v1)
				v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
				require.NoError(t, err)
				require.Equal(t, v2, v)
				return
			}
			e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
			e.requireRefused(c.want)
		})
	}
}

// TestStalledSelfUpgradeIsAbandoned: the package's server accepts the
// request and never answers. The worker shows it retrying after the idle
// timeout, and a stop of the rollout frees it at once, whatever the
// timeout: it reports that it stopped, and nothing is installed.
func TestStalledSelfUpgradeIsAbandoned(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		idle time.Duration
	}{{"the idle timeout shows it retrying", 300 * time.Millisecond}, {"a stop frees it", time.Hour}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			silent := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-silent:
				case <-r.Context().Done():
				}
			}))
			defer srv.Close()
			defer close(silent)

			e := newUpgradeEnv(t)
			e.ops.Download.IdleTimeout = c.idle
			e.publish(v2, publishOptions{})
			src, err := release.NewSource(release.Options{APIURL: e.gh.fake.APIURL(), Repo: repo})
			require.NoError(t, err)
			ref, err := src.Resolve(e.ctx(), fleet.EnvProd, v2)
			require.NoError(t, err)
			for i, a := range ref.Assets {
				if a.Name == release.DebAsset(v2) {
					ref.Assets[i].URL, ref.Assets[i].ID = srv.URL+"/"+a.Name, 0
				}
			}
			e.requestWith(v2, ref, "boot-0")
			e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
			if c.idle < time.Minute {
				st := e.waitStatus("boot-0", func(st *fleet.UpdateStatus) bool { return st.Phase == fleet.PhaseRetrying })
				require.Contains(t, st.Message, "no data for 300ms")
			} else {
				e.waitStatus("boot-0", func(st *fleet.UpdateStatus) bool { return st.Phase == fleet.PhaseUpgrading })
			}
			e.stop("stopped by the operator")
			e.requireRefused("stopped before this step: stopped by the operator")
		})
	}
}

// TestUnsignedSizeExtraDebRefused: every extra package a plan installs has
// its size in the artifact set, which the signed package carries. A set
// without one is refused; a server that sends more than it says is read no
// further than the size, and nothing is installed.
func TestUnsignedSizeExtraDebRefused(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	tools := debtest.Build(t, e.dir, debtest.Package{Name: "acme-tools", Version: "1.2.0"})
	toolsBytes, err := os.ReadFile(tools)
	require.NoError(t, err)
	deb0 := artifacts.Deb{Name: "acme-tools", Repository: "acme/tools", Release: "v1.2.0", Asset: "acme-tools_1.2.0_amd64.deb", Version: "1.2.0", SHA256: sha(toolsBytes)}
	plan := artifacts.Plan{Steps: []artifacts.Step{{Name: "debs", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Debs: &artifacts.DebsAction{}}}}}}
	unsized := &artifacts.Set{Debs: []artifacts.Deb{deb0}, Plan: plan}
	require.ErrorContains(t, unsized.Validate(), "size (bytes) is missing")

	// 64 MiB more than the set says, as an endless body would be.
	endless := append(append([]byte(nil), toolsBytes...), make([]byte, 64<<20)...)
	e.gh.fake.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v1.2.0", Assets: map[string][]byte{deb0.Asset: endless}})
	sized := deb0
	sized.Size = int64(len(toolsBytes))
	set := &artifacts.Set{Debs: []artifacts.Deb{sized}, Plan: plan}
	require.NoError(t, set.Validate())
	ops := *e.ops
	ops.Set, ops.Storage = set, e.st
	cfg, err := e.st.GetConfig(e.ctx())
	require.NoError(t, err)
	err = ops.RunAction(e.ctx(), RunContext{Config: cfg, Server: "boot-0", Version: v1, Step: 1, StepName: "debs", Log: quiet}, &plan.Steps[0].Actions[0])
	require.ErrorIs(t, err, release.ErrTooLarge)
	require.Less(t, ops.Metrics.downloaded.Load(), int64(len(toolsBytes))+(1<<20), "read no further than the size, give or take a buffer")
	v, _ := deb.InstalledVersion(e.ctx(), e.admin, "acme-tools")
	require.Empty(t, v, "nothing was installed")
	requireNoDownloads(t, ops.DataDir)
}

// TestKeyRotationWithoutLogin: a keys statement signed by the release key
// the servers trust brings in a new key through etcd; the fleet then
// installs a release signed by the new key alone, and a later statement
// signed by the new key retires the old one. A statement signed by a key
// the servers do not trust changes nothing, and a replayed old one undoes
// nothing.
func TestKeyRotationWithoutLogin(t *testing.T) {
	t.Parallel()
	newPub, newKey, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	statement := func(serial int64, signer minisign.PrivateKey, add []minisign.PublicKey, retire []minisign.PublicKey) *trust.Signed {
		s := &trust.Statement{Product: trust.Product, Kind: trust.KindKeys, Serial: serial, Created: time.Now().UTC()}
		for _, k := range add {
			s.Add = append(s.Add, k.String())
		}
		for _, k := range retire {
			s.Retire = append(s.Retire, trust.KeyID(k))
		}
		sd, err := s.Sign(signer)
		require.NoError(t, err)
		return sd
	}

	t.Run("signed by an untrusted key", func(t *testing.T) {
		t.Parallel()
		e := newUpgradeEnv(t)
		require.NoError(t, e.st.PutKeyStatement(e.ctx(), statement(1, newKey, []minisign.PublicKey{newPub}, nil)))
		e.publish(v2, publishOptions{key: &newKey})
		e.request(v2, "boot-0")
		e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
		e.requireRefused("signature not valid")
	})

	t.Run("signed by the trusted key", func(t *testing.T) {
		t.Parallel()
		e := newUpgradeEnv(t)
		oldPub := e.gh.priv.Public().(minisign.PublicKey)
		require.NoError(t, e.st.PutKeyStatement(e.ctx(), statement(1, e.gh.priv, []minisign.PublicKey{newPub}, nil)))
		e.publish(v2, publishOptions{key: &newKey})
		e.request(v2, "boot-0")
		e.installsAndExits("boot-0", v1)
		v, err := deb.InstalledVersion(e.ctx(), e.admin, "ferry")
		require.NoError(t, err)
		require.Equal(t, v2, v, "installed a release signed by the new key alone")
		ring, err := trust.LoadKeys(e.ops.TrustedKeys)
		require.NoError(t, err)
		require.ElementsMatch(t, []minisign.PublicKey{oldPub, newPub}, ring.Any)

		// The new key retires the old one (applied here as a worker does
		// before its next install); the old statement, replayed, brings
		// nothing back.
		applied, err := trust.ApplyKeys(e.ops.TrustedKeys, statement(2, newKey, nil, []minisign.PublicKey{oldPub}), time.Now())
		require.NoError(t, err)
		require.True(t, applied)
		applied, err = trust.ApplyKeys(e.ops.TrustedKeys, statement(1, e.gh.priv, []minisign.PublicKey{oldPub}, nil), time.Now())
		require.Error(t, err, "the retired key is trusted no more")
		require.False(t, applied)
		ring, err = trust.LoadKeys(e.ops.TrustedKeys)
		require.NoError(t, err)
		require.Equal(t, []minisign.PublicKey{newPub}, ring.Any)
	})
}

// TestWithdrawnReleaseRefused: a withdrawals statement signed by the
// release key names v2: the worker refuses it, and goes on refusing it
// when etcd loses the statement or is given an older one.
func TestWithdrawnReleaseRefused(t *testing.T) {
	t.Parallel()
	e := newUpgradeEnv(t)
	withdraw := func(serial int64, versions ...string) *trust.Signed {
		s := &trust.Statement{Product: trust.Product, Kind: trust.KindWithdrawals, Serial: serial, Created: time.Now().UTC(), Withdrawn: versions}
		sd, err := s.Sign(e.gh.priv)
		require.NoError(t, err)
		return sd
	}
	e.publish(v2, publishOptions{})
	old := withdraw(1, "2025.01.01-1")
	require.NoError(t, e.st.PutWithdrawals(e.ctx(), withdraw(2, "2025.01.01-1", v2)))
	e.request(v2, "boot-0")
	e.start("boot-0", v1, &artifacts.Plan{}, e.ops)
	e.requireRefused(v2 + " is withdrawn by a signed withdrawals statement")

	// etcd is given the older statement back, and a new rollout asks for
	// v2 again: the statement the worker kept on disk still holds.
	require.NoError(t, e.st.PutWithdrawals(e.ctx(), old))
	e.request(v2, "boot-0")
	e.requireRefused(v2 + " is withdrawn by a signed withdrawals statement")
}
