// Command ferry-worker runs on every boot server. It follows the fleet's
// update request: it upgrades its own package (and exits, so that systemd
// starts the new version), then runs the release's rollout plan in lockstep
// with the other servers.
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cybozu-go/well"
	"github.com/ferry-cd/ferry/internal/daemon"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/bootcontents"
	"github.com/ferry-cd/ferry/pkg/bootstrap"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/images"
	"github.com/ferry-cd/ferry/pkg/peer"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/ferry-cd/ferry/pkg/worker"
	"github.com/google/go-containerregistry/pkg/name"
)

const program = "ferry-worker"

// checkTrust refuses to start on a trust root or data-dir that others can
// write, and says loudly what is missing or switched off.
func checkTrust(cfg *bootstrap.Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	if err := trust.CheckPrivate(cfg.DataDir); err != nil {
		return fmt.Errorf("data-dir: %w", err)
	}
	if err := trust.EnsurePrivateDir(filepath.Join(cfg.DataDir, "downloads")); err != nil {
		return err
	}
	keys, err := trust.LoadKeys(cfg.TrustedKeys)
	switch {
	case err == nil:
		log.Info("trusted release keys", "path", cfg.TrustedKeys, "keys", keys.Len(), "channels", strings.Join(cfg.Channels, ","))
	case errors.Is(err, trust.ErrNoKeys) || errors.Is(err, fs.ErrNotExist):
		log.Warn("no trusted release key: nothing can be installed until one is put there", "path", cfg.TrustedKeys, "error", err)
	default:
		return err
	}
	if cfg.Unsigned() {
		log.Warn("allow-unsigned is on: releases without a signed manifest are installed; this is a lab switch, never for production", "config", cfg.Path)
	}
	return nil
}

