// Package retry is the one way ferry tries again. It tells a transient
// error, worth trying again, from a permanent one, in one place for the
// whole of ferry: the network, GitHub's 5xx, 429 and rate-limit 403
// answers, and an etcd that is unavailable or changing leaders are
// transient; anything else (a bad signature, checksum, version or
// manifest) is permanent. Do retries an operation with backoff v5, and
// waits what a server asked for (After) when it asked for longer.
package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

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

// HeaderError is implemented by errors that carry the answer's headers.
type HeaderError interface {
	error
	HTTPHeader() http.Header
}

// After returns how long the server asked to wait, from any answer: its
// Retry-After (seconds or an HTTP date), or X-RateLimit-Reset when
// X-RateLimit-Remaining is 0, as GitHub, its Enterprise edition and the
// proxies in front of them send. ok is false when err says nothing.
func After(err error, now time.Time) (time.Duration, bool) {
	var (
		rl     *github.RateLimitError
		abuse  *github.AbuseRateLimitError
		ghResp *github.ErrorResponse
		he     HeaderError
	)
	switch {
	case errors.As(err, &rl):
		return max(rl.Rate.Reset.Time.Sub(now), time.Second), true
	case errors.As(err, &abuse) && abuse.RetryAfter != nil:
		return max(*abuse.RetryAfter, time.Second), true
	case errors.As(err, &ghResp) && ghResp.Response != nil:
		return fromHeader(ghResp.Response.Header, now)
	case errors.As(err, &he):
		return fromHeader(he.HTTPHeader(), now)
	case errors.As(err, &abuse):
		return time.Minute, true
	}
	return 0, false
}

// rateLimited reports whether an answer's headers say it is a rate limit.
func rateLimited(h http.Header) bool {
	return h.Get("Retry-After") != "" || h.Get("X-RateLimit-Remaining") == "0"
}

func fromHeader(h http.Header, now time.Time) (time.Duration, bool) {
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			return max(time.Duration(s)*time.Second, time.Second), true
		}
		if at, err := http.ParseTime(v); err == nil {
			return max(at.Sub(now), time.Second), true
		}
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Unix(reset, 0).Sub(now), time.Second), true
		}
	}
	return 0, false
}

// TransientStatus reports whether an HTTP status is worth a retry: 5xx,
// 429 and 408. A 403 is one only when it is a rate limit (see Transient):
// a 403 for a missing permission must fail loudly, not loop.
func TransientStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// Transient reports whether err is worth retrying. A context that the
// caller cancelled is not: the caller is going away.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	// An error can say it itself, as deb's InterruptedError does.
	var marked interface{ Transient() bool }
	if errors.As(err, &marked) {
		return marked.Transient()
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
		return TransientStatus(ghResp.Response.StatusCode) || rateLimited(ghResp.Response.Header)
	case errors.As(err, &se):
		var he HeaderError
		return TransientStatus(se.HTTPStatus()) || (errors.As(err, &he) && rateLimited(he.HTTPHeader()))
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.As(err, &netErr) && !isErrno(netErr):
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

// isErrno reports whether a net.Error is a bare errno: syscall.Errno has
// net.Error's methods, so a file system error (EROFS, ENOSPC) would
// otherwise pass for a network one. Network errnos come wrapped in a
// *net.OpError, or are named above.
func isErrno(err net.Error) bool {
	_, ok := err.(syscall.Errno)
	return ok
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
