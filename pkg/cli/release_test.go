package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

func TestReleaseList(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	gh := githubfake.New()
	defer gh.Close()
	day := func(n int) time.Time { return time.Date(2026, 1, n, 0, 0, 0, 0, time.UTC) }
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: "release-2026.01.01-1", CreatedAt: day(1), Assets: map[string][]byte{"a": nil, "b": nil}})
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", Prerelease: true, CreatedAt: day(2)})
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: "test-2026.01.03-1", Prerelease: true, CreatedAt: day(3)})
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: "unrelated", CreatedAt: day(4)})

	r := f.run("", "release", "list")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "github-repo is not set")

	require.Equal(t, ExitOK, f.run("", "config", "set", "github-repo", "o/r").code)
	f.githubAPI = gh.APIURL()
	require.Equal(t, ExitOK, f.run("", "config", "set", "env", "staging").code)
	require.NoError(t, f.st.PutPin(f.ctx(), &fleet.Pin{Version: "2026.01.01-1"}))

	r = f.run("", "-o", "json", "release", "list")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var views []releaseView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &views))
	require.Len(t, views, 3, "tags that are not ferry's are left out")
	require.Equal(t, "test-2026.01.03-1", views[0].Tag)
	require.Equal(t, []string{"dev"}, views[0].Envs)
	require.False(t, views[0].Eligible)
	require.Equal(t, "pre-release", views[1].Kind)
	require.Equal(t, []string{"staging"}, views[1].Envs)
	require.True(t, views[1].Eligible)
	require.Equal(t, []string{"staging", "prod"}, views[2].Envs)
	require.True(t, views[2].Pinned)
	require.Equal(t, 2, views[2].AssetCount)

	r = f.run("", "release", "list")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `\*\s+release-2026.01.01-1\s+release\s+staging,prod\s+2026-01-01 00:00\s+2\s+pinned`, r.stdout)

	// A blip is retried, and shown; an outage fails within the timeout.
	gh.FailNext(1, http.StatusBadGateway)
	r = f.run("", "release", "list")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stderr, "502 Bad Gateway")
	require.Contains(t, r.stderr, "retrying in")
	gh.FailNext(1_000_000, http.StatusBadGateway)
	r = f.run("", "--command-timeout", "1s", "release", "list")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "cannot list releases")
	require.Contains(t, r.stderr, "502")
}

func TestHistory(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "history")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "STARTED  VERSION  REASON  RESULT  DURATION  SERVERS  STOP REASON\n", r.stdout)

	started := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	req := &fleet.UpdateRequest{Version: "2026.01.02-1", Servers: []string{"a", "b"}, Reason: fleet.ReasonUpdate, StartedAt: started}
	f.putRequest(req)
	req.FinishedAt = started.Add(90 * time.Second)
	req.Stop, req.StopReason = true, "b aborted: boom"
	f.finishRequest(req, &fleet.HistoryRecord{Version: req.Version, Reason: req.Reason, Servers: req.Servers, Result: fleet.ResultAborted, StopReason: req.StopReason, StartedAt: started, FinishedAt: req.FinishedAt})

	r = f.run("", "history")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `2026-01-02T03:00:00Z\s+2026.01.02-1\s+update\s+aborted\s+1m30s\s+2\s+b aborted: boom`, r.stdout)
	r = f.run("", "-o", "json", "history", "--limit", "1")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var hist []fleet.HistoryRecord
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &hist))
	require.Len(t, hist, 1)
	require.Equal(t, ExitUsage, f.run("", "history", "--limit", "-1").code)
}

// signedRelease adds a release of tag with a real package, SHA256SUMS, its
// signature and the manifest of its channel, all signed with priv, less the
// asset drop.
func signedRelease(t *testing.T, gh *githubfake.Server, tag, version, commit string, priv minisign.PrivateKey, drop string) {
	t.Helper()
	debPath := debtest.Build(t, t.TempDir(), debtest.Package{Name: "ferry", Version: version})
	channel := trust.ChannelTest
	if strings.HasPrefix(tag, release.PrefixRelease) {
		channel = trust.ChannelStaging
	}
	assets, err := release.SignedAssets(version, channel, debPath, priv, time.Now(), 0)
	require.NoError(t, err)
	delete(assets, drop)
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: tag, Commitish: commit, Prerelease: true, Assets: assets})
}

// trustFiles writes pubs as a trusted-keys directory and priv as a key
// file, and returns the flags that point the CLI at them.
func trustFiles(t *testing.T, priv *minisign.PrivateKey, pubs ...minisign.PublicKey) []string {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "trusted-keys")
	require.NoError(t, os.Mkdir(keys, 0o755))
	for i, p := range pubs {
		require.NoError(t, os.WriteFile(filepath.Join(keys, fmt.Sprintf("k%d.pub", i)), []byte(p.String()+"\n"), 0o644))
	}
	flags := []string{"--trusted-keys", keys}
	if priv != nil {
		text, err := priv.MarshalText()
		require.NoError(t, err)
		keyFile := filepath.Join(dir, "release.key")
		require.NoError(t, os.WriteFile(keyFile, text, 0o600))
		flags = append(flags, "--key", keyFile)
	}
	return flags
}

