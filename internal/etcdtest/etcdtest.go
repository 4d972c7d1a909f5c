// Package etcdtest runs an embedded etcd for the tests of one package.
//
// Call Main from TestMain. Every test then gets a client with Client and a key
// prefix of its own with Prefix, so tests can run in parallel against the one
// server.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

var endpoint string

// Main starts an embedded etcd, runs the package's tests and stops etcd.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ferry-etcdtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	e, err := Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest:", err)
		return 1
	}
	defer e.Close()
	endpoint = e.Endpoint
	return m.Run()
}

// Server is one embedded etcd member.
type Server struct {
	Endpoint string
	etcd     *embed.Etcd
}

// Close stops the server.
func (s *Server) Close() { s.etcd.Close() }

// Start starts a single-member etcd with its data in dir, listening on
// loopback ports chosen by the kernel. Its log goes to dir/etcd.log.
func Start(dir string) (*Server, error) {
	clientURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	peerURL, err := freeURL()
	if err != nil {
		return nil, err
	}

	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	// Tests never need data to survive a crash; skipping fsync keeps them fast.
	cfg.UnsafeNoFsync = true

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 60s; see %s", cfg.LogOutputs[0])
	}
	return &Server{Endpoint: clientURL.String(), etcd: e}, nil
}

// freeURL finds a free loopback port. Another process could take it before
// etcd binds it; on loopback in a test run that does not happen in practice.
func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}

// Endpoint returns the client URL of the package's etcd.
func Endpoint() string {
	if endpoint == "" {
		panic("etcdtest: call etcdtest.Main from TestMain")
	}
	return endpoint
}

// Client returns a client of the package's etcd, closed when the test ends;
// opts, such as interceptors that watch what it sends, go to its gRPC
// connection.
func Client(t testing.TB, opts ...grpc.DialOption) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: opts,
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// prefixes numbers the prefixes handed out, so that two in one test differ.
var prefixes atomic.Int64

// Prefix returns a key prefix that belongs to this call alone. Its keys are
// deleted when the test ends.
func Prefix(t testing.TB) string {
	t.Helper()
	p := fmt.Sprintf("/t/%s/%d/", strings.ReplaceAll(t.Name(), "/", "_"), prefixes.Add(1))
	cli := Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cli.Delete(ctx, p, clientv3.WithPrefix())
	})
	return p
}
