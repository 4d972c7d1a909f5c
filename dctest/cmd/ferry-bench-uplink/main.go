// Command ferry-bench-uplink is `make bench-uplink`: it measures what a
// rollout costs the site's uplink, on systemd machines in the lab network
// with the uplink (the GitHub fake and the registry) shaped by tc, and the
// datacenter network at full speed. Each run starts a lab datacenter of N
// machines at one version, then rolls out the next, whose artifact set
// holds a large package and a large image, and reports the bytes that
// crossed the uplink and the download phase: from the rollout's start until
// the last server has the image (self-upgrade, packages and images steps).
// It runs every size with the peer layer off (every server fetches
// upstream, as ferry did before it) and on, in the same run.
//
// It needs root, like the machine scenarios.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

const (
	from = "2026.01.01-1"
	to   = "2026.01.02-1"
)

type config struct {
	servers    []int
	pkgMiB     int
	imageMiB   int
	layers     int
	rate       string
	ttl        time.Duration
	runTimeout time.Duration
}

// result is one rollout's figures.
type result struct {
	servers  int
	peers    bool
	uplink   int64
	assets   int64
	download time.Duration
	rollout  time.Duration
}

func main() { os.Exit(run()) }

func run() int {
	var c config
	servers := flag.String("servers", "1,10", "sizes of the fleet, comma-separated")
	flag.IntVar(&c.pkgMiB, "package-mib", 64, "size of the release's extra package, MiB (random, so incompressible)")
	flag.IntVar(&c.imageMiB, "image-mib", 256, "size of the release's image, MiB")
	flag.IntVar(&c.layers, "layers", 4, "layers of the image")
	flag.StringVar(&c.rate, "uplink", "100mbit", "the uplink's rate, in tc's notation")
	flag.DurationVar(&c.runTimeout, "run-timeout", 30*time.Minute, "bound on one run")
	flag.Parse()
	c.ttl = 5 * time.Second
	for _, s := range strings.Split(*servers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "ferry-bench-uplink: --servers %q: want sizes of at least 1, such as 1,10\n", *servers)
			return 2
		}
		c.servers = append(c.servers, n)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "ferry-bench-uplink: needs root (network namespaces, systemd-nspawn, tc); run it as root, after make deps")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "ferry-bench-uplink-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	results, err := bench(ctx, c, dir)
	report(c, results)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry-bench-uplink:", err)
		return 1
	}
	return 0
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s ferry-bench-uplink: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func bench(ctx context.Context, c config, dir string) ([]result, error) {
	say("building ferry %s and %s", from, to)
	build, err := harness.BuildAll(".", filepath.Join(dir, "build"), from, to)
	if err != nil {
		return nil, err
	}
	say("making a %d MiB package and a %d MiB image", c.pkgMiB, c.imageMiB)
	blob := make([]byte, c.pkgMiB<<20)
	rand.Read(blob)
	debPath, err := debtest.BuildErr(dir, debtest.Package{Name: "acme-big", Version: "2.0.0", Files: map[string]string{"/usr/share/acme-big/blob": string(blob)}})
	if err != nil {
		return nil, err
	}
	deb, err := os.ReadFile(debPath)
	if err != nil {
		return nil, err
	}
	img, err := random.Image(int64(c.imageMiB<<20/c.layers), int64(c.layers))
	if err != nil {
		return nil, err
	}
	var results []result
	for _, n := range c.servers {
		for _, peers := range []bool{false, true} {
			if n == 1 && !peers {
				continue // one server alone: the peer layer has nobody to ask
			}
			say("%d machines, peer layer %s", n, map[bool]string{false: "off", true: "on"}[peers])
			r, err := once(ctx, c, dir, build, deb, img, n, peers)
			if err != nil {
				return results, err
			}
			say("  uplink %.1f MiB (%.2f× the assets), download phase %s", float64(r.uplink)/(1<<20), float64(r.uplink)/float64(r.assets), r.download.Round(100*time.Millisecond))
			results = append(results, r)
		}
	}
	return results, nil
}

