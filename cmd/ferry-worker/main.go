// Command ferry-worker runs on every boot server. It follows the fleet's
// update request: it upgrades its own package (and exits, so that systemd
// starts the new version), then runs the release's rollout plan in lockstep
// with the other servers.
package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cybozu-go/well"
	"github.com/ferry-cd/ferry/internal/daemon"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/worker"
)

const program = "ferry-worker"

func main() {
	flags := daemon.NewFlags(program, "upgrades this server and runs rollout steps in lockstep with the fleet")
	listen := flags.FS.String("listen", ":9712", "address of /metrics and /healthz")
	planFile := flags.FS.String("plan", "", "rollout plan file (default: the plan of this release's artifact set)")
	env, err := flags.Setup(os.Args[1:])
	if err != nil {
		daemon.Fatal(program, err)
	}
	defer env.Client.Close()

	plan := &artifacts.Plan{}
	if *planFile != "" {
		if plan, err = artifacts.LoadPlan(*planFile); err != nil {
			daemon.Fatal(program, err)
		}
	}
	metrics := worker.NewMetrics()
	log := env.Logger
	ops := &worker.Ops{
		DataDir:   env.Config.DataDir,
		Installer: &deb.Installer{Command: env.Config.InstallCommand, Log: log},
		Log:       log,
		Metrics:   metrics,
	}
	if err := os.MkdirAll(filepath.Join(env.Config.DataDir, "downloads"), 0o755); err != nil {
		daemon.Fatal(program, err)
	}
	w := worker.New(worker.Options{Storage: env.Storage, ID: env.Config.ServerID, Plan: plan, Operator: ops, DataDir: env.Config.DataDir, Logger: log, Metrics: metrics})
	well.Go(w.Run)
	srv := &well.HTTPServer{Server: &http.Server{Addr: *listen, Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}, AccessLog: daemon.QuietAccessLog()}
	if err := srv.ListenAndServe(); err != nil {
		daemon.Fatal(program, err)
	}
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
