// Command ferry is the admin command line of a ferry fleet.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferry-cd/ferry/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
