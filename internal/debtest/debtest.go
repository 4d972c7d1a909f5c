// Package debtest builds real .deb packages with nfpm and gives each test
// server a dpkg root of its own.
package debtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Package describes a test package.
type Package struct {
	Name    string
	Version string
	// Files maps an absolute install path to its content.
	Files map[string]string
	// Postinst, if set, is the body of a postinst script (sh).
	Postinst string
}

// Build builds the package into dir and returns the .deb's path.
func Build(t testing.TB, dir string, p Package) string {
	t.Helper()
	path, err := BuildErr(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// BuildErr is Build for callers without a testing.TB.
func BuildErr(dir string, p Package) (string, error) {
	src, err := os.MkdirTemp(dir, ".nfpm-src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "name: %s\narch: amd64\nversion: %s\nversion_schema: none\nmaintainer: ferry tests <tests@ferry.invalid>\ndescription: test package\n", p.Name, p.Version)
	if p.Postinst != "" {
		script := filepath.Join(src, "postinst")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nset -e\n"+p.Postinst+"\n"), 0o755); err != nil {
			return "", err
		}
		fmt.Fprintf(&cfg, "scripts:\n  postinstall: %s\n", script)
	}
	dsts := make([]string, 0, len(p.Files))
	for d := range p.Files {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	if len(dsts) > 0 {
		cfg.WriteString("contents:\n")
	}
	for i, d := range dsts {
		f := filepath.Join(src, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(f, []byte(p.Files[d]), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&cfg, "  - src: %s\n    dst: %s\n", f, d)
	}
	cfgPath := filepath.Join(src, "nfpm.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, fmt.Sprintf("%s_%s_amd64.deb", p.Name, p.Version))
	nfpm, err := nfpmPath()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(nfpm, "package", "-f", cfgPath, "-p", "deb", "-t", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("nfpm: %v: %s", err, b)
	}
	return out, nil
}

// nfpmPath is the nfpm binary of the module's tool directive, as `go
// tool` built it. Asked once per process: each `go tool nfpm` would first
// hash nfpm's whole source to see whether its binary is up to date, which
// costs more than building the package.
var nfpmPath = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "tool", "-n", "nfpm").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("go tool -n nfpm: %v: %s", err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
})

// Root is a directory that dpkg treats as a machine's root.
type Root struct {
	Dir string
}

// NewRoot makes an empty dpkg root under dir.
func NewRoot(dir string) (*Root, error) {
	for _, d := range []string{"var/lib/dpkg/updates", "var/lib/dpkg/info", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		return nil, err
	}
	return &Root{Dir: dir}, nil
}

// AdminDir is the root's dpkg database.
func (r *Root) AdminDir() string { return filepath.Join(r.Dir, "var/lib/dpkg") }

// InstallCommand is the argument list that installs a .deb into the root
// (the file is appended), as ferry's install-command.
func (r *Root) InstallCommand() []string {
	return []string{"dpkg", "--root=" + r.Dir, "--admindir=" + r.AdminDir(), "--force-not-root", "--force-script-chrootless", "--log=" + filepath.Join(r.Dir, "dpkg.log"), "-i"}
}

// PackagesEnv names a directory of ferry's own packages that `make test`
// built once for the whole run, one directory per version as `make deb`
// writes it (DIST=dir/VERSION): the package, SHA256SUMS and bin/. Tests
// that need ferry's package take it from there instead of building it.
const PackagesEnv = "FERRY_TEST_PACKAGES"

// FerryPackage is the ferry package of version: the one `make test` built
// for the run when there is one, or one built now with `make deb` into
// dir/VERSION. repoRoot is the repository's top directory.
func FerryPackage(repoRoot, dir, version string) (string, error) {
	name := "ferry_" + version + "_amd64.deb"
	if built := os.Getenv(PackagesEnv); built != "" {
		path := filepath.Join(built, version, name)
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
	}
	out := filepath.Join(dir, version)
	cmd := exec.Command("make", "-C", repoRoot, "deb", "VERSION="+version, "DIST="+out, "BUILD="+filepath.Join(out, "build"), "BIN="+filepath.Join(out, "bin"))
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make deb %s: %v\n%s", version, err, msg)
	}
	return filepath.Join(out, name), nil
}
