// Command ferry-updater runs on every boot server. The updaters elect a
// leader in etcd; the leader finds new releases, starts and watches
// rollouts, and stops the fleet when something breaks. Every updater serves
// the fleet's read-only status page.
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
	flags := daemon.NewFlags(program, "elects a leader that finds releases and coordinates rollouts, and serves the fleet's status page")
	listen := flags.FS.String("listen", ":9711", "address of /metrics, /healthz, the GitHub /webhook and (unless --status-listen says otherwise) the status page at /")
	statusListen := flags.FS.String("status-listen", "", `address of the read-only status page alone, e.g. 127.0.0.1:9713 behind a reverse proxy that authenticates; "off" serves no page; empty serves it on --listen`)
	ttl := flags.FS.Duration("session-ttl", 10*time.Second, "election lease: how long a dead leader keeps the lead")
	env, err := flags.Setup(os.Args[1:])
	if err != nil {
		daemon.Fatal(program, err)
	}
	defer env.Client.Close()

	u := updater.New(updater.Options{Storage: env.Storage, ID: env.Config.ServerID, SessionTTL: *ttl, Logger: env.Logger, Etcd: env.Etcd, Channels: env.Config.Channels, TrustedKeys: env.Config.TrustedKeys})
	well.Go(env.Etcd.Run)
	well.Go(u.Run)
	switch *statusListen {
	case "":
		serve(env, *listen, u.Handler(), "/metrics, /healthz, /webhook and the status page")
	case "off":
		serve(env, *listen, u.OpsHandler(), "/metrics, /healthz and /webhook")
	default:
		serve(env, *listen, u.OpsHandler(), "/metrics, /healthz and /webhook")
		serve(env, *statusListen, u.StatusPage(), "the status page")
	}
	well.Stop()
	if err := well.Wait(); err != nil && !well.IsSignaled(err) {
		env.Logger.Error("stopped with an error", "error", err)
		os.Exit(1)
	}
}

func serve(env *daemon.Env, addr string, h http.Handler, what string) {
	l, err := daemon.Listen(env.Logger, addr, what)
	if err != nil {
		daemon.Fatal(program, err)
	}
	srv := &well.HTTPServer{
		Server:    &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		AccessLog: daemon.QuietAccessLog(),
		// A browser on the status page keeps a stream open, which ends
		// with the daemon; shutdown waits no longer than this for the rest.
		ShutdownTimeout: 5 * time.Second,
	}
	srv.Serve(l)
}
