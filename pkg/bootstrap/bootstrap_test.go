package bootstrap

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/etcdtest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func load(t *testing.T, args []string, vars map[string]string) (*Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := Flags{defaultPath: filepath.Join(t.TempDir(), "absent.yml")}
	f.Register(fs, false)
	require.NoError(t, fs.Parse(args))
	return f.Load(env(vars))
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yml")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func TestPrecedence(t *testing.T) {
	p := writeFile(t, "endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]\nserver-id: file-id\nprefix: /site\ndata-dir: /srv/ferry\n")

	cfg, err := load(t, []string{"--config", p}, nil)
	require.NoError(t, err)
	require.Equal(t, List{"http://10.0.0.1:2379", "http://10.0.0.2:2379"}, cfg.Endpoints)
	require.Equal(t, "file-id", cfg.ServerID)
	require.Equal(t, "/site/", cfg.Prefix)
	require.Equal(t, "/srv/ferry", cfg.DataDir)
	require.Equal(t, p, cfg.Path)

	cfg, err = load(t, []string{"--config", p}, map[string]string{"FERRY_SERVER_ID": "env-id", "FERRY_ENDPOINTS": "http://e1:2379, http://e2:2379"})
	require.NoError(t, err)
	require.Equal(t, "env-id", cfg.ServerID)
	require.Equal(t, List{"http://e1:2379", "http://e2:2379"}, cfg.Endpoints)

	cfg, err = load(t, []string{"--config", p, "--server-id", "flag-id"}, map[string]string{"FERRY_SERVER_ID": "env-id"})
	require.NoError(t, err)
	require.Equal(t, "flag-id", cfg.ServerID)
	require.Equal(t, "systemd-run", cfg.InstallCommand[0], "the default install command")

	cfg, err = load(t, []string{"--config", p, "--install-command", "dpkg,--root=/srv/r,-i"}, nil)
	require.NoError(t, err)
	require.Equal(t, List{"dpkg", "--root=/srv/r", "-i"}, cfg.InstallCommand)
	p2 := writeFile(t, "install-command: [dpkg, --root=/a b, -i]\n")
	cfg, err = loadFile(t, p2)
	require.NoError(t, err)
	require.Equal(t, List{"dpkg", "--root=/a b", "-i"}, cfg.InstallCommand, "a YAML list keeps spaces")
	cfg, err = loadFile(t, writeFile(t, "endpoints: http://10.0.0.9:2379\n"))
	require.NoError(t, err)
	require.Equal(t, List{"http://10.0.0.9:2379"}, cfg.Endpoints, "one endpoint may be a plain string")

	cfg, err = load(t, nil, map[string]string{"FERRY_CONFIG": p})
	require.NoError(t, err)
	require.Equal(t, "file-id", cfg.ServerID)
}

func TestDefaultsWithoutFile(t *testing.T) {
	cfg, err := load(t, nil, nil)
	require.NoError(t, err)
	require.Equal(t, List{DefaultEndpoint}, cfg.Endpoints)
	require.Equal(t, "/ferry/", cfg.Prefix)
	require.Equal(t, DefaultDataDir, cfg.DataDir)
	require.Equal(t, List{"production"}, cfg.Channels, "a server takes production builds unless its own config says more")
	require.Empty(t, cfg.Path)
	host, err := os.Hostname()
	require.NoError(t, err)
	short, _, _ := strings.Cut(host, ".")
	require.Equal(t, short, cfg.ServerID, "server-id defaults to the short host name")
	require.NoError(t, cfg.RequireServerID())
}

func TestBadFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yml")
	_, err := load(t, []string{"--config", missing}, nil)
	require.ErrorContains(t, err, missing)
	require.ErrorContains(t, err, "does not exist")

	_, err = load(t, nil, map[string]string{"FERRY_CONFIG": missing})
	require.ErrorContains(t, err, "does not exist")

	_, err = loadFile(t, writeFile(t, "endpoints: [\n"))
	require.ErrorContains(t, err, "line 1")

	_, err = loadFile(t, writeFile(t, "prefx: /ferry/\n"))
	require.ErrorContains(t, err, `line 1: unknown key "prefx"`)
	require.ErrorContains(t, err, "known keys: endpoints")
	require.NotContains(t, err.Error(), "bootstrap.Config", "no Go type names")

	_, err = loadFile(t, writeFile(t, "prefix: [a, b]\n"))
	require.ErrorContains(t, err, "line 1: a list where a string belongs")
	_, err = loadFile(t, writeFile(t, "endpoints: {a: 1}\n"))
	require.ErrorContains(t, err, "line 1: want a string or a list of strings")
	require.NotContains(t, err.Error(), "[]string")

	_, err = loadFile(t, writeFile(t, "endpoints: [10.0.0.1]\n"))
	require.ErrorContains(t, err, `"10.0.0.1" is not an etcd URL`)

	_, err = loadFile(t, writeFile(t, "prefix: ferry\n"))
	require.ErrorContains(t, err, "must start with /")

	_, err = loadFile(t, writeFile(t, "server-id: Boot_0/x\n"))
	require.ErrorContains(t, err, "server-id")

	_, err = loadFile(t, writeFile(t, "tls-cert-file: /x.pem\n"))
	require.ErrorContains(t, err, "set together")

	_, err = loadFile(t, writeFile(t, "channels: [prod]\n"))
	require.ErrorContains(t, err, `channels: "prod" is not a channel; want some of test, staging, production`)
	_, err = loadFile(t, writeFile(t, "channels: []\n"))
	require.ErrorContains(t, err, "name at least one")
	cfg, err := loadFile(t, writeFile(t, "channels: [staging, production, staging]\n"))
	require.NoError(t, err)
	require.Equal(t, List{"staging", "production"}, cfg.Channels)

	cfg, err = loadFile(t, writeFile(t, ""))
	require.NoError(t, err, "an empty file sets nothing")
	require.Equal(t, List{DefaultEndpoint}, cfg.Endpoints)
}

