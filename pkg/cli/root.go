// Package cli implements `ferry`, the admin command line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/bootstrap"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes. They are part of ferry's interface: scripts may test them.
const (
	ExitOK          = 0 // success
	ExitFailure     = 1 // the command ran and failed
	ExitUsage       = 2 // bad usage or a refused value; nothing was changed
	ExitNotFound    = 3 // the named thing does not exist
	ExitUnreachable = 4 // no etcd endpoint answers, or etcd did not within --command-timeout
)

const exitCodeHelp = `Exit codes:
  0  success
  1  the command failed
  2  bad usage or a refused value; nothing was changed
  3  not found (e.g. leave of a server that is not registered)
  4  etcd unreachable: no endpoint answers (found within about 2s), or etcd
     did not answer within --command-timeout`

// app holds what every command shares. It is built per run, never global.
type app struct {
	flags          bootstrap.Flags
	commandTimeout time.Duration
	output         string

	stdin io.Reader
	// stdout and stderr let no escape sequence through (see safeWriter);
	// rawStdout is the terminal itself, for the watch's screen clearing.
	stdout, stderr io.Writer
	rawStdout      io.Writer
	getenv         func(string) string
	now            func() time.Time

	// argsParsed is set once cobra has accepted the command line; an error
	// before that is a usage error.
	argsParsed bool
	cfg        *bootstrap.Config
}

// usageError marks an error as the caller's mistake (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// Main runs the ferry command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: newSafeWriter(stdout), stderr: newSafeWriter(stderr), rawStdout: stdout, getenv: getenv, now: time.Now}
	root := a.newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := a.exitCode(err)
	msg := err.Error()
	switch {
	case code == ExitUnreachable:
		msg = a.unreachableMessage(err)
	case errors.Is(err, rpctypes.ErrAuthFailed):
		msg += " (check username and password-file)"
	}
	fmt.Fprintln(a.stderr, "Error:", msg)
	return code
}

func (a *app) exitCode(err error) int {
	var ue *usageError
	switch {
	case !a.argsParsed, errors.As(err, &ue), errors.Is(err, fleet.ErrInvalid):
		return ExitUsage
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, release.ErrNotFound):
		return ExitNotFound
	case isUnreachable(err):
		return ExitUnreachable
	}
	return ExitFailure
}

func isUnreachable(err error) bool {
	var ue *unreachableError
	if errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

func (a *app) unreachableMessage(err error) string {
	var ue *unreachableError
	if errors.As(err, &ue) {
		return ue.Error()
	}
	eps := bootstrap.DefaultEndpoint
	if a.cfg != nil {
		eps = strings.Join(a.cfg.Endpoints, ",")
	}
	cause := fmt.Sprintf("%v; check that etcd runs and that --endpoints or the config file name it", err)
	if a.cfg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if perr := a.cfg.Probe(ctx); perr != nil {
			cause = perr.Error()
		}
	}
	return fmt.Sprintf("etcd at %s did not answer within %s: %s", eps, a.commandTimeout, cause)
}

func (a *app) newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Administer a ferry fleet of boot servers",
		Long: `ferry is the admin command line of a ferry fleet. It configures the fleet,
registers servers, shows rollouts and recovers a stopped one. Every command
talks to the fleet's etcd, found through the bootstrap config file
(` + bootstrap.DefaultPath + `), FERRY_* environment variables or flags.

` + exitCodeHelp,
		Version:       version.Version,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.argsParsed = true
			if a.output != "table" && a.output != "json" {
				return usagef("--output: %q is not a format; use table or json", a.output)
			}
			if a.commandTimeout <= 0 {
				return usagef("--command-timeout: must be greater than zero, e.g. 10s")
			}
			cmd.SilenceUsage = true
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	pf := root.PersistentFlags()
	a.flags.Register(pf, true)
	pf.DurationVar(&a.commandTimeout, "command-timeout", 10*time.Second, "time limit of each etcd request")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.newConfigCommand(),
		a.newJoinCommand(),
		a.newLeaveCommand(),
		a.newServersCommand(),
		a.newServerCommand(),
		a.newStatusCommand(),
		a.newRecoverCommand(),
		a.newRolloutCommand(),
		a.newHistoryCommand(),
		a.newReleaseCommand(),
		a.newArtifactsCommand(),
		a.newVersionCommand(),
		a.newGenDocsCommand(),
	)
	completions := map[string]completer{
		"ferry leave":       completeFirst(a.serverIDs),
		"ferry release pin": completeFirst(a.releaseVersions),
		"ferry artifacts diff": func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			// A version, or an artifact set file.
			return a.releaseVersions(cmd), cobra.ShellCompDirectiveDefault
		},
	}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if fn, ok := completions[c.CommandPath()]; ok {
			c.ValidArgsFunction = fn
		} else if c.ValidArgsFunction == nil {
			c.ValidArgsFunction = cobra.NoFileCompletions
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return root
}

// open loads the bootstrap config and opens etcd; close releases it.
func (a *app) open() (*storage.Storage, func(), error) {
	cfg, err := a.flags.Load(a.getenv)
	if err != nil {
		return nil, nil, &usageError{err}
	}
	a.cfg = cfg
	cli, err := cfg.NewEtcdClient()
	if err != nil {
		return nil, nil, err
	}
	st, err := storage.New(cli, cfg.Prefix)
	if err != nil {
		cli.Close()
		return nil, nil, &usageError{err}
	}
	// The GitHub API is this machine's to name, as on a server.
	st.UseLocal(func() map[string]string { return map[string]string{fleet.ConfigGitHubAPIURL: cfg.GitHubAPIURL} })
	return st, func() { cli.Close() }, nil
}

// connect opens etcd; the returned context carries --command-timeout.
func (a *app) connect(ctx context.Context) (context.Context, *storage.Storage, func(), error) {
	st, closeStorage, err := a.open()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.commandTimeout)
	return ctx, st, func() { cancel(); closeStorage() }, nil
}

// withStorage runs fn with a connected storage and the command's context;
// fn must be idempotent, as it is tried again after a transient etcd error
// (see storageCall).
func (a *app) withStorage(cmd *cobra.Command, fn func(ctx context.Context, st *storage.Storage) error) error {
	return a.storageCall(cmd, true, fn)
}

// withSnapshot runs fn on a snapshot of the fleet's state.
func (a *app) withSnapshot(cmd *cobra.Command, fn func(snap *fleet.Snapshot) error) error {
	var snap *fleet.Snapshot
	err := a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
		var err error
		snap, err = st.Snapshot(ctx)
		return err
	})
	if err != nil {
		return err
	}
	return fn(snap)
}

func (a *app) newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this ferry binary",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if a.output == "json" {
				return a.printJSON(map[string]string{"version": version.Version})
			}
			fmt.Fprintln(a.stdout, version.Version)
			return nil
		},
	}
}

// groupRunE makes a command that only groups subcommands refuse an unknown
// subcommand with a usage error, instead of printing help and exiting 0.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return cmd.Help()
}
