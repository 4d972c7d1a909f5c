package dctest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// refused waits until the rollout to version stops, checks that the stop
// says why (want), and that every server still runs from.
func (d *dc) refused(version, from, want string) {
	d.t.Helper()
	st := d.waitState(version, "stopped", "aborted")
	var msgs []string
	for _, s := range st.Servers {
		if s.Status != nil {
			msgs = append(msgs, s.Status.Message)
		}
	}
	require.Contains(d.t, strings.Join(msgs, "\n"), want, "the abort says why")
	d.requireInstalled(from, three...)
}

// TestTrustRootIsLocal: whoever can write etcd tries to make the fleet
// trust their key, or none: the keys are not in etcd any more, and a
// release signed by their key is installed nowhere.
func TestTrustRootIsLocal(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	evilPub, _, err := minisign.GenerateKey(nil)
	require.NoError(t, err)

	for _, kv := range [][2]string{{"signing-keys", evilPub.String()}, {"allow-unsigned", "true"}} {
		_, stderr, code := d.Ferry(d.ctx, "config", "set", kv[0], kv[1])
		require.Equal(t, 2, code, "ferry config set %s", kv[0])
		require.Contains(t, stderr, "no longer lives in etcd")
	}
	// Written straight into etcd, as an etcd writer can, they change nothing.
	for k, v := range map[string]string{"signing-keys": evilPub.String(), "allow-unsigned": "true"} {
		_, err := d.Store.Client().Put(d.ctx, d.Prefix+"config/"+k, v)
		require.NoError(t, err)
	}
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2), WrongKey: true}))
	d.refused(N1, N, "signature not valid")

	// Secrets are masked.
	out := d.ferry("config", "get", "notify-url")
	require.Contains(t, out, "********")
	require.NotContains(t, out, d.Notes.URL())
}

// TestDowngradeBeyondPreviousRefused: the fleet was installed at N1 and
// never ran anything else, so N is older than any version it ran before.
// An etcd writer asks for N all the same; every server refuses, and the
// CLI refuses the pin that would ask for it.
func TestDowngradeBeyondPreviousRefused(t *testing.T) {
	d := start(t)
	d.bootstrapAt(N1, "staging", three...)
	require.NoError(t, d.Publish(N, harness.PublishOptions{CreatedAt: day(3)}))

	_, stderr, code := d.Ferry(d.ctx, "release", "pin", N, "--allow-downgrade")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "only one step back")

	req := &fleet.UpdateRequest{Version: N, Servers: three, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	data, err := json.Marshal(req)
	require.NoError(t, err)
	_, err = d.Store.Client().Put(d.ctx, d.Prefix+"status/current", string(data))
	require.NoError(t, err)
	d.refused(N, N1, "only one step back")
}

// TestTestBuildCannotBePromotedWithoutKey: a GitHub writer copies a
// nightly test build under a release- tag as a full release; a prod fleet
// refuses it. The release key promotes it, and then the fleet takes it.
func TestTestBuildCannotBePromotedWithoutKey(t *testing.T) {
	d := start(t)
	d.bootstrap("prod", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Tag: release.PrefixTest + N1, Prerelease: true, CreatedAt: day(2)}))

	// The copy keeps the test manifest, under the production name.
	assets := map[string][]byte{}
	testManifest := trust.ManifestAsset(trust.ChannelTest)
	for _, name := range append(release.Assets(N1), testManifest, testManifest+".minisig") {
		data, ok := d.GitHub.Asset(harness.Repo, release.PrefixTest+N1, name)
		require.True(t, ok, name)
		name = strings.Replace(name, testManifest, trust.ManifestAsset(trust.ChannelProduction), 1)
		assets[name] = data
	}
	d.GitHub.AddRelease(harness.Repo, githubfake.ReleaseSpec{Tag: release.PrefixRelease + N1, CreatedAt: day(2), Assets: assets})
	d.refused(N1, N, "it is for channel test")

	d.GitHub.DeleteRelease(harness.Repo, release.PrefixRelease+N1)
	d.ferry("release", "publish", N1, "--staging", "--key", d.KeyFile())
	d.ferry("release", "publish", N1, "--production", "--key", d.KeyFile())
	d.ferry("recover", "--yes")
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)
}

// TestOversizedAssetRefused: the package served is 64 MiB larger than the
// signed one, while GitHub announces the signed size. The download stops
// at the signed size and nothing is installed.
func TestOversizedAssetRefused(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	const extra = 64 << 20
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2), Bigger: extra}))
	d.refused(N1, N, "larger than its signed size")
	data, _ := d.GitHub.Asset(harness.Repo, release.PrefixRelease+N1, release.DebAsset(N1))
	signed := int64(len(data) - extra)
	served := d.GitHub.Counters().BytesServed[release.DebAsset(N1)]
	require.Less(t, served, 3*(signed+8<<20), "the workers read far past the signed size")
}

// TestExpiredManifestRefused: a release whose manifest expired (a replayed
// old release, or a frozen mirror) is refused.
func TestExpiredManifestRefused(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2), SignedAt: time.Now().Add(-100 * 24 * time.Hour)}))
	d.refused(N1, N, "expired at")
}

// TestEtcdClientCertRequired: etcd serves https and requires client
// certificates. The fleet, configured with one, rolls out as usual; an
// admin without one, or without the CA, is told exactly that.
func TestEtcdClientCertRequired(t *testing.T) {
	d := startWith(t, within(4*time.Minute), harness.Options{ClientCerts: true})
	d.bootstrap("staging", three...)
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	d.waitCompleted(N1)
	d.requireInstalled(N1, three...)

	for _, c := range []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"no client certificate", map[string]any{"endpoints": d.Endpoints, "tls-ca-file": d.TLS.CA}, "etcd requires a client certificate"},
		{"no CA", map[string]any{"endpoints": d.Endpoints, "tls-cert-file": d.TLS.ClientCert, "tls-key-file": d.TLS.ClientKey}, "signed by an unknown authority"},
		{"plain http", map[string]any{"endpoints": []string{strings.Replace(d.Endpoints[0], "https://", "http://", 1)}}, "etcd speaks TLS there"},
	} {
		path := filepath.Join(d.Dir, strings.ReplaceAll(c.name, " ", "-")+".yml")
		data, err := yaml.Marshal(c.cfg)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, data, 0o644))
		var stderr bytes.Buffer
		cmd := exec.CommandContext(d.ctx, build.Ferry, "--config", path, "--command-timeout", "2s", "status")
		cmd.Stderr = &stderr
		err = cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, c.name)
		require.Equal(t, 4, ee.ExitCode(), "%s: %s", c.name, stderr.String())
		require.Contains(t, stderr.String(), c.want, c.name)
	}
}
