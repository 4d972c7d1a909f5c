// Package retry tells a transient error, worth trying again, from a
// permanent one, in one place for the whole of ferry: the network, GitHub's
// 5xx, 429 and rate-limit 403 answers, and an etcd that is unavailable or
// changing leaders are transient; anything else (a bad signature,
// checksum, version or manifest) is permanent.
package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/google/go-github/v84/github"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StatusError is implemented by errors that carry an HTTP status.
type StatusError interface {
	error
	HTTPStatus() int
}

// TransientStatus reports whether an HTTP status is worth a retry: 5xx,
// 429, and 403, which GitHub answers for a rate limit.
func TransientStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusForbidden || code == http.StatusRequestTimeout
}

// Transient reports whether err is worth retrying. A context that the
// caller cancelled is not: the caller is going away.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var (
		rl     *github.RateLimitError
		abuse  *github.AbuseRateLimitError
		ghResp *github.ErrorResponse
		se     StatusError
		netErr net.Error
	)
	switch {
	case errors.As(err, &rl), errors.As(err, &abuse):
		return true
	case errors.As(err, &ghResp) && ghResp.Response != nil:
		return TransientStatus(ghResp.Response.StatusCode)
	case errors.As(err, &se):
		return TransientStatus(se.HTTPStatus())
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.As(err, &netErr):
		return true
	case errors.Is(err, rpctypes.ErrLeaderChanged), errors.Is(err, rpctypes.ErrNoLeader),
		errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrGRPCTimeout),
		errors.Is(err, rpctypes.ErrGRPCLeaderChanged), errors.Is(err, rpctypes.ErrGRPCNoLeader),
		errors.Is(err, rpctypes.ErrGRPCTimeoutDueToLeaderFail):
		return true
	}
	switch status.Code(unwrapStatus(err)) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// unwrapStatus finds a gRPC status error in err's chain.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}
