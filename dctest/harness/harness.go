// Package harness brings up ferry's virtual datacenter on one machine: a
// multi-process etcd cluster, a GitHub-compatible release server holding
// real, signed ferry packages, an OCI registry, a boot-content source, a
// containerd, and boot servers whose ferry-worker and ferry-updater run from
// the binaries dpkg installed in each server's own root, under a supervisor
// that plays systemd. dctest's scenarios and `make demo` drive it.
package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/dctest/machine"
	"github.com/ferry-cd/ferry/internal/containerdtest"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/internal/registrytest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"gopkg.in/yaml.v3"
)

// Repo is the GitHub repository that publishes ferry in the datacenter.
const Repo = "ferry-cd/ferry"

// oneProc runs a Go program the harness starts (an etcd member, a
// daemon) on one P: datacenters run side by side on 2 cores, a dozen Go
// processes each, and their schedulers' idle spinning took a tenth of
// the suite's CPU time. It changes no behaviour of the programs.
const oneProc = "GOMAXPROCS=1"

// DeadServerGrace is the fleet's dead-server-grace in a datacenter: how
// long a server may have no live worker before the rollout stops.
var DeadServerGrace = Scaled(5 * time.Second)

// Build holds what the harness runs: ferry packages by version, and the
// etcd member helper.
type Build struct {
	// Debs maps a version to its .deb built by `make deb`.
	Debs map[string]string
	// Ferry is an admin CLI binary.
	Ferry string
	// EtcdMember is the ferry-dctest-etcd binary.
	EtcdMember string
	// Dir holds what the build made, and what scenarios share for the
	// whole run (the machines' layers with ferry installed).
	Dir string

	mu     sync.Mutex
	layers map[string]*layer
}

// BuildAll builds the packages of the versions with `make deb`, the admin
// CLI and the etcd member helper, under dir. repoRoot is the repository's
// top directory. Packages built elsewhere can be added to Debs.
func BuildAll(repoRoot, dir string, versions ...string) (*Build, error) {
	return BuildAllWith(repoRoot, dir, nil, versions...)
}

// BuildAllWith is BuildAll that tells progress, when set, what it built
// and how long that took, as it goes: a cold build takes minutes.
func BuildAllWith(repoRoot, dir string, progress func(what string, took time.Duration), versions ...string) (*Build, error) {
	if progress == nil {
		progress = func(string, time.Duration) {}
	}
	b := &Build{Debs: map[string]string{}, Ferry: filepath.Join(dir, "ferry"), EtcdMember: filepath.Join(dir, "ferry-dctest-etcd"), Dir: dir}
	for _, v := range versions {
		began := time.Now()
		deb, err := debtest.FerryPackage(repoRoot, dir, v)
		if err != nil {
			return nil, err
		}
		b.Debs[v] = deb
		progress(filepath.Base(deb), time.Since(began))
	}
	builds := []struct{ bin, pkg string }{{b.EtcdMember, "./dctest/cmd/ferry-dctest-etcd"}}
	// The admin CLI `make deb` built beside the last package serves; a
	// package from elsewhere comes without one, and it is built.
	if cli, ok := cliBeside(b.Debs, versions); ok {
		b.Ferry = cli
	} else {
		builds = append(builds, struct{ bin, pkg string }{b.Ferry, "./cmd/ferry"})
	}
	for _, bp := range builds {
		began := time.Now()
		cmd := exec.Command("go", "build", "-o", bp.bin, bp.pkg)
		cmd.Dir = repoRoot
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s: %v\n%s", bp.pkg, err, msg)
		}
		progress(filepath.Base(bp.bin), time.Since(began))
	}
	return b, nil
}

// cliBeside is the admin CLI in the bin/ that `make deb` wrote beside the
// package of the last version, when it is there.
func cliBeside(debs map[string]string, versions []string) (string, bool) {
	if len(versions) == 0 {
		return "", false
	}
	cli := filepath.Join(filepath.Dir(debs[versions[len(versions)-1]]), "bin", "ferry")
	_, err := os.Stat(cli)
	return cli, err == nil
}

