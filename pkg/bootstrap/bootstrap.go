// Package bootstrap reads the bootstrap configuration that every ferry
// program needs before it can reach etcd: /etc/ferry/config.yml, overridden
// by FERRY_* environment variables, overridden by command-line flags.
package bootstrap

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
)

// DefaultPath is where the bootstrap file lives on a boot server.
const DefaultPath = "/etc/ferry/config.yml"

// Defaults.
const (
	DefaultEndpoint = "http://127.0.0.1:2379"
	DefaultDataDir  = "/var/lib/ferry"
	// DefaultPeerListen is where a worker serves its peers.
	DefaultPeerListen = ":9714"
)

// Config is the bootstrap configuration.
type Config struct {
	Endpoints   List   `yaml:"endpoints"`
	TLSCertFile string `yaml:"tls-cert-file"`
	TLSKeyFile  string `yaml:"tls-key-file"`
	TLSCAFile   string `yaml:"tls-ca-file"`
	// Username and PasswordFile log in to an etcd with auth enabled; the
	// password is read from the file (mode 0600 or 0640), never given
	// inline.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password-file"`
	// CredentialsDir holds secrets of the fleet config that this server
	// keeps off etcd, one file each, named after the key (github-token,
	// webhook-secret, notify-url, proxy); default systemd's
	// $CREDENTIALS_DIRECTORY.
	CredentialsDir string `yaml:"credentials-dir"`
	// GitHubAPIURL is the GitHub REST API this server asks for releases
	// and sends its token to; default https://api.github.com/. It is
	// here, never in etcd, so that whoever writes etcd cannot have the
	// token sent to their own host.
	GitHubAPIURL string `yaml:"github-api-url"`
	Prefix       string `yaml:"prefix"`
	ServerID     string `yaml:"server-id"`
	DataDir      string `yaml:"data-dir"`
	// InstallCommand installs a .deb; the file is appended as the last
	// argument. It is run as an argument list, never through a shell.
	InstallCommand List `yaml:"install-command"`
	// TrustedKeys is the directory of release public keys (*.pub), or one
	// key file: the trust root, on this server's disk and never in etcd.
	TrustedKeys string `yaml:"trusted-keys"`
	// Channels are the release channels this server takes (test, staging,
	// production); default production. The fleet's env in etcd may narrow
	// them, never widen them.
	Channels List `yaml:"channels"`
	// AllowUnsigned, a lab switch, installs releases without a signed
	// manifest. Only this file, a flag or the environment can set it.
	AllowUnsigned string `yaml:"allow-unsigned"`

	// Where rollout actions put things.
	ImageRuntime          string `yaml:"image-runtime"`
	ContainerdAddress     string `yaml:"containerd-address"`
	ContainerdNamespace   string `yaml:"containerd-namespace"`
	ContainerdSnapshotter string `yaml:"containerd-snapshotter"`
	OCIDir                string `yaml:"oci-dir"`
	BootContentDir        string `yaml:"boot-content-dir"`
	IgnitionDir           string `yaml:"ignition-dir"`
	RestartCommand        List   `yaml:"restart-command"`

	// PeerListen is where the worker serves what it verified to the other
	// boot servers ("off": it neither serves nor asks them); PeerURL is
	// the URL they reach it at (default: http://, this server's address
	// towards etcd, and PeerListen's port).
	PeerListen string `yaml:"peer-listen"`
	PeerURL    string `yaml:"peer-url"`
	// ContainerdHostsDir is containerd's registry config_path: when set,
	// the worker writes a hosts.toml there for each registry of the
	// artifact set, so that containerd's own pulls of the release's images
	// ask the peer layer first.
	ContainerdHostsDir string `yaml:"containerd-hosts-dir"`

	// Labels are this server's labels (e.g. rack: r1), which its worker
	// announces in etcd when it starts, for plan steps' selector and
	// spread. Only the file sets them.
	Labels map[string]string `yaml:"labels"`

	// Path is the file the configuration was read from, or "" when no file
	// was read.
	Path string `yaml:"-"`
}

// List is a list setting; the file may give a single value as a plain
// string (endpoints: http://127.0.0.1:2379).
type List []string

