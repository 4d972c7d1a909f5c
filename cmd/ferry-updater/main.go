// Command ferry-updater runs on every boot server. The updaters elect a
// leader in etcd; the leader finds new releases, starts and watches
// rollouts, and stops the fleet when something breaks.
package main

import (
	"net/http"
	"os"
	"time"

	"github.com/cybozu-go/well"
	"github.com/ferry-cd/ferry/internal/daemon"
	"github.com/ferry-cd/ferry/pkg/updater"
)

const program = "ferry-updater"

func main() {
	flags := daemon.NewFlags(program, "elects a leader that finds releases and coordinates rollouts")
	listen := flags.FS.String("listen", ":9711", "address of /metrics, /healthz and the GitHub /webhook")
	ttl := flags.FS.Duration("session-ttl", 10*time.Second, "election lease: how long a dead leader keeps the lead")
	env, err := flags.Setup(os.Args[1:])
	if err != nil {
		daemon.Fatal(program, err)
	}
	defer env.Client.Close()

	u := updater.New(updater.Options{Storage: env.Storage, ID: env.Config.ServerID, SessionTTL: *ttl, Logger: env.Logger, Etcd: env.Etcd})
	well.Go(env.Etcd.Run)
	well.Go(u.Run)
	srv := &well.HTTPServer{Server: &http.Server{Addr: *listen, Handler: u.Handler(), ReadHeaderTimeout: 10 * time.Second}, AccessLog: daemon.QuietAccessLog()}
	if err := srv.ListenAndServe(); err != nil {
		daemon.Fatal(program, err)
	}
	well.Stop()
	if err := well.Wait(); err != nil && !well.IsSignaled(err) {
		env.Logger.Error("stopped with an error", "error", err)
		os.Exit(1)
	}
}