func TestReleasePublish(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	gh := githubfake.New()
	defer gh.Close()
	pub, priv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	_, otherPriv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	const v, v2, v3 = "2026.01.02-1", "2026.01.03-1", "2026.01.04-1"
	signedRelease(t, gh, "test-"+v, v, "abc123", priv, "")
	signedRelease(t, gh, "test-"+v2, v2, "def456", priv, release.SigAsset)
	signedRelease(t, gh, "test-"+v3, v3, "fed789", otherPriv, "")
	f.githubAPI = gh.APIURL()
	for _, kv := range [][2]string{{"github-repo", "o/r"}} {
		require.Equal(t, ExitOK, f.run("", "config", "set", kv[0], kv[1]).code)
	}
	byTag := func(tag string) *githubfake.Release {
		for _, r := range gh.Releases("o/r") {
			if r.Tag == tag {
				return &r
			}
		}
		return nil
	}
	withKey := trustFiles(t, &priv, pub)
	publish := func(args ...string) result {
		t.Helper()
		return f.run("", append(append([]string{"release", "publish"}, args...), withKey...)...)
	}

	r := publish(v, "--production")
	require.Equal(t, ExitNotFound, r.code, "production before staging")
	require.Contains(t, r.stderr, "--staging first")

	// A repository writer without the release key cannot promote.
	noKey := f.run("", append([]string{"release", "publish", v, "--staging"}, trustFiles(t, nil, pub)...)...)
	require.Equal(t, ExitUsage, noKey.code)
	require.Contains(t, noKey.stderr, "no release key")
	otherKey := f.run("", append([]string{"release", "publish", v, "--staging"}, trustFiles(t, &otherPriv, pub)...)...)
	require.Equal(t, ExitOK, otherKey.code, "publish signs with the key it is given...")
	staging := byTag("release-" + v)
	require.NotNil(t, staging)
	// ...but a server that trusts only pub refuses that manifest.
	src, err := release.NewSource(release.Options{APIURL: gh.APIURL(), Repo: "o/r"})
	require.NoError(t, err)
	rel, err := src.ByTag(f.ctx(), "release-"+v)
	require.NoError(t, err)
	_, err = src.Manifest(f.ctx(), rel, v, release.Trust{Keys: trust.Keys(pub), Channels: release.Channels(fleet.EnvStaging)})
	require.ErrorContains(t, err, "signature not valid")
	r = publish(v, "--production")
	require.Equal(t, ExitFailure, r.code, "production checks the staging manifest")
	require.Contains(t, r.stderr, "signature not valid")
	require.True(t, byTag("release-"+v).Prerelease)
	gh.DeleteRelease("o/r", "release-"+v)

	r = publish(v, "--staging")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "created release-"+v)
	staging = byTag("release-" + v)
	require.NotNil(t, staging)
	require.True(t, staging.Prerelease)
	require.Equal(t, "abc123", staging.Commitish, "the same commit as the test release")
	require.ElementsMatch(t, append(release.Assets(v), "manifest-staging.json", "manifest-staging.json.minisig"), staging.Assets)
	testDeb, _ := gh.Asset("o/r", "test-"+v, release.DebAsset(v))
	relDeb, _ := gh.Asset("o/r", "release-"+v, release.DebAsset(v))
	require.Equal(t, testDeb, relDeb)
	rel, err = src.ByTag(f.ctx(), "release-"+v)
	require.NoError(t, err)
	m, err := src.Manifest(f.ctx(), rel, v, release.Trust{Keys: trust.Keys(pub), Channels: release.Channels(fleet.EnvStaging)})
	require.NoError(t, err)
	require.Equal(t, trust.ChannelStaging, m.Channel)

	r = publish(v, "--staging")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "exists already")

	r = publish(v, "--production")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.False(t, byTag("release-"+v).Prerelease)
	rel, err = src.ByTag(f.ctx(), "release-"+v)
	require.NoError(t, err)
	m, err = src.Manifest(f.ctx(), rel, v, release.Trust{Keys: trust.Keys(pub), Channels: release.Channels(fleet.EnvProd)})
	require.NoError(t, err)
	require.Equal(t, trust.ChannelProduction, m.Channel)

	r = publish(v2, "--staging")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "lacks the asset SHA256SUMS.minisig")
	require.Nil(t, byTag("release-"+v2), "nothing was created")

	r = publish(v3, "--staging")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "signature not valid")
	require.Nil(t, byTag("release-"+v3))

	require.Equal(t, ExitUsage, publish(v).code)
	require.Equal(t, ExitUsage, publish(v, "--staging", "--production").code)
	require.Equal(t, ExitUsage, publish("tomorrow", "--staging").code)
}

