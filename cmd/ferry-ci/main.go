// Command ferry-ci is the nightly job's tool: it generates the artifact
// set, builds, signs, gates on dctest, tags and publishes ferry releases.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferry-cd/ferry/pkg/ci"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ci.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
