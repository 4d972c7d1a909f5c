package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/google/go-github/v84/github"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTransient(t *testing.T) {
	t.Parallel()
	gh := func(code int) error {
		return &github.ErrorResponse{Response: &http.Response{StatusCode: code}, Message: http.StatusText(code)}
	}
	wrap := func(err error) error { return fmt.Errorf("self-upgrade: %w", err) }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"GitHub 502", wrap(gh(502)), true},
		{"GitHub 429", wrap(gh(429)), true},
		{"GitHub 403 rate limit", wrap(&github.RateLimitError{}), true},
		{"GitHub secondary limit", wrap(&github.AbuseRateLimitError{}), true},
		{"GitHub 404", wrap(gh(404)), false},
		{"GitHub 403 without a rate limit (no permission)", wrap(gh(403)), false},
		{"GitHub 403 with the limit used up", wrap(&github.ErrorResponse{Response: &http.Response{StatusCode: 403, Header: http.Header{"X-Ratelimit-Remaining": {"0"}}}}), true},
		{"GitHub 422", wrap(gh(422)), false},
		{"download 503", wrap(&release.StatusError{Code: 503, Status: "download answered 503"}), true},
		{"download 410", wrap(&release.StatusError{Code: 410, Status: "gone"}), false},
		{"connection refused", wrap(syscall.ECONNREFUSED), true},
		{"connection reset", wrap(syscall.ECONNRESET), true},
		{"cut short", wrap(io.ErrUnexpectedEOF), true},
		{"a timeout of its own", wrap(context.DeadlineExceeded), true},
		{"etcd leader changed", wrap(rpctypes.ErrLeaderChanged), true},
		{"etcd request timed out", wrap(rpctypes.ErrTimeout), true},
		{"etcd unavailable", wrap(status.Error(codes.Unavailable, "no connection")), true},
		{"etcd permission denied", wrap(rpctypes.ErrPermissionDenied), false},
		{"checksum", wrap(release.ErrChecksum), false},
		{"signature", wrap(release.ErrSignature), false},
		{"manifest", wrap(trust.ErrManifest), false},
		{"floor", wrap(trust.ErrBelowFloor), false},
		{"too large", wrap(release.ErrTooLarge), false},
		{"dpkg state", wrap(&deb.NotInstalledError{}), false},
		{"cancelled", wrap(context.Canceled), false},
		{"plain", errors.New("holds version 1, not 2"), false},
		// A file system error carries an errno, which has the methods of
		// net.Error: it is not a network error for that.
		{"read-only file system", wrap(&fs.PathError{Op: "mkdir", Path: "/srv/ferry", Err: syscall.EROFS}), false},
		{"disk full", wrap(&fs.PathError{Op: "write", Path: "/var/lib/ferry/x", Err: syscall.ENOSPC}), false},
		{"network unreachable", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ENETUNREACH}}), true},
		{"DNS", wrap(&net.DNSError{Err: "no such host", Name: "github.example", IsTemporary: true}), true},
		{"interrupted install", wrap(&deb.InterruptedError{Err: errors.New("signal: terminated")}), true},
		{"nil", nil, false},
	} {
		require.Equal(t, c.want, retry.Transient(c.err), c.name)
	}
}

func TestAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	resp := func(code int, h ...string) *http.Response {
		r := &http.Response{StatusCode: code, Header: http.Header{}}
		for i := 0; i < len(h); i += 2 {
			r.Header.Set(h[i], h[i+1])
		}
		return r
	}
	for _, c := range []struct {
		name string
		err  error
		want time.Duration
		ok   bool
	}{
		{"429 with Retry-After, no documentation_url", &github.ErrorResponse{Response: resp(429, "Retry-After", "20")}, 20 * time.Second, true},
		{"503 with an HTTP-date Retry-After", &github.ErrorResponse{Response: resp(503, "Retry-After", now.Add(90*time.Second).Format(http.TimeFormat))}, 90 * time.Second, true},
		{"403 with the limit used up", &github.ErrorResponse{Response: resp(403, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", fmt.Sprint(now.Add(5*time.Minute).Unix()))}, 5 * time.Minute, true},
		{"primary rate limit", &github.RateLimitError{Rate: github.Rate{Reset: github.Timestamp{Time: now.Add(time.Minute)}}}, time.Minute, true},
		{"download 429", fmt.Errorf("x: %w", &release.StatusError{Code: 429, Header: http.Header{"Retry-After": {"7"}}}), 7 * time.Second, true},
		{"502 without a hint", &github.ErrorResponse{Response: resp(502)}, 0, false},
		{"not HTTP", errors.New("boom"), 0, false},
	} {
		got, ok := retry.After(c.err, now)
		require.Equal(t, c.ok, ok, c.name)
		require.Equal(t, c.want, got, c.name)
	}
}
