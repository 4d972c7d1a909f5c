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