func main() {
	flags := daemon.NewFlags(program, "upgrades this server and runs rollout steps in lockstep with the fleet")
	listen := flags.FS.String("listen", ":9712", "address of /metrics and /healthz")
	leaseTTL := flags.FS.Duration("lease-ttl", 10*time.Second, "lease of alive/<id>: how soon a dead worker is noticed")
	setFile := flags.FS.String("artifacts", "", "artifact set file to roll out (default: the one built into this release)")
	env, err := flags.Setup(os.Args[1:])
	if err != nil {
		daemon.Fatal(program, err)
	}
	defer env.Client.Close()

	set, err := artifacts.Parse(artifacts.Embedded)
	if *setFile != "" {
		set, err = artifacts.Load(*setFile)
	}
	if err != nil {
		daemon.Fatal(program, err)
	}
	cfg := env.Config
	metrics := worker.NewMetrics()
	log := env.Logger
	var runtime images.Runtime = &images.Containerd{
		Address: cfg.ContainerdAddress, Namespace: cfg.ContainerdNamespace, Snapshotter: cfg.ContainerdSnapshotter,
		WorkDir: filepath.Join(cfg.DataDir, "downloads"), Log: log,
	}
	if cfg.ImageRuntime == "oci-dir" {
		runtime = &images.OCIDir{Dir: cfg.OCIDir}
	}
	ops := &worker.Ops{
		DataDir:        cfg.DataDir,
		Installer:      &deb.Installer{Command: cfg.InstallCommand, Output: filepath.Join(cfg.DataDir, "dpkg-output.log"), Log: log},
		Log:            log,
		Metrics:        metrics,
		Set:            set,
		Storage:        env.Storage,
		Images:         runtime,
		Boot:           &bootcontents.Publisher{Dir: cfg.BootContentDir, IgnitionDir: cfg.IgnitionDir},
		RestartCommand: cfg.RestartCommand,
		// A download that makes no progress goes back at once to the
		// worker's own retry, which shows RETRYING and backs off; one
		// broken after progress is still resumed where it stopped.
		Download:      release.DownloadOptions{Attempts: 1},
		TrustedKeys:   cfg.TrustedKeys,
		AllowUnsigned: cfg.Unsigned(),
		Channels:      cfg.Channels,
	}
	if err := checkTrust(cfg, log); err != nil {
		daemon.Fatal(program, &daemon.ConfigError{Err: err})
	}
	peers, peerServer, err := peerLayer(cfg, env.Storage, metrics, log)
	if err != nil {
		daemon.Fatal(program, &daemon.ConfigError{Err: err})
	}
	if peers != nil && cfg.ContainerdHostsDir != "" {
		if err := mirrorImages(cfg.ContainerdHostsDir, peers.URL, set, log); err != nil {
			daemon.Fatal(program, &daemon.ConfigError{Err: err})
		}
	}
	ops.Peers = peers
	w := worker.New(worker.Options{Storage: env.Storage, ID: env.Config.ServerID, Plan: &set.Plan, Operator: ops, DataDir: env.Config.DataDir, Logger: log, Metrics: metrics, LeaseTTL: *leaseTTL, Etcd: env.Etcd, Labels: cfg.Labels})
	if peers != nil {
		peers.Lease = w.Lease
		l, err := daemon.Listen(log, cfg.PeerListen, "the peer server (verified packages and image blobs, read-only)")
		if err != nil {
			daemon.Fatal(program, err)
		}
		srv := &well.HTTPServer{Server: &http.Server{Handler: peerServer, ReadHeaderTimeout: 10 * time.Second}, AccessLog: daemon.QuietAccessLog(), ShutdownTimeout: 5 * time.Second}
		srv.Serve(l)
		log.Info("fetching from peers first", "peer_url", peers.URL)
	} else {
		log.Warn("peer-listen is off: every package and image is fetched upstream, by every server")
	}
	well.Go(env.Etcd.Run)
	well.Go(w.Run)
	l, err := daemon.Listen(log, *listen, "/metrics and /healthz")
	if err != nil {
		daemon.Fatal(program, err)
	}
	srv := &well.HTTPServer{Server: &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}, AccessLog: daemon.QuietAccessLog(), ShutdownTimeout: 5 * time.Second}
	srv.Serve(l)
	well.Stop()
	err = well.Wait()
	switch {
	case errors.Is(err, worker.ErrUpgraded):
		log.Info("exiting for the new version", "exit_status", worker.ExitRestart)
		os.Exit(worker.ExitRestart)
	case err != nil && !well.IsSignaled(err):
		log.Error("stopped with an error", "error", err)
		os.Exit(1)
	}
}

// peerLayer builds the fetcher and the server of the peer layer (nil, nil
// when peer-listen is off).
func peerLayer(cfg *bootstrap.Config, st *storage.Storage, metrics *worker.Metrics, log *slog.Logger) (*peer.Fetcher, *peer.Server, error) {
	if cfg.PeerListen == bootstrap.PeersOff {
		return nil, nil, nil
	}
	url, err := cfg.AdvertisedPeerURL()
	if err != nil {
		return nil, nil, err
	}
	cache := &peer.Cache{Dir: filepath.Join(cfg.DataDir, "peer")}
	m := metrics.Peer
	f := &peer.Fetcher{Cache: cache, Storage: st, ID: cfg.ServerID, URL: url, Metrics: m, Log: log, Running: version.Version}
	return f, &peer.Server{Cache: cache, Metrics: m, Log: log, Fill: f.Fill}, nil
}

// mirrorImages writes containerd's hosts.toml for the registries of the
// set's images, with this server's peer server as their mirror.
func mirrorImages(dir, mirror string, set *artifacts.Set, log *slog.Logger) error {
	var repos []name.Repository
	for _, im := range set.Images {
		ref, err := name.NewDigest(im.DigestRef())
		if err != nil {
			return fmt.Errorf("image %s: %w", im.Name, err)
		}
		repos = append(repos, ref.Context())
	}
	skipped, err := peer.WriteHostsTOML(dir, mirror, repos)
	if err != nil {
		return fmt.Errorf("containerd-hosts-dir %s: %w", dir, err)
	}
	for _, path := range skipped {
		log.Warn("a hosts.toml that ferry did not write is left alone: containerd's own pulls of that registry do not ask the peers", "path", path)
	}
	return nil
}
