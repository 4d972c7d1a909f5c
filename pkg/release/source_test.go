package release

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/stretchr/testify/require"
)

const testRepo = "ferry-cd/ferry"

func newSource(t *testing.T, fake *githubfake.Server) *Source {
	t.Helper()
	src, err := NewSource(Options{APIURL: fake.APIURL(), Repo: testRepo})
	require.NoError(t, err)
	return src
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func day(n int) time.Time { return time.Date(2026, 1, n, 0, 0, 0, 0, time.UTC) }

func TestEnvSelection(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.01-1", CreatedAt: day(1)})
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", Prerelease: true, CreatedAt: day(2)})
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "test-2026.01.03-1", Prerelease: true, CreatedAt: day(3)})
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.05-1", Draft: true, CreatedAt: day(5)})
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "v9.9.9", CreatedAt: day(6)})
	src := newSource(t, fake)
	ctx := testCtx(t)

	for env, want := range map[fleet.Env]string{
		fleet.EnvProd:    "2026.01.01-1",
		fleet.EnvStaging: "2026.01.02-1",
		fleet.EnvDev:     "2026.01.03-1",
	} {
		r, err := src.Latest(ctx, env, nil)
		require.NoError(t, err, env)
		require.Equal(t, want, r.Version.String(), env)
	}
	_, err := src.Latest(ctx, fleet.EnvNone, nil)
	require.ErrorIs(t, err, ErrNoRelease)

	r, err := src.ByTag(ctx, "release-2026.01.02-1")
	require.NoError(t, err)
	require.True(t, r.Prerelease)
	_, err = src.ByTag(ctx, "release-2030.01.01-1")
	require.ErrorIs(t, err, ErrNotFound)
}

func TestNoEligibleReleaseIsAnAnswer(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "test-2026.01.03-1", Prerelease: true})
	_, err := newSource(t, fake).Latest(testCtx(t), fleet.EnvProd, nil)
	require.ErrorIs(t, err, ErrNoRelease)
}

func TestNewestEligibleOnSecondPage(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.01-1", CreatedAt: day(1)})
	// 150 newer test- releases push it to page 2.
	for i := 1; i <= 150; i++ {
		fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: fmt.Sprintf("test-2026.01.02-%d", i), CreatedAt: day(2).Add(time.Duration(i) * time.Minute)})
	}
	src := newSource(t, fake)
	r, err := src.Latest(testCtx(t), fleet.EnvProd, nil)
	require.NoError(t, err)
	require.Equal(t, "2026.01.01-1", r.Version.String())
	require.Equal(t, 2, fake.Counters().Counted, "two pages of 100")

	r, err = src.Latest(testCtx(t), fleet.EnvDev, nil)
	require.NoError(t, err)
	require.Equal(t, "2026.01.02-150", r.Version.String())
}

func TestIdlePollsCostOneCountedRequest(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.01-1"})
	var statuses []int
	src, err := NewSource(Options{APIURL: fake.APIURL(), Repo: testRepo, ObserveStatus: func(c int) { statuses = append(statuses, c) }})
	require.NoError(t, err)
	ctx := testCtx(t)

	for i := 0; i < 100; i++ {
		r, err := src.Latest(ctx, fleet.EnvProd, nil)
		require.NoError(t, err)
		require.Equal(t, "2026.01.01-1", r.Version.String())
	}
	c := fake.Counters()
	require.Equal(t, 1, c.Counted)
	require.Equal(t, 99, c.NotModified)
	require.Len(t, statuses, 100)
	require.Equal(t, http.StatusOK, statuses[0])
	require.Equal(t, http.StatusNotModified, statuses[99])

	// A new release changes the answer: one more counted request, and the
	// new release is seen.
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1"})
	r, err := src.Latest(ctx, fleet.EnvProd, nil)
	require.NoError(t, err)
	require.Equal(t, "2026.01.02-1", r.Version.String())
	require.Equal(t, 2, fake.Counters().Counted)
}

func TestFailuresAreErrorsNotNoRelease(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.01-1"})
	src := newSource(t, fake)
	ctx := testCtx(t)
	now := time.Now()

	fake.FailNext(1, http.StatusInternalServerError)
	_, err := src.Latest(ctx, fleet.EnvProd, nil)
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrNoRelease))
	_, limited := retry.After(err, now)
	require.False(t, limited)

	fake.RateLimitSecondary(1, http.StatusTooManyRequests, 3*time.Second)
	_, err = src.Latest(ctx, fleet.EnvProd, nil)
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrNoRelease))
	wait, limited := retry.After(err, now)
	require.True(t, limited)
	require.Equal(t, 3*time.Second, wait)

	fake.RateLimitPrimary(1, http.StatusForbidden, 2*time.Second)
	_, err = src.Latest(ctx, fleet.EnvProd, nil)
	require.Error(t, err)
	wait, limited = retry.After(err, time.Now())
	require.True(t, limited)
	require.LessOrEqual(t, wait, 3*time.Second)
	require.GreaterOrEqual(t, retry.Delay(retry.Policy{Base: 10 * time.Millisecond, Max: time.Second}.BackOff(), err, time.Now()), time.Second)

	// Once the reset has passed, the source works again.
	require.Eventually(t, func() bool {
		r, err := src.Latest(ctx, fleet.EnvProd, nil)
		return err == nil && r.Version.String() == "2026.01.01-1"
	}, 10*time.Second, 200*time.Millisecond)
}

func TestToken(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.RequireToken("s3cret")
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.01-1"})
	ctx := testCtx(t)

	_, err := newSource(t, fake).Latest(ctx, fleet.EnvProd, nil)
	require.ErrorContains(t, err, "401")
	src, err := NewSource(Options{APIURL: fake.APIURL(), Repo: testRepo, Token: "s3cret"})
	require.NoError(t, err)
	_, err = src.Latest(ctx, fleet.EnvProd, nil)
	require.NoError(t, err)
}

func TestNewSourceRefusesBadOptions(t *testing.T) {
	t.Parallel()
	_, err := NewSource(Options{Repo: "nope"})
	require.ErrorContains(t, err, "owner/name")
	_, err = NewSource(Options{Repo: "a/b", APIURL: "ftp://x"})
	require.ErrorContains(t, err, "github-api-url")
	s, err := NewSource(Options{Repo: "a/b"})
	require.NoError(t, err)
	require.Equal(t, "https://uploads.github.com/", s.gh.UploadURL.String())
	s, err = NewSource(Options{Repo: "a/b", APIURL: "https://ghe.example/api/v3"})
	require.NoError(t, err)
	require.Equal(t, "https://ghe.example/api/v3/", s.gh.BaseURL.String())
	require.Equal(t, "https://ghe.example/api/uploads/", s.gh.UploadURL.String())
}