// once is one run: a lab datacenter of n machines, bootstrapped at from,
// rolled out to to with the big set.
func once(ctx context.Context, c config, dir string, build *harness.Build, deb []byte, img v1.Image, n int, peers bool) (result, error) {
	r := result{servers: n, peers: peers}
	ctx, cancel := context.WithTimeout(ctx, c.runTimeout)
	defer cancel()
	mc := map[string]any{
		// Images go to an OCI layout: the bench measures fetching,
		// not containerd unpacking the same layers on 2 cores n times.
		"image-runtime": "oci-dir",
	}
	if !peers {
		mc["peer-listen"] = "off"
	}
	runDir, err := os.MkdirTemp(dir, "run-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(runDir)
	dc, err := harness.Start(harness.Options{Dir: runDir, Build: build, Machines: true, LeaseTTL: c.ttl, SessionTTL: c.ttl,
		DropIns: harness.MachineDropIns(c.ttl), MachineConfig: mc})
	if err != nil {
		return r, err
	}
	defer dc.Close()

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("boot-%d", i)
	}
	if err := dc.Publish(from, harness.PublishOptions{CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		return r, err
	}
	if err := dc.Configure(ctx, "env", "none"); err != nil {
		return r, err
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, id := range ids {
		wg.Go(func() { _, errs[i] = dc.AddMachineFromImage(ctx, id, from) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return r, err
		}
	}
	for _, id := range ids {
		if _, stderr, code := dc.Ferry(ctx, "join", id); code != 0 {
			return r, fmt.Errorf("ferry join %s: %s", id, stderr)
		}
	}
	if err := dc.Configure(ctx, "env", "staging"); err != nil {
		return r, err
	}
	if _, err := dc.WaitState(ctx, from, "completed"); err != nil {
		return r, fmt.Errorf("bootstrap at %s: %w", from, err)
	}

	// The next release carries the big package and image.
	dc.GitHub.AddRelease("acme/big", githubfake.ReleaseSpec{Tag: "v2.0.0", Assets: map[string][]byte{"acme-big_2.0.0_amd64.deb": deb}})
	digest, err := dc.Registry.PushImage("acme/app", "2.0", img)
	if err != nil {
		return r, err
	}
	h := sha256.Sum256(deb)
	if err := dc.EditArtifactSet(func(s *artifacts.Set) {
		s.Debs = []artifacts.Deb{{Name: "acme-big", Repository: "acme/big", Release: "v2.0.0", Asset: "acme-big_2.0.0_amd64.deb", Version: "2.0.0", Size: int64(len(deb)), SHA256: hex.EncodeToString(h[:])}}
		s.Images = []artifacts.Image{{Name: "app", Repository: dc.Registry.Host + "/acme/app", Tag: "2.0", Digest: digest}}
		s.Plan.Steps = []artifacts.Step{
			{Name: "packages", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Debs: &artifacts.DebsAction{}}}},
			{Name: "images", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Images: &artifacts.ImagesAction{}}}},
		}
	}); err != nil {
		return r, err
	}
	r.assets = int64(len(deb)) + imageSize(img)
	if ferry, ok := build.Debs[to]; ok {
		if fi, err := os.Stat(ferry); err == nil {
			r.assets += fi.Size()
		}
	}

	if err := dc.ShapeUplink(c.rate); err != nil {
		return r, err
	}
	before, err := dc.UplinkBytes()
	if err != nil {
		return r, err
	}
	if err := dc.Publish(to, harness.PublishOptions{Prerelease: true, CreatedAt: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}); err != nil {
		return r, err
	}
	if _, err := dc.WaitState(ctx, to, "completed"); err != nil {
		return r, fmt.Errorf("rollout of %s: %w", to, err)
	}
	after, err := dc.UplinkBytes()
	if err != nil {
		return r, err
	}
	r.uplink = after - before
	hist, err := dc.Store.GetHistory(ctx, 1)
	if err != nil || len(hist) == 0 || hist[0].Version != to {
		return r, fmt.Errorf("no history of the rollout of %s (%v)", to, err)
	}
	rec := hist[0]
	r.rollout = rec.Duration()
	for id, steps := range rec.Timeline {
		i := slices.IndexFunc(steps, func(s fleet.StepRecord) bool { return s.Name == "images" })
		if i < 0 || steps[i].End.IsZero() {
			return r, fmt.Errorf("%s has no end of the images step", id)
		}
		r.download = max(r.download, steps[i].End.Sub(rec.StartedAt))
	}
	return r, nil
}

func imageSize(img v1.Image) int64 {
	raw, _ := img.RawManifest()
	m, _ := img.Manifest()
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

func report(c config, results []result) {
	if len(results) == 0 {
		return
	}
	fmt.Printf("uplink %s; package %d MiB, image %d MiB in %d layers, plus ferry's own package\n", c.rate, c.pkgMiB, c.imageMiB, c.layers)
	alone := time.Duration(0)
	for _, r := range results {
		if r.servers == 1 {
			alone = r.download
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "servers\tpeers\tuplink MiB\t× assets\tdownload phase s\t× one server\trollout s\t")
	for _, r := range results {
		ratio := "-"
		if alone > 0 {
			ratio = fmt.Sprintf("%.2f", r.download.Seconds()/alone.Seconds())
		}
		fmt.Fprintf(w, "%d\t%s\t%.1f\t%.2f\t%.1f\t%s\t%.1f\t\n", r.servers, map[bool]string{false: "off", true: "on"}[r.peers],
			float64(r.uplink)/(1<<20), float64(r.uplink)/float64(r.assets), r.download.Seconds(), ratio, r.rollout.Seconds())
	}
	w.Flush()
}
