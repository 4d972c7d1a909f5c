package cli

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/githubfake"
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
