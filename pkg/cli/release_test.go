package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
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
	require.Equal(t, ExitOK, f.run("", "config", "set", "github-api-url", gh.APIURL()).code)
	require.Equal(t, ExitOK, f.run("", "config", "set", "env", "staging").code)
	require.NoError(t, f.st.PutPin(f.ctx(), &storage.Pin{Version: "2026.01.01-1"}))

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

	gh.FailNext(1, http.StatusBadGateway)
	r = f.run("", "release", "list")
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
	req := &storage.UpdateRequest{Version: "2026.01.02-1", Servers: []string{"a", "b"}, Reason: storage.ReasonUpdate, StartedAt: started}
	f.putRequest(req)
	req.FinishedAt = started.Add(90 * time.Second)
	req.Stop, req.StopReason = true, "b aborted: boom"
	f.finishRequest(req, &storage.HistoryRecord{Version: req.Version, Reason: req.Reason, Servers: req.Servers, Result: storage.ResultAborted, StopReason: req.StopReason, StartedAt: started, FinishedAt: req.FinishedAt})

	r = f.run("", "history")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `2026-01-02T03:00:00Z\s+2026.01.02-1\s+update\s+aborted\s+1m30s\s+2\s+b aborted: boom`, r.stdout)
	r = f.run("", "-o", "json", "history", "--limit", "1")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var hist []storage.HistoryRecord
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &hist))
	require.Len(t, hist, 1)
	require.Equal(t, ExitUsage, f.run("", "history", "--limit", "-1").code)
}

// signedRelease adds a test- release with the three assets; the package is
// a few bytes, publish never installs it.
func signedRelease(gh *githubfake.Server, tag, version, commit string, priv minisign.PrivateKey, drop string) {
	deb := []byte("package " + version)
	sums, _ := release.MakeSums(map[string]io.Reader{release.DebAsset(version): bytes.NewReader(deb)})
	assets := map[string][]byte{release.DebAsset(version): deb, release.SumsAsset: sums, release.SigAsset: release.SignSums(priv, sums)}
	delete(assets, drop)
	gh.AddRelease("o/r", githubfake.ReleaseSpec{Tag: tag, Commitish: commit, Prerelease: true, Assets: assets})
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
	signedRelease(gh, "test-"+v, v, "abc123", priv, "")
	signedRelease(gh, "test-"+v2, v2, "def456", priv, release.SigAsset)
	signedRelease(gh, "test-"+v3, v3, "fed789", otherPriv, "")
	for _, kv := range [][2]string{{"github-repo", "o/r"}, {"github-api-url", gh.APIURL()}, {"signing-keys", pub.String()}} {
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

	r := f.run("", "release", "publish", v, "--production")
	require.Equal(t, ExitNotFound, r.code, "production before staging")
	require.Contains(t, r.stderr, "--staging first")

	r = f.run("", "release", "publish", v, "--staging")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "created release-"+v)
	rel := byTag("release-" + v)
	require.NotNil(t, rel)
	require.True(t, rel.Prerelease)
	require.Equal(t, "abc123", rel.Commitish, "the same commit as the test release")
	require.ElementsMatch(t, release.Assets(v), rel.Assets)
	testDeb, _ := gh.Asset("o/r", "test-"+v, release.DebAsset(v))
	relDeb, _ := gh.Asset("o/r", "release-"+v, release.DebAsset(v))
	require.Equal(t, testDeb, relDeb)

	r = f.run("", "release", "publish", v, "--staging")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "exists already")

	r = f.run("", "release", "publish", v, "--production")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.False(t, byTag("release-"+v).Prerelease)

	r = f.run("", "release", "publish", v2, "--staging")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "lacks the asset SHA256SUMS.minisig")
	require.Nil(t, byTag("release-"+v2), "nothing was created")

	r = f.run("", "release", "publish", v3, "--staging")
	require.Equal(t, ExitFailure, r.code)
	require.Contains(t, r.stderr, "signature not valid")
	require.Nil(t, byTag("release-"+v3))

	require.Equal(t, ExitUsage, f.run("", "release", "publish", v).code)
	require.Equal(t, ExitUsage, f.run("", "release", "publish", v, "--staging", "--production").code)
	require.Equal(t, ExitUsage, f.run("", "release", "publish", "tomorrow", "--staging").code)
}

func TestReleasePin(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("", "release", "pin", "2026.01.02-1", "--allow-downgrade")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "downgrade allowed")
	p, err := f.st.GetPin(f.ctx())
	require.NoError(t, err)
	require.Equal(t, "2026.01.02-1", p.Version)
	require.True(t, p.AllowDowngrade)
	require.Contains(t, f.run("", "status").stdout, "Pin:            2026.01.02-1")

	require.Equal(t, ExitUsage, f.run("", "release", "pin", "latest").code)
	require.Equal(t, ExitOK, f.run("", "release", "unpin").code)
	_, err = f.st.GetPin(f.ctx())
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.Equal(t, ExitNotFound, f.run("", "release", "unpin").code)
}