// UnmarshalYAML takes a sequence of strings or one string.
func (l *List) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = List{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
	}
	*l = s
	return nil
}

// Default returns the configuration used when nothing is set.
func Default() *Config {
	return &Config{
		Endpoints:    []string{DefaultEndpoint},
		Prefix:       fleet.DefaultPrefix,
		GitHubAPIURL: fleet.DefaultGitHubAPIURL,
		DataDir:      DefaultDataDir,
		// systemd-run puts dpkg in a unit of its own, so that the package's
		// prerm stopping ferry-worker cannot kill the dpkg run that the
		// worker started.
		InstallCommand:      []string{"systemd-run", "--wait", "--pipe", "--quiet", "--collect", "dpkg", "--force-confdef", "--force-confold", "-i"},
		ImageRuntime:        "containerd",
		ContainerdAddress:   "/run/containerd/containerd.sock",
		ContainerdNamespace: "ferry",
		OCIDir:              DefaultDataDir + "/oci",
		BootContentDir:      "/srv/ferry/boot",
		IgnitionDir:         "/usr/share/ferry",
		RestartCommand:      []string{"systemctl", "restart"},
		TrustedKeys:         trust.DefaultKeysDir,
		Channels:            []string{trust.ChannelProduction},
		AllowUnsigned:       "false",
		PeerListen:          DefaultPeerListen,
	}
}

// PeersOff is the peer-listen that switches the peer layer off.
const PeersOff = "off"

// AdvertisedPeerURL is the URL the other boot servers reach this one's
// peer server at: peer-url, or peer-listen when it names a host, or else
// the address this server reaches its first etcd endpoint from (the first
// non-loopback address when that is loopback), with peer-listen's port.
func (c *Config) AdvertisedPeerURL() (string, error) {
	if c.PeerURL != "" {
		return strings.TrimSuffix(c.PeerURL, "/"), nil
	}
	host, port, err := net.SplitHostPort(c.PeerListen)
	if err != nil {
		return "", fmt.Errorf("peer-listen %q: %w", c.PeerListen, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return "http://" + net.JoinHostPort(host, port), nil
	}
	ip, err := c.localAddress()
	if err != nil {
		return "", fmt.Errorf("cannot tell the address the other boot servers reach this one at (%w): set peer-url in %s", err, c.where())
	}
	return "http://" + net.JoinHostPort(ip.String(), port), nil
}

// localAddress is the address this server sends from towards its first
// etcd endpoint; when that is loopback (an etcd member on every boot
// server), the first address of an interface that is up and not loopback.
func (c *Config) localAddress() (net.IP, error) {
	if u, err := url.Parse(c.Endpoints[0]); err == nil {
		// A UDP "connection" sends nothing: it only picks the route.
		if conn, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), cmp.Or(u.Port(), "2379"))); err == nil {
			ip := conn.LocalAddr().(*net.UDPAddr).IP
			conn.Close()
			if !ip.IsLoopback() {
				return ip, nil
			}
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				return n.IP, nil
			}
		}
	}
	return nil, errors.New("no interface other than loopback has an address")
}

// Unsigned reports whether the lab switch allow-unsigned is on.
func (c *Config) Unsigned() bool {
	b, _ := strconv.ParseBool(c.AllowUnsigned)
	return b
}

// field ties one setting to its YAML key, flag and environment variable.
type field struct {
	name string // YAML key and flag name
	help string
	ptr  func(c *Config) *string
	list func(c *Config) *List // for list settings, given comma-separated
	// admin settings are those the admin CLI uses; its --help shows no
	// other (it still takes them, so that it can share a server's file).
	admin bool
}

