// Command ferry-dctest-etcd runs one member of dctest's etcd cluster: a
// thin wrapper around etcd's embed package, so that the test can kill and
// restart members as processes.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	name := flag.String("name", "", "member name")
	dir := flag.String("data-dir", "", "data directory")
	client := flag.String("client-url", "", "client URL, e.g. http://127.0.0.1:2379")
	peer := flag.String("peer-url", "", "peer URL")
	cluster := flag.String("initial-cluster", "", "name=peer-url,...")
	state := flag.String("initial-cluster-state", "new", "new or existing")
	certFile := flag.String("cert-file", "", "server certificate of the client URL (https)")
	keyFile := flag.String("key-file", "", "its key")
	caFile := flag.String("trusted-ca-file", "", "CA that client certificates must be signed by; clients must present one")
	fsync := flag.Bool("fsync", false, "sync the WAL and the database to disk, as a production member does (benchmarks)")
	flag.Parse()

	cu, err := url.Parse(*client)
	if err != nil {
		fail(err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		fail(err)
	}
	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = *cluster
	cfg.ClusterState = *state
	cfg.InitialClusterToken = "ferry-dctest"
	cfg.LogOutputs = []string{filepath.Join(*dir, "etcd.log")}
	if *certFile != "" {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: *certFile, KeyFile: *keyFile, TrustedCAFile: *caFile, ClientCertAuth: *caFile != ""}
	}
	// A virtual datacenter on one machine needs no crash safety; a
	// benchmark measures what a real member costs.
	cfg.UnsafeNoFsync = !*fsync
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fail(err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail(err)
	}
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case err := <-e.Err():
		fail(err)
	case <-time.After(2 * time.Minute):
		fail(fmt.Errorf("not ready after 2m"))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-e.Err():
		fail(err)
	}
	e.Close()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ferry-dctest-etcd:", err)
	os.Exit(1)
}
