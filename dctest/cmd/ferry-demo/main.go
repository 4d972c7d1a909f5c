// Command ferry-demo is `make demo`: it brings up a virtual datacenter of
// three boot servers, publishes a new ferry release, shows the rollout live
// with `ferry status --watch` and on boot-0's status page, prints a summary
// and tears everything down (after Enter when run in a terminal; Ctrl-C
// tears down too).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"golang.org/x/sys/unix"
)

const (
	from = "2026.01.01-1"
	to   = "2026.01.02-1"
)

// scenario is --demo: "" for a plain rollout, "canary" for a canary pause.
var scenario string

func main() { os.Exit(run()) }

func say(format string, args ...any) {
	fmt.Printf("\033[1mferry demo:\033[0m "+format+"\n", args...)
}

func run() int {
	listen := flag.String("status-listen", "127.0.0.1:9711", "where boot-0's updater serves the status page; a busy port falls back to a free one")
	flag.StringVar(&scenario, "demo", "", `"canary": the new release's plan has a rolling step whose canary goes first; the rollout pauses until ferry rollout resume`)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	addr := statusAddr(*listen)
	say("status page: http://%s/ (boot-0's ferry-updater serves it once the servers are up; open it in a browser)", addr)
	dir, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	say("building the ferry packages %s and %s (make deb; a cold build cache takes a few minutes)...", from, to)
	build, err := harness.BuildAllWith(".", filepath.Join(dir, "build"), func(what string, took time.Duration) {
		say("  built %s in %s", what, took.Round(100*time.Millisecond))
	}, from, to)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if ctx.Err() != nil {
		return 130
	}
	say("starting a virtual datacenter: etcd, a GitHub-compatible release server, a registry, containerd...")
	dc, err := harness.Start(harness.Options{Dir: filepath.Join(dir, "dc"), Build: build, EtcdMembers: 1, UpdaterAddrs: map[string]string{"boot-0": addr}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		say("tearing down...")
		dc.Close()
	}()
	if err := demo(ctx, dc, addr); err != nil {
		if ctx.Err() != nil {
			say("interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "ferry demo:", err)
		return 1
	}
	hold(ctx, addr)
	return 0
}

// statusAddr is addr when it is free, else a free loopback port.
func statusAddr(addr string) string {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return addr // the demo says where; boot-0's updater will say why not
		}
	}
	defer l.Close()
	return l.Addr().String()
}

// hold keeps the datacenter, and the status page, up until Enter or Ctrl-C
// when a person runs the demo in a terminal.
func hold(ctx context.Context, addr string) {
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err != nil {
		return // not a terminal: CI, or input from /dev/null
	}
	say("the fleet stays up: look around http://%s/, then press Enter (or Ctrl-C) to tear it down", addr)
	done := make(chan struct{})
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		close(done)
	}()
	select {
	case <-ctx.Done():
	case <-done:
	}
}

func demo(ctx context.Context, dc *harness.Datacenter, addr string) error {
	servers := []string{"boot-0", "boot-1", "boot-2"}
	if err := dc.Publish(from, harness.PublishOptions{CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		return err
	}
	if err := dc.Configure(ctx, "env", "none"); err != nil {
		return err
	}
	for _, id := range servers {
		say("%s: dpkg -i ferry_%s_amd64.deb; ferry join %s", id, from, id)
		if _, err := dc.AddServer(ctx, id, from); err != nil {
			return err
		}
		if _, stderr, code := dc.Ferry(ctx, "join", id); code != 0 {
			return fmt.Errorf("ferry join: %s", stderr)
		}
	}
	say("ferry config set env staging: the fleet rolls out %s's artifact set...", from)
	began := time.Now()
	if _, stderr, code := dc.Ferry(ctx, "config", "set", "env", "staging"); code != 0 {
		return fmt.Errorf("ferry config set: %s", stderr)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if _, err := dc.WaitState(wctx, from, "completed"); err != nil {
		return err
	}
	if scenario == "canary" {
		say("the new release's plan starts with a rolling step \"restart\" with canary: 1 and pause: manual")
		if err := dc.EditArtifactSet(func(s *artifacts.Set) {
			restart := artifacts.Step{Name: "restart", Strategy: artifacts.Rolling, Parallel: 2, Canary: "1", Pause: artifacts.ParseDuration(artifacts.PauseManual),
				Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "sleep", Args: []string{"2"}}}}}
			s.Plan.Steps = append([]artifacts.Step{restart}, s.Plan.Steps...)
		}); err != nil {
			return err
		}
	}
	say("the fleet runs %s (%s). Publishing %s as a pre-release on the release server...", from, time.Since(began).Round(time.Second), to)
	time.Sleep(2 * time.Second)
	if err := dc.Publish(to, harness.PublishOptions{Prerelease: true, CreatedAt: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}); err != nil {
		return err
	}
	if _, err := dc.WaitState(wctx, to, "running", "completed"); err != nil {
		return err
	}
	if scenario == "canary" {
		if _, err := dc.WaitState(wctx, to, "paused"); err != nil {
			return err
		}
		say("one server took the restart step first; the rollout is paused:")
		out, _, _ := dc.Ferry(ctx, "status")
		fmt.Print(out)
		say("look at the canary on the status page; resuming in 5s: ferry rollout resume")
		time.Sleep(5 * time.Second)
		out, stderr, code := dc.Ferry(ctx, "rollout", "resume")
		if code != 0 {
			return fmt.Errorf("ferry rollout resume: %s", stderr)
		}
		fmt.Print(out)
	}

	// The live view is the operator's own: ferry status --watch, and the
	// status page.
	say("rolling out %s; watch it at http://%s/ too", to, addr)
	cmd := dc.FerryCommand(ctx, "status", "--watch", "--until-finished")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the rollout did not complete: %w", err)
	}

	fmt.Println()
	say("summary")
	out, _, _ := dc.Ferry(ctx, "history")
	fmt.Print(out)
	fmt.Println()
	for _, id := range servers {
		s, _ := dc.Server(id)
		v, _ := s.InstalledVersion(ctx)
		fmt.Printf("  %s: dpkg says ferry %s; worker started %d times (one restart is its self-upgrade)\n", id, v, s.Worker.Starts())
	}
	return nil
}
