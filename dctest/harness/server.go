package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/pkg/deb"
	"gopkg.in/yaml.v3"
)

// Server is one virtual boot server.
type Server struct {
	ID      string
	Root    *debtest.Root
	dc      *Datacenter
	Worker  *daemon
	Updater *daemon
	// updaterAddr is where the updater listens: one loopback port for the
	// server's life, so that a browser on its status page finds it again
	// after a restart, as it would on a real server.
	updaterAddr string
	// peerAddr is where the worker serves its peers, for the server's
	// life: the others have it in etcd.
	peerAddr string
}

// StatusURL is the URL of the status page the server's updater serves.
func (s *Server) StatusURL() string { return "http://" + s.updaterAddr + "/" }

// AddServer makes a boot server: a root, the ferry package of version
// installed in it by hand with dpkg (as an operator would), its bootstrap
// config, and ferry-worker and ferry-updater started from that root under a
// supervisor. It does not join the fleet: use `ferry join`.
func (dc *Datacenter) AddServer(ctx context.Context, id, version string) (*Server, error) {
	s, err := dc.InstallServer(ctx, id, version)
	if err != nil {
		return nil, err
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	s.Start()
	return s, nil
}

// InstallServer makes a root and installs the ferry package of version in
// it with dpkg, and nothing more: no config, no daemons.
func (dc *Datacenter) InstallServer(ctx context.Context, id, version string) (*Server, error) {
	pkg, ok := dc.opts.Build.Debs[version]
	if !ok {
		return nil, fmt.Errorf("no package of %s was built", version)
	}
	root, err := debtest.NewRoot(filepath.Join(dc.Dir, "servers", id))
	if err != nil {
		return nil, err
	}
	s := &Server{ID: id, Root: root, dc: dc}
	install := s.installCommand()
	if out, err := exec.CommandContext(ctx, install[0], append(install[1:], pkg)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("install %s on %s: %v\n%s", version, id, err, out)
	}
	return s, nil
}

// Start starts ferry-worker and ferry-updater from the server's root under
// the supervisor, with the server's config file.
func (s *Server) Start() {
	dc, root := s.dc, s.Root
	if s.updaterAddr == "" {
		s.updaterAddr = dc.opts.UpdaterAddrs[s.ID]
	}
	if s.updaterAddr == "" {
		addr, err := freePort()
		if err != nil {
			addr = "127.0.0.1:0" // the page is then hard to find, but the server works
		}
		s.updaterAddr = addr
	}
	env := []string{"CANCELLATION_DELAY_SECONDS=0", "FERRY_CONFIG=" + s.configPath()}
	logs := filepath.Join(root.Dir, "var/log")
	os.MkdirAll(logs, 0o755)
	s.Updater = &daemon{
		name: "ferry-updater", bin: filepath.Join(root.Dir, "usr/sbin/ferry-updater"), env: env, policy: RestartOnFailure,
		args:    []string{"--listen", s.updaterAddr, "--session-ttl", dc.opts.SessionTTL.String()},
		logPath: filepath.Join(logs, "ferry-updater.log"),
	}
	s.Worker = &daemon{
		name: "ferry-worker", bin: filepath.Join(root.Dir, "usr/sbin/ferry-worker"), env: env, policy: RestartAlways,
		args:    []string{"--listen", "127.0.0.1:0", "--artifacts", dc.SetFile, "--lease-ttl", dc.opts.LeaseTTL.String()},
		logPath: filepath.Join(logs, "ferry-worker.log"),
		// The package's postinst restarts both units after an upgrade; in a
		// root without systemd the supervisor does it.
		onExit: func(status int) {
			if status == 75 {
				s.Updater.restart()
			}
		},
	}
	s.Updater.start()
	s.Worker.start()
	dc.mu.Lock()
	dc.Servers[s.ID] = s
	dc.mu.Unlock()
}

// ConfigPath is the server's bootstrap config file.
func (s *Server) ConfigPath() string { return s.configPath() }

func (s *Server) configPath() string { return filepath.Join(s.Root.Dir, "etc/ferry/config.yml") }

// WriteConfig writes the server's bootstrap config, as its operator does.
func (s *Server) WriteConfig() error { return s.writeConfig() }

// installCommand installs into this server's root; confold keeps the
// harness's config over the package's example on upgrades.
func (s *Server) installCommand() []string {
	c := s.Root.InstallCommand()
	return append(c[:len(c)-1], "--force-confdef", "--force-confold", "-i")
}

func (s *Server) writeConfig() error {
	dc := s.dc
	keys, err := dc.writeKeys(filepath.Join(s.Root.Dir, "etc/ferry"))
	if err != nil {
		return err
	}
	cfg := dc.serverConfig(map[string]any{
		"trusted-keys":     keys,
		"server-id":        s.ID,
		"data-dir":         filepath.Join(s.Root.Dir, "var/lib/ferry"),
		"install-command":  s.installCommand(),
		"ignition-dir":     filepath.Join(s.Root.Dir, "usr/share/ferry"),
		"boot-content-dir": filepath.Join(dc.Dir, "boot"),
		// Stands in for systemctl restart: records what it was asked.
		"restart-command": []string{"sh", "-c", `echo "$*" >> ` + filepath.Join(s.Root.Dir, "restarts.log"), "restart"},
	})
	if s.peerAddr == "" {
		if s.peerAddr, err = freePort(); err != nil {
			return err
		}
	}
	cfg["peer-listen"] = s.peerAddr
	if dc.containerd != nil {
		cfg["image-runtime"] = "containerd"
		cfg["containerd-address"] = dc.containerd.Address
		cfg["containerd-namespace"] = s.ID
	} else {
		cfg["image-runtime"] = "oci-dir"
		cfg["oci-dir"] = filepath.Join(s.Root.Dir, "var/lib/ferry/oci")
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(s.configPath(), data, 0o644)
}

// InstalledVersion is the ferry version dpkg has installed in the root.
func (s *Server) InstalledVersion(ctx context.Context) (string, error) {
	return deb.InstalledVersion(ctx, s.Root.AdminDir(), "ferry")
}

// Dpkg is how the root's dpkg database has a package.
func (s *Server) Dpkg(ctx context.Context, pkg string) (deb.State, error) {
	return deb.Query(ctx, s.Root.AdminDir(), pkg)
}

// Audit is what `dpkg --audit` finds wrong in the root ("" when nothing).
func (s *Server) Audit(ctx context.Context) (string, error) {
	return (&deb.Installer{Command: s.installCommand()}).Audit(ctx)
}

// PackageVersion is the version of another package in the root.
func (s *Server) PackageVersion(ctx context.Context, pkg string) (string, error) {
	return deb.InstalledVersion(ctx, s.Root.AdminDir(), pkg)
}

// Marker is the version the last rollout's services step ran at on this
// server, or "" when it never ran.
func (s *Server) Marker() string {
	data, _ := os.ReadFile(filepath.Join(s.dc.markerDir(), s.ID))
	return strings.TrimSpace(string(data))
}

// KillWorker kills ferry-worker with SIGKILL; the supervisor restarts it.
func (s *Server) KillWorker() bool { return s.Worker.kill() }

// KillUpdater kills ferry-updater with SIGKILL; the supervisor restarts it.
func (s *Server) KillUpdater() bool { return s.Updater.kill() }

// StopWorker stops ferry-worker for good.
func (s *Server) StopWorker() { s.Worker.stop() }

// Stop stops both daemons.
func (s *Server) Stop() {
	s.Worker.stop()
	s.Updater.stop()
}

// Log returns a daemon's log.
func (s *Server) Log(name string) string {
	data, _ := os.ReadFile(filepath.Join(s.Root.Dir, "var/log", name+".log"))
	return string(data)
}

// Restarts is what the restart command was asked, one line per call.
func (s *Server) Restarts() []string {
	data, _ := os.ReadFile(filepath.Join(s.Root.Dir, "restarts.log"))
	return strings.Fields(string(data))
}

// Server returns a server by id.
func (dc *Datacenter) Server(id string) (*Server, error) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	s, ok := dc.Servers[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, errNoServer)
	}
	return s, nil
}
