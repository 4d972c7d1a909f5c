package storage

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Monitor keeps a daemon's view of whether etcd answers. While etcd does
// not, it logs "etcd unreachable: CAUSE" at warn level at once and again
// at least every Repeat, and Err says the same for /healthz; when etcd
// answers again it says so once.
type Monitor struct {
	Storage *Storage
	Log     *slog.Logger
	// Explain, if set, names the cause of a failed check in words an
	// operator can act on (bootstrap.Config.Probe: connection refused, a
	// certificate etcd rejects); nil from it means etcd's endpoints answer
	// and the request's own error is the cause.
	Explain func(context.Context) error
	// Every is the time between checks (default 5s); Repeat is how often
	// an outage is logged again while it lasts (default 30s).
	Every, Repeat time.Duration

	mu     sync.Mutex
	cause  error
	since  time.Time
	logged time.Time
}

// Run checks etcd until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	every := m.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		m.Check(ctx, every)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check asks etcd once, within timeout, and records and logs the outcome.
func (m *Monitor) Check(ctx context.Context, timeout time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	_, err := m.Storage.cli.Get(cctx, m.Storage.abs(keyPing), clientv3.WithCountOnly())
	cancel()
	if err != nil && m.Explain != nil && ctx.Err() == nil {
		// A time of its own: the request may have used all of its.
		pctx, cancel := context.WithTimeout(ctx, timeout)
		if perr := m.Explain(pctx); perr != nil {
			err = perr
		}
		cancel()
	}
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	repeat := m.Repeat
	if repeat <= 0 {
		repeat = 30 * time.Second
	}
	switch {
	case err == nil && m.cause != nil:
		m.Log.Info("etcd reachable again", "unreachable_seconds", now.Sub(m.since).Seconds())
		m.cause = nil
	case err != nil && m.cause == nil:
		m.cause, m.since, m.logged = err, now, now
		m.Log.Warn("etcd unreachable: " + err.Error())
	case err != nil:
		m.cause = err
		if now.Sub(m.logged) >= repeat {
			m.logged = now
			m.Log.Warn("etcd unreachable: "+err.Error(), "unreachable_seconds", now.Sub(m.since).Seconds())
		}
	}
}

// Err is nil while etcd answers, and otherwise says since when it has not
// and why.
func (m *Monitor) Err() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cause == nil {
		return nil
	}
	return fmt.Errorf("etcd unreachable for %s: %w", time.Since(m.since).Truncate(time.Second), m.cause)
}

// HealthHandler answers a daemon's /healthz: 200 and "ok", followed by
// what detail adds (nil: nothing), while etcd answers within 3 seconds;
// 503 and the cause otherwise, in the monitor's words when it knows one
// (a nil monitor knows none).
func (s *Storage) HealthHandler(m *Monitor, detail func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.Ping(ctx); err != nil {
			if known := m.Err(); known != nil {
				err = known
			}
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		line := "ok"
		if detail != nil {
			line += " " + detail()
		}
		fmt.Fprintln(w, line)
	})
}