// Options shape a datacenter.
type Options struct {
	Dir         string
	Build       *Build
	EtcdMembers int
	// Timings of the virtual datacenter: short, so that scenarios are fast.
	LeaseTTL   time.Duration
	SessionTTL time.Duration
	// ClientCerts makes etcd serve https and require client certificates;
	// the daemons and the admin CLI get one.
	ClientCerts bool
	// UpdaterAddrs fixes where a server's updater (and its status page)
	// listens, by server id; others get a free loopback port.
	UpdaterAddrs map[string]string
	// Machines makes a lab datacenter: a private network of namespaces
	// where every service has its own address, and boot servers that are
	// systemd machines (AddMachine). It needs root.
	Machines bool
	// DropIns are systemd drop-ins every machine gets, by unit name (for
	// example ferry-worker.service): the few settings a test needs, such
	// as a shorter lease. They never weaken the shipped sandbox.
	DropIns map[string]string
	// MachineConfig adds settings to every machine's bootstrap config
	// (image-runtime, peer-listen).
	MachineConfig map[string]any
}

// Datacenter is a running virtual datacenter.
type Datacenter struct {
	opts      Options
	Dir       string
	Endpoints []string
	Prefix    string
	Etcd      []*EtcdMember
	GitHub    *githubfake.Server
	Registry  *registrytest.Registry
	OSServer  *httptest.Server
	Notes     *Receiver
	// TLS is set when etcd requires client certificates.
	TLS *TLSFiles
	// SetFile is the artifact set the workers roll out.
	SetFile string
	// Client is an etcd client of the test's own, reaching the cluster
	// as the admin host does.
	Client *clientv3.Client
	// Store reads and writes the fleet's keys through Client.
	Store      *storage.Storage
	containerd *containerdtest.Containerd
	ctdDir     string
	net        network
	// base is the machines' base image, in a lab datacenter.
	base string
	key  minisign.PrivateKey
	Pub  minisign.PublicKey

	mu       sync.Mutex
	Servers  map[string]*Server
	Machines map[string]*Machine
}

// Start brings a datacenter up; Close tears it down.
func Start(o Options) (dc *Datacenter, err error) {
	if o.EtcdMembers == 0 {
		o.EtcdMembers = 3
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = Scaled(3 * time.Second)
	}
	if o.SessionTTL == 0 {
		o.SessionTTL = Scaled(2 * time.Second)
	}
	dc = &Datacenter{opts: o, Dir: o.Dir, Prefix: "/ferry/", Servers: map[string]*Server{}, Machines: map[string]*Machine{}, net: loopback{}}
	// A failure returns a nil datacenter: close the one made so far.
	made := dc
	defer func() {
		if err != nil {
			made.Close()
		}
	}()
	if o.Machines {
		if dc.base, err = machine.Image(context.Background(), ""); err != nil {
			return nil, err
		}
		l, err := newLab(o.EtcdMembers)
		if err != nil {
			return nil, err
		}
		dc.net = l
	}
	if o.ClientCerts {
		if dc.TLS, err = newTLSFiles(filepath.Join(o.Dir, "tls")); err != nil {
			return nil, err
		}
	}
	if err := dc.startEtcd(); err != nil {
		return nil, err
	}
	if dc.Client, err = dc.newClient(); err != nil {
		return nil, err
	}
	if dc.Store, err = storage.New(dc.Client, dc.Prefix); err != nil {
		return nil, err
	}
	listeners := map[string]net.Listener{}
	for _, svc := range []struct {
		name, host string
		port       int
	}{{"github", hostGitHub, 80}, {"registry", hostServices, 5000}, {"os", hostServices, 8081}, {"notes", hostServices, 8082}} {
		l, err := dc.net.listen(svc.host, svc.port)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", svc.name, err)
		}
		listeners[svc.name] = l
	}
	dc.GitHub = githubfake.NewOn(listeners["github"])
	dc.Registry = registrytest.NewOn(listeners["registry"])
	dc.Registry.Dial = dc.net.dial
	dc.Notes = newReceiverOn(listeners["notes"])
	dc.OSServer = serve(listeners["os"], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(osContent(r.URL.Path)))
	}))
	// Machines run containerd of their own.
	if _, err := exec.LookPath("containerd"); err == nil && !o.Machines {
		// A short path: containerd's socket must fit in 108 bytes.
		if dc.ctdDir, err = os.MkdirTemp("", "ferry-dc-ctd-"); err != nil {
			return nil, err
		}
		if dc.containerd, err = containerdtest.Start(dc.ctdDir); err != nil {
			return nil, err
		}
	}
	if dc.Pub, dc.key, err = minisign.GenerateKey(nil); err != nil {
		return nil, err
	}
	text, err := dc.key.MarshalText()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(dc.KeyFile(), text, 0o600); err != nil {
		return nil, err
	}
	if err := dc.writeArtifactSet(); err != nil {
		return nil, err
	}
	return dc, nil
}