// loadFile reads only the file, as --config names it.
func loadFile(t *testing.T, path string) (*Config, error) {
	t.Helper()
	return load(t, []string{"--config", path}, nil)
}

// TestEtcdPasswordAuth logs in to an etcd that has authentication enabled,
// with the password read from a file, and names the cause when it fails.
func TestEtcdPasswordAuth(t *testing.T) {
	t.Parallel()
	srv, err := etcdtest.Start(t.TempDir())
	require.NoError(t, err)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer admin.Close()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "ferry", "s3cret"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "ferry"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "ferry", "/ferry/", clientv3.GetPrefixRangeEnd("/ferry/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx, "ferry", "ferry"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		require.NoError(t, step())
	}

	dir := t.TempDir()
	pw := filepath.Join(dir, "etcd-password")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	cfg := Default()
	cfg.Endpoints, cfg.Username, cfg.PasswordFile = []string{srv.Endpoint}, "ferry", pw
	cli, err := cfg.NewEtcdClient()
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/ferry/x", "1")
	require.NoError(t, err, "the user logs in with the password from the file")
	cli.Close()

	require.NoError(t, os.WriteFile(pw, []byte("wrong\n"), 0o600))
	cli, err = cfg.NewEtcdClient()
	if err == nil {
		_, err = cli.Put(ctx, "/ferry/x", "1")
		cli.Close()
	}
	require.ErrorIs(t, err, rpctypes.ErrAuthFailed)

	require.NoError(t, os.Chmod(pw, 0o644))
	_, err = cfg.NewEtcdClient()
	require.ErrorContains(t, err, "readable or writable by others")

	require.NoError(t, cfg.Probe(ctx), "the probe reaches the endpoint")
	cfg.Endpoints = []string{"http://127.0.0.1:1"}
	require.ErrorContains(t, cfg.Probe(ctx), "connection refused")
	// https:// against an etcd that speaks plain http says so, not EOF.
	cfg.Endpoints = []string{strings.Replace(srv.Endpoint, "http://", "https://", 1)}
	require.ErrorContains(t, cfg.Probe(ctx), "etcd speaks plain http there")
	// A web server that is not etcd.
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	cfg.Endpoints = []string{web.URL}
	require.ErrorContains(t, cfg.Probe(ctx), "something answers there, but not etcd (GET /health: 404 Not Found)")
}

func TestLocalSecretsFromCredentialsDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "github-token"), []byte("ghp_local\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notify-url"), []byte("https://hooks.example/x"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "unrelated"), []byte("x"), 0o600))
	cfg, err := load(t, nil, map[string]string{"CREDENTIALS_DIRECTORY": dir})
	require.NoError(t, err)
	require.Equal(t, dir, cfg.CredentialsDir, "systemd's credentials directory is the default")
	require.Equal(t, map[string]string{"github-token": "ghp_local"}, cfg.LocalSecrets(), "a file others can read is not taken")
}

func TestPeerSettings(t *testing.T) {
	_, err := loadFile(t, writeFile(t, "peer-listen: 9714\n"))
	require.ErrorContains(t, err, `peer-listen: "9714" is not host:port, :port or off`)
	_, err = loadFile(t, writeFile(t, "peer-url: ftp://10.0.0.1:9714\n"))
	require.ErrorContains(t, err, "peer-url")
	_, err = loadFile(t, writeFile(t, "peer-url: http://user:secret@10.0.0.1:9714\n"))
	require.ErrorContains(t, err, "peer-url")

	cfg, err := loadFile(t, writeFile(t, "peer-url: http://10.0.0.11:9714/\n"))
	require.NoError(t, err)
	u, err := cfg.AdvertisedPeerURL()
	require.NoError(t, err)
	require.Equal(t, "http://10.0.0.11:9714", u, "peer-url as given")

	cfg, err = loadFile(t, writeFile(t, "peer-listen: 10.0.0.12:9800\n"))
	require.NoError(t, err)
	u, err = cfg.AdvertisedPeerURL()
	require.NoError(t, err)
	require.Equal(t, "http://10.0.0.12:9800", u, "the address it listens on")

	// Listening on every address: the one this host reaches etcd from.
	cfg, err = loadFile(t, writeFile(t, "endpoints: http://127.0.0.1:2379\n"))
	require.NoError(t, err)
	require.Equal(t, DefaultPeerListen, cfg.PeerListen)
	u, err = cfg.AdvertisedPeerURL()
	if err == nil {
		require.Regexp(t, `^http://[0-9a-f.:\[\]]+:9714$`, u)
		require.NotContains(t, u, "127.0.0.1", "a loopback etcd endpoint does not make the server advertise loopback")
	} else {
		require.ErrorContains(t, err, "set peer-url", "a host with only loopback says what to do")
	}

	cfg, err = loadFile(t, writeFile(t, "peer-listen: off\n"))
	require.NoError(t, err)
	require.Equal(t, PeersOff, cfg.PeerListen)
}
