// Package daemon holds what the ferry daemons' mains share: flags for the
// bootstrap config, a JSON slog logger, and the etcd connection.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/cybozu-go/log"
	"github.com/ferry-cd/ferry/internal/manpage"
	"github.com/ferry-cd/ferry/pkg/bootstrap"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Flags are the flags every daemon has.
type Flags struct {
	FS        *pflag.FlagSet
	bootstrap bootstrap.Flags
	logLevel  string
	version   bool
	// genMan is a hidden flag for the package build: write the man page
	// into the directory and exit.
	genMan  string
	summary string
}

// NewFlags registers the common flags on a new flag set for the program.
func NewFlags(program, summary string) *Flags {
	fs := pflag.NewFlagSet(program, pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "%s: %s\n\nUsage: %s [flags]\n\nFlags:\n%s", program, summary, program, fs.FlagUsages())
	}
	f := &Flags{FS: fs, summary: summary}
	f.bootstrap.Register(fs, false)
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.StringVar(&f.genMan, "gen-man", "", "write the man page into this directory and exit (for the package build)")
	fs.MarkHidden("gen-man")
	return f
}

// Env is what a daemon has once its flags are parsed.
type Env struct {
	Config  *bootstrap.Config
	Logger  *slog.Logger
	Client  *clientv3.Client
	Storage *storage.Storage
	// Etcd watches whether etcd answers; the main runs it.
	Etcd *storage.Monitor
}

// Setup parses args, loads the bootstrap config (server-id required),
// builds the JSON logger and connects to etcd. It exits the process for
// --help and --version; other problems are returned.
func (f *Flags) Setup(args []string) (*Env, error) {
	if err := f.FS.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		return nil, &ConfigError{err}
	}
	if f.version {
		fmt.Println(version.Version)
		os.Exit(0)
	}
	if f.genMan != "" {
		long := f.summary + ".\n\nIt reads its bootstrap config from " + bootstrap.DefaultPath + " (start from " + bootstrap.DefaultPath +
			".example), FERRY_* environment variables and the flags below; it takes no part in the fleet until that file exists. " +
			"Exit status 78 (EX_CONFIG) means a configuration error that a restart would not fix. See /usr/share/doc/ferry/operator-guide.md."
		if err := manpage.WriteTree(manpage.Daemon(f.FS.Name(), f.summary, long, f.FS), "8", f.genMan); err != nil {
			return nil, err
		}
		os.Exit(0)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, &ConfigError{fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)}
	}
	// well logs through cybozu-go/log; keep it to warnings so that the JSON
	// from slog stays the main stream.
	log.DefaultLogger().SetThreshold(log.LvWarn)

	cfg, err := f.bootstrap.Load(os.Getenv)
	if err != nil {
		return nil, &ConfigError{err}
	}
	if cfg.Path == "" {
		return nil, &ConfigError{fmt.Errorf("no config file: write %s (start from %s.example); until it exists, this server takes no part in the fleet", bootstrap.DefaultPath, bootstrap.DefaultPath)}
	}
	if err := cfg.RequireServerID(); err != nil {
		return nil, &ConfigError{err}
	}
	logger := NewLogger(os.Stderr, level).
		With("server", cfg.ServerID, "program", f.FS.Name(), "ferry_version", version.Version)
	cli, err := cfg.NewEtcdClient()
	if err != nil {
		return nil, &ConfigError{err}
	}
	st, err := storage.New(cli, cfg.Prefix)
	if err != nil {
		cli.Close()
		return nil, err
	}
	st.UseLocal(cfg.Local)
	var local []string
	for name := range cfg.LocalSecrets() {
		local = append(local, name)
	}
	sort.Strings(local)
	logger.Info("starting", "endpoints", strings.Join(cfg.Endpoints, ","), "prefix", cfg.Prefix, "config", cfg.Path, "local_secrets", strings.Join(local, ","), "github_api_url", cfg.GitHubAPIURL, "channels", strings.Join(cfg.Channels, ","))
	mon := &storage.Monitor{Storage: st, Log: logger, Explain: cfg.Probe}
	return &Env{Config: cfg, Logger: logger, Client: cli, Storage: st, Etcd: mon}, nil
}

// NewLogger is the daemons' JSON logger. A duration is written in seconds,
// its key ending in _seconds, never as a count of nanoseconds.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() != slog.KindDuration {
			return a
		}
		if !strings.HasSuffix(a.Key, "_seconds") {
			a.Key += "_seconds"
		}
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	}}))
}

// QuietAccessLog is an access logger for well.HTTPServer that drops
// everything: scrapes and health checks would drown the daemon's own log.
func QuietAccessLog() *log.Logger {
	l := log.NewLogger()
	l.SetOutput(io.Discard)
	return l
}

// ExitConfig is the exit status of a configuration error (EX_CONFIG). The
// units' RestartPreventExitStatus=78 keeps systemd from restarting a daemon
// that would only fail again.
const ExitConfig = 78

// ConfigError is a problem only an operator can fix by changing the
// configuration: a restart would fail the same way.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Fatal prints an error the way an operator reads it and exits: 78 for a
// configuration error, 1 otherwise.
func Fatal(program string, err error) {
	var ce *ConfigError
	if errors.As(err, &ce) {
		fmt.Fprintf(os.Stderr, "%s: configuration error: %v\n", program, err)
		os.Exit(ExitConfig)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
	os.Exit(1)
}

// Listen listens on addr and logs the address it listens on (with the
// port the kernel chose for ":0"), so that an operator can find it. what
// names what is served there, for the log.
func Listen(log *slog.Logger, addr, what string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s: %w", addr, what, err)
	}
	log.Info("listening", "address", l.Addr().String(), "serves", what)
	return l, nil
}