var fields = []field{
	{name: "endpoints", admin: true, help: "etcd endpoints, comma-separated (default " + DefaultEndpoint + ")", list: func(c *Config) *List { return &c.Endpoints }},
	{name: "tls-cert-file", admin: true, help: "client certificate for etcd", ptr: func(c *Config) *string { return &c.TLSCertFile }},
	{name: "tls-key-file", admin: true, help: "client key for etcd", ptr: func(c *Config) *string { return &c.TLSKeyFile }},
	{name: "tls-ca-file", admin: true, help: "CA bundle that signs the etcd servers' certificates", ptr: func(c *Config) *string { return &c.TLSCAFile }},
	{name: "username", admin: true, help: "etcd user, for an etcd with authentication enabled", ptr: func(c *Config) *string { return &c.Username }},
	{name: "password-file", admin: true, help: "file holding the etcd user's password (not readable by others; e.g. systemd's $CREDENTIALS_DIRECTORY/etcd-password)", ptr: func(c *Config) *string { return &c.PasswordFile }},
	{name: "credentials-dir", help: "directory of local secrets (files github-token, webhook-secret, notify-url, proxy) that take the place of etcd's (default $CREDENTIALS_DIRECTORY, as systemd's LoadCredential= sets it)", ptr: func(c *Config) *string { return &c.CredentialsDir }},
	{name: "github-api-url", admin: true, help: "GitHub REST API that this server asks for releases and sends its token to; for GitHub Enterprise https://HOST/api/v3/ (default " + fleet.DefaultGitHubAPIURL + ")", ptr: func(c *Config) *string { return &c.GitHubAPIURL }},
	{name: "prefix", admin: true, help: "etcd key prefix (default " + fleet.DefaultPrefix + ")", ptr: func(c *Config) *string { return &c.Prefix }},
	{name: "server-id", help: "this boot server's id, as given to ferry join", ptr: func(c *Config) *string { return &c.ServerID }},
	{name: "data-dir", help: "directory for downloads and state (default " + DefaultDataDir + ")", ptr: func(c *Config) *string { return &c.DataDir }},
	{name: "image-runtime", help: "where images go: containerd or oci-dir (default containerd)", ptr: func(c *Config) *string { return &c.ImageRuntime }},
	{name: "containerd-address", help: "containerd socket (default /run/containerd/containerd.sock)", ptr: func(c *Config) *string { return &c.ContainerdAddress }},
	{name: "containerd-namespace", help: "containerd namespace of ferry's images (default ferry)", ptr: func(c *Config) *string { return &c.ContainerdNamespace }},
	{name: "containerd-snapshotter", help: "snapshotter that unpacks images (default: containerd's)", ptr: func(c *Config) *string { return &c.ContainerdSnapshotter }},
	{name: "oci-dir", help: "OCI image layout directory, for image-runtime oci-dir", ptr: func(c *Config) *string { return &c.OCIDir }},
	{name: "boot-content-dir", help: "netboot content directory (default /srv/ferry/boot)", ptr: func(c *Config) *string { return &c.BootContentDir }},
	{name: "ignition-dir", help: "directory of the ignition templates (default /usr/share/ferry)", ptr: func(c *Config) *string { return &c.IgnitionDir }},
	{name: "restart-command", help: "command that restarts units, comma-separated; the units are appended (default systemctl,restart)", list: func(c *Config) *List { return &c.RestartCommand }},
	{name: "trusted-keys", admin: true, help: "directory of trusted release public keys (*.pub), or one key file (default " + trust.DefaultKeysDir + ")", ptr: func(c *Config) *string { return &c.TrustedKeys }},
	{name: "channels", help: "release channels this server takes, comma-separated: test, staging, production (default production); the fleet's env can narrow them, never widen them", list: func(c *Config) *List { return &c.Channels }},
	{name: "allow-unsigned", admin: true, help: "lab switch: install releases without a signed manifest; never in production (default false)", ptr: func(c *Config) *string { return &c.AllowUnsigned }},
	{name: "peer-listen", help: "address where the worker serves the packages and image blobs it verified to the other boot servers, read-only; off: it neither serves nor asks them, and fetches everything upstream (default " + DefaultPeerListen + ")", ptr: func(c *Config) *string { return &c.PeerListen }},
	{name: "peer-url", help: "URL the other boot servers reach this one's peer-listen at (default: http://, the address this server reaches etcd from, and peer-listen's port)", ptr: func(c *Config) *string { return &c.PeerURL }},
	{name: "containerd-hosts-dir", help: "containerd's registry config_path (such as /etc/containerd/certs.d): the worker writes there a hosts.toml for each registry of the artifact set, so that containerd's own pulls by digest ask the peer layer first; a hosts.toml ferry did not write is left alone (default: none written)", ptr: func(c *Config) *string { return &c.ContainerdHostsDir }},
	{name: "install-command", help: "command that installs a .deb, comma-separated; the file is appended (default systemd-run,--wait,--pipe,--quiet,--collect,dpkg,--force-confdef,--force-confold,-i); it must end with -i", list: func(c *Config) *List { return &c.InstallCommand }},
}