// KeyFile is the release key's private half, for ferry release publish.
func (dc *Datacenter) KeyFile() string { return filepath.Join(dc.Dir, "release.key") }

func osContent(path string) string { return "os image " + path + "\n" }

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// writeArtifactSet writes the test set: an extra package from a GitHub
// release, two images, boot contents published once for the fleet, and a
// lockstep step that takes a few seconds, so that scenarios can break
// things in the middle of it.
func (dc *Datacenter) writeArtifactSet() error {
	deb, err := debtest.BuildErr(dc.Dir, debtest.Package{Name: "acme-tools", Version: "1.0.0", Files: map[string]string{"/usr/share/acme-tools/version": "1.0.0"}})
	if err != nil {
		return err
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		return err
	}
	dc.GitHub.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v1.0.0", Assets: map[string][]byte{"acme-tools_1.0.0_amd64.deb": data}})
	set := &artifacts.Set{
		Debs:      []artifacts.Deb{{Name: "acme-tools", Repository: "acme/tools", Release: "v1.0.0", Asset: "acme-tools_1.0.0_amd64.deb", Version: "1.0.0", Size: int64(len(data)), SHA256: sum(data)}},
		Ignitions: []artifacts.Ignition{{Source: "ignitions/boot.yml", Role: "boot"}},
		OSImage: &artifacts.OSImage{Channel: "stable", Version: "3760.2.0",
			Kernel: artifacts.File{URL: dc.OSServer.URL + "/kernel", Size: int64(len(osContent("/kernel"))), SHA256: sum([]byte(osContent("/kernel")))},
			Initrd: artifacts.File{URL: dc.OSServer.URL + "/initrd", Size: int64(len(osContent("/initrd"))), SHA256: sum([]byte(osContent("/initrd")))}},
	}
	for _, name := range []string{"dns", "ntp"} {
		d, err := dc.Registry.Push("dctest/"+name, "1.0")
		if err != nil {
			return err
		}
		set.Images = append(set.Images, artifacts.Image{Name: name, Repository: dc.Registry.Host + "/dctest/" + name, Tag: "1.0", Digest: d, Units: []string{name + ".service"}})
	}
	set.Plan.Steps = []artifacts.Step{
		{Name: "packages", Strategy: artifacts.Rolling, Parallel: 1, Actions: []artifacts.Action{{Debs: &artifacts.DebsAction{}}}},
		{Name: "images", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Images: &artifacts.ImagesAction{}}}},
		{Name: "boot", Strategy: artifacts.Leader, Actions: []artifacts.Action{{BootContents: &artifacts.BootContentsAction{}}}},
		{Name: "services", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Run: &artifacts.RunAction{
			Command: "sh", Args: []string{"-c", `sleep 3; echo "$FERRY_VERSION" > "$MARKERS/$FERRY_SERVER"`},
			Env: map[string]string{"MARKERS": dc.markerDir()}}}}},
	}
	if err := set.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dc.markerDir(), 0o755); err != nil {
		return err
	}
	out, err := set.Marshal()
	if err != nil {
		return err
	}
	dc.SetFile = filepath.Join(dc.Dir, "artifacts.yaml")
	return os.WriteFile(dc.SetFile, out, 0o644)
}

