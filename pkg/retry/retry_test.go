package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"

	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/release"
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
		{"nil", nil, false},
	} {
		require.Equal(t, c.want, Transient(c.err), c.name)
	}
}