// EnvName returns the environment variable of a setting: FERRY_SERVER_ID for
// server-id.
func EnvName(name string) string {
	return "FERRY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Flags holds the command-line flags of the bootstrap settings.
type Flags struct {
	// defaultPath replaces DefaultPath in tests.
	defaultPath string
	fs          *pflag.FlagSet
	path        string
	values      map[string]*string
}

// Register adds --config and one flag per setting to fs. For the admin
// CLI (admin), the settings only daemons use are hidden from --help.
func (f *Flags) Register(fs *pflag.FlagSet, admin bool) {
	f.fs = fs
	f.values = make(map[string]*string, len(fields))
	fs.StringVar(&f.path, "config", DefaultPath, "bootstrap config file (env FERRY_CONFIG)")
	for _, fd := range fields {
		f.values[fd.name] = fs.String(fd.name, "", fd.help+" (env "+EnvName(fd.name)+")")
		if admin && !fd.admin {
			fs.MarkHidden(fd.name)
		}
	}
}

// Load builds the configuration: defaults, then the file, then FERRY_*
// variables from getenv, then the flags that were given. The default file
// may be absent; a file named by --config or FERRY_CONFIG must exist.
func (f *Flags) Load(getenv func(string) string) (*Config, error) {
	path, explicit := DefaultPath, false
	if f.defaultPath != "" {
		path = f.defaultPath
	}
	if v := getenv("FERRY_CONFIG"); v != "" {
		path, explicit = v, true
	}
	if f.fs != nil && f.fs.Changed("config") {
		path, explicit = f.path, true
	}

	cfg := Default()
	if err := cfg.readFile(path, explicit); err != nil {
		return nil, err
	}
	for _, fd := range fields {
		if v := getenv(EnvName(fd.name)); v != "" {
			cfg.set(fd, v)
		}
	}
	if f.fs != nil {
		for _, fd := range fields {
			if f.fs.Changed(fd.name) {
				cfg.set(fd, *f.values[fd.name])
			}
		}
	}
	if cfg.CredentialsDir == "" {
		cfg.CredentialsDir = getenv("CREDENTIALS_DIRECTORY")
	}
	if cfg.ServerID == "" {
		cfg.ServerID = shortHostname()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SecretNames are the fleet config keys a server may keep in its
// credentials-dir instead of etcd.
var SecretNames = []string{"github-token", "webhook-secret", "notify-url", "proxy"}

// Local is what this server's own disk says of the fleet config: its
// github-api-url, and the secrets in its credentials-dir (LocalSecrets).
// Each call reads the files again.
func (c *Config) Local() map[string]string {
	out := c.LocalSecrets()
	out[fleet.ConfigGitHubAPIURL] = c.GitHubAPIURL
	return out
}

// LocalSecrets reads the secrets in CredentialsDir, by key; files that are
// absent are left out. Each call reads the files again, so that a rotated
// secret takes effect without a restart.
func (c *Config) LocalSecrets() map[string]string {
	out := map[string]string{}
	if c.CredentialsDir == "" {
		return out
	}
	for _, name := range SecretNames {
		if v, err := readSecretFile(filepath.Join(c.CredentialsDir, name)); err == nil && v != "" {
			out[name] = v
		}
	}
	return out
}

func (c *Config) set(fd field, v string) {
	if fd.list != nil {
		*fd.list(c) = splitList(v)
		return
	}
	*fd.ptr(c) = v
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *Config) readFile(path string, explicit bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config file %s does not exist: create it (see /usr/share/doc/ferry/operator-guide.md) or point --config elsewhere", path)
	}
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file decodes to io.EOF; it simply sets nothing.
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %s (known keys: %s)", path, yamlProblem(err), knownKeys())
	}
	c.Path = path
	return nil
}

var (
	unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)
	wrongKind    = regexp.MustCompile(`cannot unmarshal !!(\w+) (?:\x60[^\x60]*\x60 )?into (\S+)`)
)