// EditArtifactSet changes the artifact set the workers roll out. A worker
// reads it when it starts, so the change reaches the next version the
// fleet upgrades to (its workers restart after the self-upgrade).
func (dc *Datacenter) EditArtifactSet(edit func(*artifacts.Set)) error {
	set, err := artifacts.Load(dc.SetFile)
	if err != nil {
		return err
	}
	edit(set)
	if err := set.Validate(); err != nil {
		return err
	}
	out, err := set.Marshal()
	if err != nil {
		return err
	}
	tmp := dc.SetFile + ".new"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, dc.SetFile); err != nil {
		return err
	}
	dc.mu.Lock()
	defer dc.mu.Unlock()
	for _, m := range dc.Machines {
		if err := m.copySet(); err != nil {
			return err
		}
	}
	return nil
}

// markerDir is where the plan's last step leaves its marker: on the
// harness's disk for process servers, in each machine's own root for
// machines.
func (dc *Datacenter) markerDir() string {
	if dc.opts.Machines {
		return machineMarkers
	}
	return filepath.Join(dc.Dir, "markers")
}

// DialContext connects from the test to the datacenter's network, for an
// etcd or HTTP client of the test's own.
func (dc *Datacenter) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return dc.net.dial(ctx, network, addr)
}

// Close stops every process and server.
func (dc *Datacenter) Close() {
	dc.mu.Lock()
	servers := make([]*Server, 0, len(dc.Servers))
	for _, s := range dc.Servers {
		servers = append(servers, s)
	}
	dc.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.Stop() }()
	}
	wg.Wait()
	// The lab's close powers the machines off and kills whatever still
	// runs in its namespaces, etcd members too.
	defer func() {
		if dc.net != nil {
			dc.net.close()
		}
	}()
	if dc.Client != nil {
		dc.Client.Close()
	}
	for _, m := range dc.Etcd {
		m.Kill()
	}
	if dc.containerd != nil {
		dc.containerd.Stop()
	}
	if dc.ctdDir != "" {
		os.RemoveAll(dc.ctdDir)
	}
	if dc.GitHub != nil {
		dc.GitHub.Close()
	}
	if dc.Registry != nil {
		dc.Registry.Close()
	}
	if dc.Notes != nil {
		dc.Notes.Close()
	}
	if dc.OSServer != nil {
		dc.OSServer.Close()
	}
}

// --- etcd ---

// EtcdMember is one etcd process.
type EtcdMember struct {
	Name, ClientURL, PeerURL, Dir string
	bin, cluster                  string
	net                           network
	host                          string
	tls                           *TLSFiles
	fsync                         bool
	cmd                           *exec.Cmd
	// exited is closed when the process has exited.
	exited chan struct{}
}

func (dc *Datacenter) startEtcd() error {
	members, err := StartEtcdCluster(EtcdOptions{Dir: dc.Dir, Bin: dc.opts.Build.EtcdMember, Members: dc.opts.EtcdMembers, TLS: dc.TLS, net: dc.net})
	if err != nil {
		return err
	}
	dc.Etcd = members
	for _, m := range members {
		dc.Endpoints = append(dc.Endpoints, m.ClientURL)
	}
	return nil
}

