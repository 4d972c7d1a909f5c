// Package deb installs Debian packages with the configured install command.
package deb

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/command"
)

// DefaultTimeout bounds one installation.
const DefaultTimeout = 30 * time.Minute

// Installer runs the install command with a .deb file as its last argument.
type Installer struct {
	// Command is the argument list, e.g. [systemd-run --wait --quiet dpkg -i]
	// in production or [dpkg --root=R --admindir=R/var/lib/dpkg
	// --force-not-root --force-script-chrootless -i] in dctest.
	Command []string
	Timeout time.Duration
	Log     *slog.Logger
}

// Install installs file. The run is detached from ctx's cancellation: a
// dpkg killed half way leaves a package half-configured, which is worse
// than a shutdown that waits for it. Only Timeout bounds it.
func (i *Installer) Install(ctx context.Context, file string) error {
	if len(i.Command) == 0 {
		return fmt.Errorf("install-command is empty")
	}
	timeout := i.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	argv := append(append([]string(nil), i.Command...), file)
	log := i.Log
	if log == nil {
		log = slog.Default()
	}
	if err := command.Run(ictx, command.Spec{Argv: argv}, log); err != nil {
		return fmt.Errorf("install %s: %w", file, err)
	}
	return nil
}

// Field reads a control field (Package, Version, ...) of a .deb file.
func Field(ctx context.Context, file, name string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", file, name).Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-deb -f %s %s: %w", file, name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// InstalledVersion returns the version of a package dpkg has installed in
// admindir ("" uses the system's), or "" when it is not installed.
func InstalledVersion(ctx context.Context, admindir, pkg string) (string, error) {
	args := []string{"-W", "-f", "${Status}\t${Version}", pkg}
	if admindir != "" {
		args = append([]string{"--admindir=" + admindir}, args...)
	}
	out, err := exec.CommandContext(ctx, "dpkg-query", args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
			return "", nil
		}
		return "", fmt.Errorf("dpkg-query %s: %w", pkg, err)
	}
	status, ver, _ := strings.Cut(string(out), "\t")
	if !strings.HasSuffix(status, " installed") {
		return "", nil
	}
	return ver, nil
}
