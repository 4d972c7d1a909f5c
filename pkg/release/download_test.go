package release

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/stretchr/testify/require"
)

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fastRetry() DownloadOptions {
	return DownloadOptions{RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}
}

// TestDownloadResumesWithRange: broken connections resume where they
// broke. Without a token the asset is read from its web download URL, which
// costs no API request; with one (a private repository), through the API
// once, whose short-lived download URL is reused across the retries.
func TestDownloadResumesWithRange(t *testing.T) {
	t.Parallel()
	for _, token := range []string{"", "s3cret"} {
		t.Run("token="+strconv.FormatBool(token != ""), func(t *testing.T) {
			t.Parallel()
			fake := githubfake.New()
			defer fake.Close()
			content := randomBytes(t, 3<<20)
			fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", Assets: map[string][]byte{"big.deb": content}})
			// The first two connections break part way.
			fake.CutDownload("big.deb", 1<<20)
			fake.CutDownload("big.deb", 1<<20)
			if token != "" {
				fake.RequireToken(token)
			}
			src, err := NewSource(Options{APIURL: fake.APIURL(), Repo: testRepo, Token: token})
			require.NoError(t, err)
			ctx := testCtx(t)
			rel, err := src.ByTag(ctx, "release-2026.01.02-1")
			require.NoError(t, err)
			a, ok := rel.Asset("big.deb")
			require.True(t, ok)
			fake.ResetCounters()

			dir := t.TempDir()
			path, err := src.DownloadFile(ctx, a, dir, sumOf(content), fastRetry())
			require.NoError(t, err)
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.True(t, bytes.Equal(content, got))

			c := fake.Counters()
			require.Equal(t, 3, c.Downloads["big.deb"])
			require.Equal(t, 2, c.RangeRequests["big.deb"], "the retries resumed")
			require.Equal(t, int64(len(content)), c.BytesServed["big.deb"], "no byte was sent twice")
			if token == "" {
				require.Equal(t, 0, c.Counted, "no API request: the web download URL")
				require.Equal(t, 3, c.Web, "each connection starts at the web download URL")
			} else {
				require.Equal(t, 1, c.Counted, "one API call for the download URL, reused across retries")
				require.Equal(t, 0, c.Web, "a private repository's web URL does not take the token")
			}
			entries, _ := os.ReadDir(dir)
			require.Len(t, entries, 1, "no temporary file left")
		})
	}
}

func TestDownloadChecksumMismatchLeavesNothing(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	content := randomBytes(t, 100_000)
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", Assets: map[string][]byte{"x.deb": content}})
	src := newSource(t, fake)
	ctx := testCtx(t)
	rel, err := src.ByTag(ctx, "release-2026.01.02-1")
	require.NoError(t, err)
	a, _ := rel.Asset("x.deb")

	dir := t.TempDir()
	_, err = src.DownloadFile(ctx, a, dir, sumOf([]byte("something else")), fastRetry())
	require.ErrorIs(t, err, ErrChecksum)
	entries, _ := os.ReadDir(dir)
	require.Empty(t, entries)
	_, err = os.Stat(filepath.Join(dir, "x.deb"))
	require.True(t, os.IsNotExist(err))
}

func TestDownloadGivesUpWithoutProgress(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", Assets: map[string][]byte{"x.deb": []byte("data")}})
	src := newSource(t, fake)
	ctx := testCtx(t)
	rel, err := src.ByTag(ctx, "release-2026.01.02-1")
	require.NoError(t, err)
	a, _ := rel.Asset("x.deb")
	for i := 0; i < 10; i++ {
		fake.CutDownload("x.deb", 0)
	}
	dir := t.TempDir()
	o := fastRetry()
	o.Attempts = 3
	_, err = src.DownloadFile(ctx, a, dir, sumOf([]byte("data")), o)
	require.ErrorContains(t, err, "giving up after 3 attempts")
	entries, _ := os.ReadDir(dir)
	require.Empty(t, entries)
}