// yamlProblem words a YAML decoding error with the file's key names, never
// Go's type names.
func yamlProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	msg = unknownField.ReplaceAllString(msg, "unknown key \"$1\"")
	return wrongKind.ReplaceAllStringFunc(msg, func(m string) string {
		parts := wrongKind.FindStringSubmatch(m)
		want := map[string]string{"string": "a string", "bool": "true or false", "bootstrap.List": "a string or a list of strings", "[]string": "a list of strings"}[parts[2]]
		if want == "" {
			want = "another kind of value"
		}
		return fmt.Sprintf("a %s where %s belongs", map[string]string{"map": "mapping", "seq": "list", "str": "string"}[parts[1]], want)
	})
}

func knownKeys() string {
	names := make([]string, len(fields))
	for i, fd := range fields {
		names[i] = fd.name
	}
	return strings.Join(names, ", ")
}

func (c *Config) where() string {
	if c.Path == "" {
		return "flags or environment"
	}
	return c.Path + ", flags or environment"
}

func (c *Config) validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("endpoints: no etcd endpoint is set (in %s); e.g. %s", c.where(), DefaultEndpoint)
	}
	for _, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("endpoints: %q is not an etcd URL (in %s); e.g. https://10.0.0.1:2379", ep, c.where())
		}
	}
	if u, err := url.Parse(c.GitHubAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("github-api-url: %q is not an http(s) URL without user info (in %s); e.g. %s, or https://HOST/api/v3/ for GitHub Enterprise", c.GitHubAPIURL, c.where(), fleet.DefaultGitHubAPIURL)
	}
	p, err := fleet.NormalizePrefix(c.Prefix)
	if err != nil {
		return fmt.Errorf("%w (in %s)", err, c.where())
	}
	c.Prefix = p
	if (c.Username == "") != (c.PasswordFile == "") {
		return fmt.Errorf("username and password-file must be set together (in %s)", c.where())
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("tls-cert-file and tls-key-file must be set together (in %s)", c.where())
	}
	for _, f := range []string{c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("TLS file: %w", err)
		}
	}
	if c.ServerID != "" {
		if err := fleet.ValidateServerID(c.ServerID); err != nil {
			return fmt.Errorf("server-id: %w (in %s)", err, c.where())
		}
	}
	if c.ImageRuntime != "containerd" && c.ImageRuntime != "oci-dir" {
		return fmt.Errorf("image-runtime %q: want containerd or oci-dir (in %s)", c.ImageRuntime, c.where())
	}
	if len(c.RestartCommand) == 0 {
		return fmt.Errorf("restart-command must not be empty (in %s)", c.where())
	}
	if _, err := strconv.ParseBool(c.AllowUnsigned); err != nil {
		return fmt.Errorf("allow-unsigned: %q is not true or false (in %s)", c.AllowUnsigned, c.where())
	}
	if c.TrustedKeys == "" {
		return fmt.Errorf("trusted-keys must not be empty (in %s); the default is %s", c.where(), trust.DefaultKeysDir)
	}
	channels, err := trust.ParseChannels(c.Channels)
	if err != nil {
		return fmt.Errorf("%w (in %s)", err, c.where())
	}
	c.Channels = channels
	if err := deb.CheckCommand(c.InstallCommand); err != nil {
		return fmt.Errorf("%w (in %s)", err, c.where())
	}
	if c.DataDir == "" {
		return fmt.Errorf("data-dir must not be empty (in %s)", c.where())
	}
	if c.PeerListen != PeersOff {
		if _, port, err := net.SplitHostPort(c.PeerListen); err != nil || port == "" {
			return fmt.Errorf("peer-listen: %q is not host:port, :port or off (in %s); e.g. %s", c.PeerListen, c.where(), DefaultPeerListen)
		}
	}
	if c.PeerURL != "" {
		if u, err := url.Parse(c.PeerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("peer-url: %q is not http(s)://host:port (in %s); e.g. http://10.0.0.11:9714", c.PeerURL, c.where())
		}
	}
	return nil
}

// shortHostname is the host name up to its first dot, when it makes a
// valid server id, else "".
func shortHostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h, _, _ = strings.Cut(h, ".")
	if fleet.ValidateServerID(h) != nil {
		return ""
	}
	return h
}

