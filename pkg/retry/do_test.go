package retry_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/stretchr/testify/require"
)

// answer is an HTTP answer that asks for a wait.
type answer struct {
	code   int
	header http.Header
}

func (a *answer) Error() string           { return http.StatusText(a.code) }
func (a *answer) HTTPStatus() int         { return a.code }
func (a *answer) HTTPHeader() http.Header { return a.header }

func TestDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fast := retry.Policy{Base: time.Millisecond, Max: 2 * time.Millisecond}
	flaky := errors.New("connection reset")

	// Tries until it succeeds, and says so before each wait.
	tries, notified := 0, 0
	p := fast
	p.Notify = func(err error, wait time.Duration) {
		notified++
		require.ErrorIs(t, err, flaky)
		require.Positive(t, wait)
	}
	got, err := retry.Do(ctx, p, func() (int, error) {
		if tries++; tries < 4 {
			return 0, flaky
		}
		return 42, nil
	})
	require.NoError(t, err)
	require.Equal(t, 42, got)
	require.Equal(t, 4, tries)
	require.Equal(t, 3, notified)

	// A permanent error ends it at once, unwrapped.
	bad := errors.New("bad signature")
	tries = 0
	_, err = retry.Do(ctx, fast, func() (int, error) { tries++; return 0, retry.OnlyTransient(bad) })
	require.Equal(t, bad, err)
	require.Equal(t, 1, tries)

	// Tries bounds the tries; the last error comes back.
	tries = 0
	p = fast
	p.Tries = 3
	_, err = retry.Do(ctx, p, func() (int, error) { tries++; return 0, flaky })
	require.ErrorIs(t, err, flaky)
	require.Equal(t, 3, tries)

	// A server's Retry-After is waited, not the backoff's millisecond; the
	// error keeps its own words.
	tries = 0
	var waits []time.Duration
	p = fast
	p.Tries = 2
	p.Notify = func(_ error, wait time.Duration) { waits = append(waits, wait) }
	slow := &answer{code: http.StatusTooManyRequests, header: http.Header{"Retry-After": []string{"1"}}}
	_, err = retry.Do(ctx, p, func() (int, error) { tries++; return 0, slow })
	require.Equal(t, []time.Duration{time.Second}, waits)
	require.EqualError(t, err, "Too Many Requests")
	var a *answer
	require.ErrorAs(t, err, &a)

	// No wait outlasts the context's deadline: the last error comes back.
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	defer dcancel()
	tries = 0
	_, err = retry.Do(dctx, retry.Policy{Base: time.Hour, Max: time.Hour}, func() (int, error) { tries++; return 0, flaky })
	require.ErrorIs(t, err, flaky)
	require.Equal(t, 1, tries)
	require.NoError(t, dctx.Err(), "returned at once")

	// Within bounds the time of all the tries.
	tries = 0
	began := time.Now()
	_, err = retry.Do(ctx, retry.Policy{Base: 20 * time.Millisecond, Max: 20 * time.Millisecond, Within: 100 * time.Millisecond}, func() (int, error) { tries++; return 0, flaky })
	require.ErrorIs(t, err, flaky)
	require.Less(t, time.Since(began), time.Minute)
	require.Greater(t, tries, 1)

	// A context that ends stops the waits.
	cctx, cancel := context.WithCancel(ctx)
	p = retry.Policy{Base: time.Hour, Max: time.Hour, Notify: func(error, time.Duration) { cancel() }}
	_, err = retry.Do(cctx, p, func() (int, error) { return 0, flaky })
	require.ErrorIs(t, err, context.Canceled)
}

// TestPolicyBackOff: the waits double from Base up to Max, within 20%
// either way.
func TestPolicyBackOff(t *testing.T) {
	t.Parallel()
	b := retry.Policy{Base: time.Second, Max: time.Minute}.BackOff()
	var waits []time.Duration
	for range 12 {
		waits = append(waits, b.NextBackOff())
	}
	require.InDelta(t, time.Second, waits[0], float64(200*time.Millisecond))
	require.InDelta(t, 8*time.Second, waits[3], float64(1600*time.Millisecond))
	for _, w := range waits {
		require.LessOrEqual(t, w, 72*time.Second)
	}
	require.GreaterOrEqual(t, waits[11], 48*time.Second, "capped at Max, not below")
	b.Reset()
	require.Less(t, b.NextBackOff(), 1300*time.Millisecond)
}