func TestReleasePin(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "release", "pin", "2026.01.02-1", "--allow-downgrade")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "downgrade allowed")
	p, err := fleettest.GetPin(f.ctx(), f.st)
	require.NoError(t, err)
	require.Equal(t, "2026.01.02-1", p.Version)
	require.True(t, p.AllowDowngrade)
	require.Contains(t, f.run("", "status").stdout, "Pin:            2026.01.02-1")

	require.Equal(t, ExitUsage, f.run("", "release", "pin", "latest").code)

	// The fleet ran 01-1, then 02-1, and now runs 03-1: one step back is
	// 02-1; 01-1 is refused, as every server would refuse it.
	for i, v := range []string{"2026.01.01-1", "2026.01.02-1", "2026.01.03-1"} {
		started := time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC)
		req := &fleet.UpdateRequest{Version: v, Servers: []string{"a"}, Reason: fleet.ReasonUpdate, StartedAt: started, FinishedAt: started.Add(time.Minute)}
		f.putRequest(&fleet.UpdateRequest{Version: v, Servers: []string{"a"}, StartedAt: started})
		f.finishRequest(req, fleet.NewHistoryRecord(req, nil, nil, fleet.ResultCompleted, req.FinishedAt))
	}
	r = f.run("", "release", "pin", "2026.01.01-1", "--allow-downgrade")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "only one step back")
	require.Contains(t, r.stderr, "not the version it ran before (2026.01.02-1)")
	require.Equal(t, ExitOK, f.run("", "release", "pin", "2026.01.02-1", "--allow-downgrade").code)
	require.Equal(t, ExitOK, f.run("", "release", "pin", "2026.01.01-1").code, "a pin that allows no downgrade holds the fleet where it is")
	require.Equal(t, ExitOK, f.run("", "release", "unpin").code)
	_, err = fleettest.GetPin(f.ctx(), f.st)
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.Equal(t, ExitNotFound, f.run("", "release", "unpin").code)
}

// TestPinDuringRollout: a pin set while a rollout to another version runs
// asks what to do with it: --stop-running has the updater stop it,
// --let-running lets it finish, and no answer changes nothing.
func TestPinDuringRollout(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	const pinned, running = "2026.01.02-1", "2026.01.03-1"
	req := &fleet.UpdateRequest{Version: running, Servers: []string{"a"}, Reason: fleet.ReasonUpdate, StartedAt: time.Now().Add(-time.Minute).UTC()}
	f.putRequest(req)

	r := f.run("", "release", "pin", pinned)
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stdout, "A rollout to "+running+" is running")
	require.Contains(t, r.stderr, "--stop-running")
	require.Contains(t, r.stderr, "--let-running")
	require.Contains(t, r.stderr, "nothing was changed")
	_, err := fleettest.GetPin(f.ctx(), f.st)
	require.ErrorIs(t, err, storage.ErrNotFound)

	r = f.run("n\n", "release", "pin", pinned)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "the rollout to "+running+" goes on")
	p, err := fleettest.GetPin(f.ctx(), f.st)
	require.NoError(t, err)
	require.False(t, p.StopRunning)

	r = f.run("", "release", "pin", pinned, "--stop-running")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "the updater stops the rollout to "+running+" at its next safe point; then `ferry recover` rolls out "+pinned)
	p, err = fleettest.GetPin(f.ctx(), f.st)
	require.NoError(t, err)
	require.True(t, p.StopRunning)
	require.Contains(t, p.By, "ferry release pin, ")

	r = f.run("", "release", "pin", pinned, "--let-running")
	require.Equal(t, ExitOK, r.code, r.stderr)
	p, err = fleettest.GetPin(f.ctx(), f.st)
	require.NoError(t, err)
	require.False(t, p.StopRunning)

	// A rollout to the pinned version itself, or none, asks nothing.
	r = f.run("", "release", "pin", running)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.NotContains(t, r.stdout, "goes on")
}

// TestReleaseCheckNow: check-now writes the trigger, waits for the check
// that answers it (not an older one), and prints what it found; with
// nobody answering, it says so within --wait.
func TestReleaseCheckNow(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "release", "check-now", "--wait", "300ms")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "no updater leads")

	// A stand-in leader answers each trigger once; an old answer is there
	// already and must not count.
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error {
		return l.PutCheckInfo(f.ctx(), &fleet.CheckInfo{At: time.Now().UTC(), Result: "found", Version: "2026.01.01-1", Leader: "old", Trigger: 1})
	})
	ctx, cancel := context.WithCancel(f.ctx())
	defer cancel()
	l := fleettest.StandIn(t, f.st)
	go func() {
		for ctx.Err() == nil {
			snap, err := f.st.Snapshot(ctx)
			if err != nil {
				return
			}
			if snap.Check != nil && snap.TriggerRev > snap.Check.Trigger {
				l.PutCheckInfo(ctx, &fleet.CheckInfo{At: time.Now().UTC(), Result: "found", Version: "2026.01.03-1", Leader: "boot-1", Trigger: snap.TriggerRev})
			}
			f.st.WaitChange(ctx, snap.Revision)
		}
	}()
	r = f.run("", "release", "check-now")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `^boot-1 checked at \S+: the newest release the fleet may take is 2026.01.03-1\n$`, r.stdout)
}