func TestFetchRefusesLargeAssets(t *testing.T) {
	t.Parallel()
	fake := githubfake.New()
	defer fake.Close()
	fake.AddRelease(testRepo, githubfake.ReleaseSpec{Tag: "release-2026.01.02-1", Assets: map[string][]byte{SumsAsset: randomBytes(t, 2048)}})
	src := newSource(t, fake)
	rel, err := src.ByTag(testCtx(t), "release-2026.01.02-1")
	require.NoError(t, err)
	a, _ := rel.Asset(SumsAsset)
	_, err = src.Fetch(testCtx(t), a, 1024)
	require.ErrorContains(t, err, "more than")
	data, err := src.Fetch(testCtx(t), a, 4096)
	require.NoError(t, err)
	require.Len(t, data, 2048)
}

func TestSumsAndSignatures(t *testing.T) {
	t.Parallel()
	deb := []byte("package bytes")
	sums, err := MakeSums(map[string]io.Reader{DebAsset("2026.01.02-1"): bytes.NewReader(deb)})
	require.NoError(t, err)
	parsed, err := ParseSums(sums)
	require.NoError(t, err)
	require.Equal(t, sumOf(deb), parsed["ferry_2026.01.02-1_amd64.deb"])

	binary, err := ParseSums([]byte(sumOf(deb) + " *a.deb\n"))
	require.NoError(t, err)
	require.Equal(t, sumOf(deb), binary["a.deb"])
	_, err = ParseSums([]byte("nothex  a.deb\n"))
	require.ErrorContains(t, err, "line 1")

	pub, priv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	otherPub, otherPriv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	sig := SignSums(priv, sums)

	require.NoError(t, VerifySums(sums, sig, []minisign.PublicKey{otherPub, pub}, false), "any trusted key will do (rotation)")
	require.ErrorIs(t, VerifySums(sums, sig, []minisign.PublicKey{otherPub}, false), ErrSignature)
	require.ErrorIs(t, VerifySums(sums, SignSums(otherPriv, sums), []minisign.PublicKey{pub}, false), ErrSignature)
	require.ErrorIs(t, VerifySums(append([]byte("tampered"), sums...), sig, []minisign.PublicKey{pub}, false), ErrSignature)
	require.ErrorIs(t, VerifySums(sums, nil, []minisign.PublicKey{pub}, false), ErrSignature)
	require.ErrorIs(t, VerifySums(sums, nil, nil, false), ErrUnsigned)
	require.NoError(t, VerifySums(sums, nil, nil, true))
}

// TestStalledDownloadIsAbandoned: a server that accepts the request and
// never answers, or answers and then goes silent, does not hold the
// download: the watchdog abandons it after the idle timeout, as a
// transient error, and a cancelled context ends it at once.
func TestStalledDownloadIsAbandoned(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/half" {
			w.Header().Set("Content-Length", "1000")
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
		}
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	for _, path := range []string{"/silent", "/half"} {
		began := time.Now()
		_, err := DownloadURL(context.Background(), srv.Client(), srv.URL+path, t.TempDir(), "x.deb", sumOf(nil), DownloadOptions{Attempts: 1, IdleTimeout: 200 * time.Millisecond})
		var stalled *StalledError
		require.ErrorAs(t, err, &stalled, path)
		require.True(t, retry.Transient(err), "a stall is retried: %v", err)
		require.Less(t, time.Since(began), 10*time.Second, path)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := DownloadURL(ctx, srv.Client(), srv.URL+"/silent", t.TempDir(), "x.deb", sumOf(nil), DownloadOptions{Attempts: 1, IdleTimeout: time.Hour})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled download kept waiting for a silent server")
	}
}

func TestTransportBoundsTheWaitForHeaders(t *testing.T) {
	t.Parallel()
	tr, err := NewTransport("")
	require.NoError(t, err)
	require.Equal(t, HeaderTimeout, tr.ResponseHeaderTimeout)
	require.Nil(t, tr.Proxy, "the environment's proxy variables are not used")
	_, err = NewTransport("http://user:pa%ss@proxy.example:3128")
	require.ErrorContains(t, err, "proxy is not an http(s) URL")
	require.NotContains(t, err.Error(), "pa%ss", "the password is never echoed")
}
