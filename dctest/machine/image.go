package machine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	_ "embed"

	"golang.org/x/sys/unix"
)

//go:embed image.sh
var imageScript []byte

// DefaultCache is where base images are kept between runs.
const DefaultCache = "/var/cache/ferry-dctest"

// Image returns the base root of the machines, building it with image.sh
// (beside this file) into cache when it is missing or its recipe changed.
// An empty cache is DefaultCache, or FERRY_DCTEST_CACHE when set.
func Image(ctx context.Context, cache string) (string, error) {
	if cache == "" {
		cache = os.Getenv("FERRY_DCTEST_CACHE")
	}
	if cache == "" {
		cache = DefaultCache
	}
	// The script names the image by its own hash: write it where its
	// content, not its path, is what it reads.
	tmp, err := os.MkdirTemp("", Prefix+"image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "image.sh")
	if err := os.WriteFile(script, imageScript, 0o755); err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	// Run through sh, not exec'd itself: a file just written is "text
	// file busy" to exec while another goroutine forks with its descriptor
	// open (parallel scenarios build at once).
	cmd := exec.CommandContext(ctx, "sh", script, cache)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build the machines' base image: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// InstallLayer installs a package over a base image with apt, as an image
// build does, and returns the layer that holds what it changed: an
// overlay's upper directory, which a machine stacks over the base (pass
// Over(layer, base) as NewMachine's base). apt runs in a chroot of the
// overlay, with no network and no systemd running, so the package's
// maintainer scripts enable its units but start nothing. dir must not
// exist yet; it holds the layer and is the caller's to remove.
func InstallLayer(ctx context.Context, base, deb, dir string) (string, error) {
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	// Named as a lab's mounts are, so that a run killed while it is
	// mounted leaves nothing that the next run's Sweep does not remove.
	root := filepath.Join(dir, fmt.Sprintf("%s%d-layer", Prefix, os.Getpid()))
	for _, d := range []string{upper, work, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", base, upper, work)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("overlay for the layer: %w", err)
	}
	if err := installInto(ctx, root, deb); err != nil {
		unmount(root)
		return "", err
	}
	// Machines stack upper under overlays of their own: it must be an
	// upper directory no more, or what they see is undefined.
	if err := unmount(root); err != nil {
		return "", fmt.Errorf("the layer's overlay: %w", err)
	}
	return upper, nil
}

// installInto has apt install the package deb into root, in a chroot.
func installInto(ctx context.Context, root, deb string) error {
	name := "/root/" + filepath.Base(deb)
	data, err := os.ReadFile(deb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
		return err
	}
	// Private mounts, pids and network: nothing of it outlives the command.
	script := `r=$1; shift
mount --rbind /dev "$r/dev" && mount -t proc proc "$r/proc" && mount -t tmpfs tmpfs "$r/run" && mount -t tmpfs tmpfs "$r/tmp" &&
exec chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"`
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--pid", "--fork", "--net", "sh", "-c", script, "sh", root,
		"apt-get", "install", "-y", "-q", "--no-install-recommends", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s over the base image: %v: %s", filepath.Base(deb), err, out)
	}
	return os.Remove(filepath.Join(root, name))
}

// Over is the base of a machine whose root is layer stacked over base.
func Over(layer, base string) string { return layer + ":" + base }