// EtcdOptions shape an etcd cluster of ferry-dctest-etcd processes.
type EtcdOptions struct {
	Dir     string // a data directory per member is made under it
	Bin     string // the ferry-dctest-etcd binary
	Members int
	TLS     *TLSFiles // nil: plain http
	// Fsync makes the members sync to disk as production members do.
	Fsync bool
	// net is where the members run (nil: loopback).
	net network
}

// StartEtcdCluster starts an etcd cluster on loopback and returns once
// every member is healthy. Kill the members when done.
func StartEtcdCluster(o EtcdOptions) ([]*EtcdMember, error) {
	var (
		members []*EtcdMember
		peers   []string
	)
	if o.net == nil {
		o.net = loopback{}
	}
	for i := 0; i < o.Members; i++ {
		c, err := listenAddr(o.net, etcdHost(i), 2379)
		if err != nil {
			return nil, err
		}
		p, err := listenAddr(o.net, etcdHost(i), 2380)
		if err != nil {
			return nil, err
		}
		scheme := "http://"
		if o.TLS != nil {
			scheme = "https://"
		}
		m := &EtcdMember{Name: fmt.Sprintf("etcd%d", i), ClientURL: scheme + c, PeerURL: "http://" + p, Dir: filepath.Join(o.Dir, fmt.Sprintf("etcd%d", i)), bin: o.Bin, tls: o.TLS, fsync: o.Fsync, net: o.net, host: etcdHost(i)}
		members = append(members, m)
		peers = append(peers, m.Name+"="+m.PeerURL)
	}
	cluster := strings.Join(peers, ",")
	errs := make(chan error, len(members))
	for _, m := range members {
		m.cluster = cluster
		go func() { errs <- m.start("new") }()
	}
	var failed error
	for range members {
		if err := <-errs; err != nil && failed == nil {
			failed = err
		}
	}
	if failed != nil {
		for _, m := range members {
			m.Kill()
		}
		return nil, failed
	}
	return members, nil
}