// RequireServerID returns an error when no server id is set. The daemons
// need one; the admin CLI does not.
func (c *Config) RequireServerID() error {
	if c.ServerID == "" {
		return fmt.Errorf("server-id is not set and the host name is not a valid id: set server-id in %s, with --server-id or with %s", DefaultPath, EnvName("server-id"))
	}
	return nil
}

// NewEtcdClient connects to etcd as configured. The connection is made
// lazily; a request that cannot reach etcd fails when its context ends.
// Authentication, when configured, is tried for at most DialTimeout.
func (c *Config) NewEtcdClient() (*clientv3.Client, error) {
	ec := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	}
	if c.Username != "" {
		pw, err := readSecretFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd password: %w", err)
		}
		ec.Username, ec.Password = c.Username, pw
	}
	if c.TLSCertFile != "" || c.TLSCAFile != "" {
		tlsCfg, err := transport.TLSInfo{
			CertFile:      c.TLSCertFile,
			KeyFile:       c.TLSKeyFile,
			TrustedCAFile: c.TLSCAFile,
		}.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		ec.TLS = tlsCfg
	}
	cli, err := clientv3.New(ec)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}

// DialTimeout bounds connecting (and authenticating) to etcd.
const DialTimeout = 2 * time.Second

// readSecretFile reads a secret from a file that others cannot read.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("%s is readable or writable by others (mode %s); run chmod o-rwx %s", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}

// Probe asks each etcd endpoint for /health over the configured TLS, and
// returns what stands in the way in words an operator can act on (nil when
// an endpoint answered). It is for error messages: a gRPC call that cannot
// connect only says that its deadline passed.
func (c *Config) Probe(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if c.TLSCertFile != "" || c.TLSCAFile != "" {
		tlsCfg, err := transport.TLSInfo{CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, TrustedCAFile: c.TLSCAFile}.ClientConfig()
		if err != nil {
			return fmt.Errorf("etcd TLS: %w", err)
		}
		client.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	var causes []string
	for _, ep := range c.Endpoints {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(ep, "/")+"/health", nil)
		if err != nil {
			causes = append(causes, ep+": "+err.Error())
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			causes = append(causes, ep+": "+explainDialError(err, c, strings.HasPrefix(ep, "http://")))
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		// etcd answers {"health":"true"|"false",...}; anything else is
		// another server on that port, which the gRPC client would wait
		// on until its deadline.
		if !strings.Contains(string(body), `"health"`) {
			causes = append(causes, fmt.Sprintf("%s: something answers there, but not etcd (GET /health: %s); check the endpoint's port", ep, resp.Status))
			continue
		}
		return nil
	}
	return errors.New(strings.Join(causes, "; "))
}

// explainDialError names the cause of a failed connection to etcd.
func explainDialError(err error, c *Config, plain bool) string {
	msg := err.Error()
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing listens there; check that etcd runs and the endpoint's port"
	case os.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		return "no answer in time: something accepts connections there but does not answer (a frozen etcd, or another service on the port)"
	case errors.As(err, &unknownAuthority):
		return "x509: the server's certificate is signed by an unknown authority; set tls-ca-file to the CA that signed it"
	case errors.As(err, &hostname):
		return "x509: " + hostname.Error() + "; use an endpoint name the certificate holds"
	case strings.Contains(msg, "certificate required") || (strings.Contains(msg, "bad certificate") && c.TLSCertFile == ""):
		return "etcd requires a client certificate: set tls-cert-file and tls-key-file"
	case strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority"):
		return "etcd rejected the client certificate (" + c.TLSCertFile + "): it is not signed by a CA etcd trusts, or has expired"
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return "etcd speaks plain http there: use an http:// endpoint"
	case plain && (strings.Contains(msg, "malformed HTTP response") || errors.Is(err, io.EOF)):
		return "etcd speaks TLS there (it closed a plain http connection): use an https:// endpoint and tls-ca-file"
	case !plain && (errors.Is(err, io.EOF) || strings.Contains(msg, "first record does not look like a TLS handshake")):
		return "etcd speaks plain http there (it closed the TLS handshake): use an http:// endpoint, or give etcd a certificate"
	}
	return msg
}
