package storage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/bootstrap"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestMonitorSaysWhyEtcdIsUnreachable: an etcd that does not answer is
// logged at warn level with the cause at once and again every Repeat, Err
// says it for /healthz, and the way back is logged once.
func TestMonitorSaysWhyEtcdIsUnreachable(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dead, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:1"}, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { dead.Close() })
	down, err := New(dead, "/monitor/")
	require.NoError(t, err)
	up := newTestStorage(t)

	var logs bytes.Buffer
	m := &Monitor{
		Storage: down, Log: slog.New(slog.NewJSONHandler(&logs, nil)), Repeat: time.Hour,
		Explain: func(context.Context) error { return errors.New("connection refused: nothing listens there") },
	}
	require.NoError(t, m.Err())
	m.Check(ctx, 200*time.Millisecond)
	require.ErrorContains(t, m.Err(), "etcd unreachable for")
	require.ErrorContains(t, m.Err(), "connection refused: nothing listens there")
	m.Check(ctx, 200*time.Millisecond)
	require.Equal(t, 1, strings.Count(logs.String(), `"level":"WARN","msg":"etcd unreachable: connection refused: nothing listens there"`), "logged once within Repeat: %s", logs.String())

	m.Repeat = time.Nanosecond
	m.Check(ctx, 200*time.Millisecond)
	require.Equal(t, 2, strings.Count(logs.String(), `"msg":"etcd unreachable: `), "logged again after Repeat")
	require.Contains(t, logs.String(), `"unreachable_seconds"`)

	// Without an explanation, the request's own error is the cause.
	m.Explain = func(context.Context) error { return nil }
	m.Check(ctx, 200*time.Millisecond)
	require.ErrorContains(t, m.Err(), "context deadline exceeded")

	m.Storage = up
	m.Check(ctx, 5*time.Second)
	require.NoError(t, m.Err())
	require.Contains(t, logs.String(), `"msg":"etcd reachable again"`)
}

// TestMonitorNamesRefusedPort: with the daemons' own probe, an etcd
// endpoint where nothing listens is named as such, not as the timeout of
// the request that found it out.
func TestMonitorNamesRefusedPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	endpoint := "http://" + l.Addr().String()
	require.NoError(t, l.Close())

	cfg := &bootstrap.Config{Endpoints: []string{endpoint}}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	st, err := New(cli, "/monitor/")
	require.NoError(t, err)
	var logs bytes.Buffer
	m := &Monitor{Storage: st, Log: slog.New(slog.NewJSONHandler(&logs, nil)), Explain: cfg.Probe}
	m.Check(testContext(t), 300*time.Millisecond)
	require.ErrorContains(t, m.Err(), "connection refused: nothing listens there")
	require.NotContains(t, m.Err().Error(), "deadline")
	require.Contains(t, logs.String(), "connection refused: nothing listens there")
}