// start starts the member and returns once its client URL says it is
// healthy: it serves, and the cluster has a leader and a quorum.
func (m *EtcdMember) start(state string) error {
	args := []string{"--name", m.Name, "--data-dir", m.Dir, "--client-url", m.ClientURL, "--peer-url", m.PeerURL,
		"--initial-cluster", m.cluster, "--initial-cluster-state", state}
	if m.fsync {
		args = append(args, "--fsync")
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: m.net.dial}}
	if m.tls != nil {
		args = append(args, "--cert-file", m.tls.ServerCert, "--key-file", m.tls.ServerKey, "--trusted-ca-file", m.tls.CA)
		tlsCfg, err := m.tls.ClientConfig()
		if err != nil {
			return err
		}
		client.Transport = &http.Transport{TLSClientConfig: tlsCfg, DialContext: m.net.dial}
	}
	cmd := m.net.command(context.Background(), m.host, m.bin, args...)
	cmd.Env = append(os.Environ(), oneProc)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &lockedWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func() { cmd.Wait(); close(m.exited) }()
	deadline := time.After(90 * time.Second)
	for {
		if m.healthy(client) {
			return nil
		}
		select {
		case <-m.exited:
			return fmt.Errorf("etcd member %s exited: %s", m.Name, out.String())
		case <-deadline:
			return fmt.Errorf("etcd member %s not healthy after 90s: %s", m.Name, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// healthy asks the member's /health endpoint.
func (m *EtcdMember) healthy(client *http.Client) bool {
	resp, err := client.Get(m.ClientURL + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&h) == nil && h.Health == "true"
}

// Kill kills the member with SIGKILL.
func (m *EtcdMember) Kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		<-m.exited
		m.cmd = nil
	}
}

// Running reports whether the member's process runs.
func (m *EtcdMember) Running() bool { return m.cmd != nil }

// Restart starts a killed member again with its data.
func (m *EtcdMember) Restart() error { return m.start("existing") }

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// --- releases ---

// PublishOptions spoil a release on purpose.
type PublishOptions struct {
	Tag        string // default release-<version>
	Prerelease bool
	Corrupt    bool // the .deb does not match SHA256SUMS or the manifest
	WrongKey   bool // everything is signed by a key the fleet does not trust
	CreatedAt  time.Time
	// Deb replaces the package built for the version, e.g. with one from
	// GatedPackage.
	Deb string
	// Channel is the manifest's channel; default the one the tag and
	// Prerelease say (test, staging or production).
	Channel string
	// SignedAt is when the manifest was made (default now), so that it can
	// have expired.
	SignedAt time.Time
	// Bigger serves a package this much larger than the signed one while
	// GitHub announces the signed size.
	Bigger int
}

// Publish puts a ferry release on the GitHub fake: the package of version,
// SHA256SUMS and its signature, and the signed manifest of its channel.
func (dc *Datacenter) Publish(version string, o PublishOptions) error {
	path, ok := dc.opts.Build.Debs[version]
	if o.Deb != "" {
		path, ok = o.Deb, true
	}
	if !ok {
		return fmt.Errorf("no package of %s was built", version)
	}
	if o.Tag == "" {
		o.Tag = release.PrefixRelease + version
	}
	if o.Channel == "" {
		o.Channel = release.ChannelOf(&release.Release{Tag: o.Tag, Prerelease: o.Prerelease})
	}
	if o.SignedAt.IsZero() {
		o.SignedAt = time.Now()
	}
	key := dc.key
	if o.WrongKey {
		var err error
		if _, key, err = minisign.GenerateKey(nil); err != nil {
			return err
		}
	}
	assets, err := release.SignedAssets(version, o.Channel, path, key, o.SignedAt, 0)
	if err != nil {
		return err
	}
	name := release.DebAsset(version)
	signedSize := int64(len(assets[name]))
	if o.Corrupt {
		deb := append([]byte(nil), assets[name]...)
		deb[len(deb)-100] ^= 0xff
		assets[name] = deb
	}
	if o.Bigger > 0 {
		assets[name] = append(append([]byte(nil), assets[name]...), make([]byte, o.Bigger)...)
	}
	dc.GitHub.AddRelease(Repo, githubfake.ReleaseSpec{Tag: o.Tag, Prerelease: o.Prerelease, CreatedAt: o.CreatedAt, Assets: assets})
	if o.Bigger > 0 {
		dc.GitHub.Misannounce(Repo, o.Tag, name, signedSize)
	}
	return nil
}

// writeKeys writes dir/trusted-keys, holding the datacenter's release key,
// as an operator installs it on a server.
func (dc *Datacenter) writeKeys(dir string) (string, error) {
	keys := filepath.Join(dir, "trusted-keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		return "", err
	}
	return keys, os.WriteFile(filepath.Join(keys, "release.pub"), []byte("untrusted comment: dctest release key\n"+dc.Pub.String()+"\n"), 0o644)
}

// GatedPackage writes into dir a copy of the package deb whose postinst
// first waits until the file gate exists, and returns its path. While it
// waits, dpkg holds its lock and has the package half-configured: the
// moment between unpack and configure, made as long as a scenario needs.
func GatedPackage(deb, gate, dir string) (string, error) {
	tree, err := os.MkdirTemp(dir, "gated-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tree)
	if out, err := exec.Command("dpkg-deb", "-R", deb, tree).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -R: %v: %s", err, out)
	}
	script := filepath.Join(tree, "DEBIAN", "postinst")
	body, err := os.ReadFile(script)
	if err != nil {
		return "", err
	}
	shebang, rest, _ := strings.Cut(string(body), "\n")
	wait := fmt.Sprintf("while [ ! -e %q ]; do sleep 0.1; done\n", gate)
	if err := os.WriteFile(script, []byte(shebang+"\n"+wait+rest), 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "gated-"+filepath.Base(deb))
	// gzip as the package itself has, at its fastest: dpkg-deb's own
	// default, xz, took 43 s of CPU time for ferry's 95 MB.
	if msg, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", tree, out).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -b: %v: %s", err, msg)
	}
	return out, nil
}

// --- the admin CLI ---

// FerryCommand prepares the admin CLI against the datacenter.
func (dc *Datacenter) FerryCommand(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--config", filepath.Join(dc.Dir, "admin.yml")}, args...)
	return dc.net.command(ctx, hostAdmin, dc.opts.Build.Ferry, all...)
}

// Ferry runs the admin CLI against the datacenter.
func (dc *Datacenter) Ferry(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	cmd := dc.FerryCommand(ctx, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), exitStatus(err)
}

// Configure writes the admin config and sets the fleet's configuration.
func (dc *Datacenter) Configure(ctx context.Context, kv ...string) error {
	keys, err := dc.writeKeys(dc.Dir)
	if err != nil {
		return err
	}
	admin, _ := yaml.Marshal(dc.etcdConfig(map[string]any{"trusted-keys": keys, "github-api-url": dc.GitHub.APIURL()}))
	if err := os.WriteFile(filepath.Join(dc.Dir, "admin.yml"), admin, 0o644); err != nil {
		return err
	}
	base := []string{
		"github-repo", Repo,
		"check-update-interval", "1s", "dead-server-grace", DeadServerGrace.String(), "worker-timeout", "10m",
		"notify-url", dc.Notes.URL(),
	}
	kv = append(base, kv...)
	for i := 0; i < len(kv); i += 2 {
		if _, stderr, code := dc.Ferry(ctx, "config", "set", kv[i], kv[i+1]); code != 0 {
			return fmt.Errorf("ferry config set %s: %s", kv[i], stderr)
		}
	}
	return nil
}

// serverConfig adds to a boot server's bootstrap config how to reach etcd
// and GitHub, and what a lab server takes: every channel, since the
// scenarios follow test builds (env dev) as well as staging and production
// ones.
func (dc *Datacenter) serverConfig(cfg map[string]any) map[string]any {
	cfg["channels"] = []string{"test", "staging", "production"}
	cfg["github-api-url"] = dc.GitHub.APIURL()
	return dc.etcdConfig(cfg)
}

// etcdConfig adds to a bootstrap config how to reach etcd.
func (dc *Datacenter) etcdConfig(cfg map[string]any) map[string]any {
	cfg["endpoints"], cfg["prefix"] = dc.Endpoints, dc.Prefix
	if dc.TLS != nil {
		cfg["tls-ca-file"], cfg["tls-cert-file"], cfg["tls-key-file"] = dc.TLS.CA, dc.TLS.ClientCert, dc.TLS.ClientKey
	}
	return cfg
}

// Status is `ferry -o json status`.
type Status struct {
	State   string `json:"state"`
	Request *struct {
		Version    string   `json:"version"`
		Servers    []string `json:"servers"`
		Stop       bool     `json:"stop"`
		Reason     string   `json:"reason"`
		StopReason string   `json:"stop_reason"`
		StartedAt  string   `json:"started_at"`
		FinishedAt string   `json:"finished_at"`
	} `json:"request"`
	Servers []struct {
		ID     string `json:"id"`
		Alive  bool   `json:"alive"`
		Status *struct {
			Version  string `json:"version"`
			Step     int    `json:"step"`
			StepName string `json:"step_name"`
			Phase    string `json:"phase"`
			Cond     string `json:"cond"`
			Message  string `json:"message"`
		} `json:"status"`
	} `json:"servers"`
}

// Status reads the fleet's status through the CLI.
func (dc *Datacenter) Status(ctx context.Context) (*Status, error) {
	out, stderr, code := dc.Ferry(ctx, "-o", "json", "status")
	if code != 0 {
		return nil, fmt.Errorf("ferry status: %s", stderr)
	}
	var s Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// newClient connects to the cluster from the admin host.
func (dc *Datacenter) newClient() (*clientv3.Client, error) {
	ec := clientv3.Config{Endpoints: dc.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		// On a lab network the test reaches etcd from the admin host.
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dc.net.dial(ctx, "tcp", addr)
		})}}
	if dc.TLS != nil {
		var err error
		if ec.TLS, err = dc.TLS.ClientConfig(); err != nil {
			return nil, err
		}
	}
	return clientv3.New(ec)
}

// Changes signals after every change under the fleet's prefix in etcd,
// several changes at once as one, until ctx ends; and every few seconds
// besides, so that a wait also looks again while etcd cannot tell it
// anything (a member down, a watch being restored). Waits that ask the
// CLI use it instead of asking it many times a second.
func (dc *Datacenter) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	events := dc.Client.Watch(clientv3.WithRequireLeader(ctx), dc.Prefix, clientv3.WithPrefix())
	go func() {
		tick := time.NewTicker(Scaled(3 * time.Second))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-events:
				if !ok {
					// Closed (leader lost, compaction): watch anew after a pause.
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					events = dc.Client.Watch(clientv3.WithRequireLeader(ctx), dc.Prefix, clientv3.WithPrefix())
				}
				signal()
			case <-tick.C:
				signal()
			}
		}
	}()
	return out
}

// WaitState waits until the rollout to version reaches one of the states;
// for completed and stopped, also until the updater recorded the outcome.
// The answer is `ferry status`'s: after each change in etcd, the wait
// reads the fleet itself, and asks the CLI once that says it is there
// (the CLI costs a process, which many times a second adds up).
func (dc *Datacenter) WaitState(ctx context.Context, version string, states ...string) (*Status, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := dc.Changes(ctx)
	reached := func(state, v string, finished bool) bool {
		for _, st := range states {
			recorded := finished || (st != "completed" && st != "stopped")
			if v == version && state == st && recorded {
				return true
			}
		}
		return false
	}
	var last *Status
	for {
		snap, err := dc.Store.Snapshot(ctx)
		// A snapshot that cannot be read leaves the answer to the CLI.
		if err != nil || dc.snapshotReached(snap, reached) {
			s, err := dc.Status(ctx)
			if err == nil {
				last = s
				if s.Request != nil && reached(s.State, s.Request.Version, s.Request.FinishedAt != "") {
					return s, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if s, err := dc.Status(context.Background()); err == nil {
				last = s
			}
			b, _ := json.Marshal(last)
			return nil, fmt.Errorf("rollout to %s never reached %v; last status: %s", version, states, b)
		case <-changes:
		}
	}
}

// snapshotReached applies reached to the fleet as the CLI's view of snap
// has it.
func (dc *Datacenter) snapshotReached(snap *fleet.Snapshot, reached func(state, version string, finished bool) bool) bool {
	v := fleetview.New(snap)
	return v.Request != nil && reached(v.State, v.Request.Version, !v.Request.FinishedAt.IsZero())
}

// --- notifications ---

// Receiver records Slack-compatible notifications.
type Receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	Text []string
}

// NewReceiver starts a receiver on loopback.
func NewReceiver() *Receiver {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	return newReceiverOn(l)
}

func newReceiverOn(l net.Listener) *Receiver {
	r := &Receiver{}
	r.srv = serve(l, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m struct {
			Text string `json:"text"`
		}
		if json.NewDecoder(req.Body).Decode(&m) == nil {
			r.mu.Lock()
			r.Text = append(r.Text, m.Text)
			r.mu.Unlock()
		}
	}))
	return r
}

// URL is where notifications go.
func (r *Receiver) URL() string { return r.srv.URL }

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

// All is every notification received so far.
func (r *Receiver) All() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.Text...)
}

// Has reports whether a notification contains every fragment.
func (r *Receiver) Has(fragments ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, t := range r.Text {
		for _, f := range fragments {
			if !strings.Contains(t, f) {
				continue next
			}
		}
		return true
	}
	return false
}

var errNoServer = errors.New("no such server")
