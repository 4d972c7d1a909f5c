// Package ci implements ferry-ci, the command of the nightly job that
// builds, signs, tests and publishes ferry releases.
package ci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ferry-cd/ferry/internal/manpage"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

type usageError struct{ error }

// Main runs ferry-ci and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	parsed := false
	root := &cobra.Command{
		Use:           "ferry-ci",
		Short:         "Build, sign, test and publish ferry releases (the nightly job)",
		Version:       version.Version,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			parsed = true
			cmd.SilenceUsage = true
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newKeygenCommand(stdout, getenv), newSignCommand(stdout, getenv), newVerifyCommand(stdout), newGenerateCommand(stdout, getenv), newNightlyCommand(stdout, getenv), newServeReleasesCommand(stdout, getenv),
		&cobra.Command{
			Use:    "gen-docs DIR",
			Short:  "Write the man pages into DIR/man1, for the package build",
			Hidden: true,
			Args:   cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return manpage.WriteTree(cmd.Root(), "1", args[0]+"/man1")
			},
		})
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "Error:", err)
	var ue usageError
	if !parsed || errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

func newKeygenCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var passwordEnv string
	cmd := &cobra.Command{
		Use:   "keygen PREFIX",
		Short: "Create a minisign key pair: PREFIX.key (secret) and PREFIX.pub",
		Long: `Create a minisign key pair for signing releases: PREFIX.key (mode 0600)
and PREFIX.pub. The key is encrypted with the password in the variable named
by --password-env when it is set. Give every server the public key:
  install -m 0644 PREFIX.pub /etc/ferry/trusted-keys/`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			pub, err := trust.WriteKeyPair(args[0], getenv(passwordEnv))
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s.key and %s.pub (key id %X)\n", args[0], args[0], pub.ID())
			return nil
		},
	}
	cmd.Flags().StringVar(&passwordEnv, "password-env", "FERRY_SIGNING_KEY_PASSWORD", "environment variable that holds the key's password")
	return cmd
}

func newSignCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var keyFile, passwordEnv string
	cmd := &cobra.Command{
		Use:   "sign SHA256SUMS",
		Short: "Sign a SHA256SUMS file into SHA256SUMS.minisig",
		Long: `Sign a SHA256SUMS file with a minisign private key; the signature goes to
SHA256SUMS.minisig next to it and verifies with ` + "`minisign -Vm SHA256SUMS -p KEY.pub`" + `.
The key file comes from --key or FERRY_SIGNING_KEY; its password, if it is
encrypted, from the variable named by --password-env. Neither is printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if keyFile == "" {
				keyFile = getenv("FERRY_SIGNING_KEY")
			}
			if keyFile == "" {
				return usageError{errors.New("no signing key: give --key FILE or set FERRY_SIGNING_KEY")}
			}
			sums, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := release.ParseSums(sums); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			key, err := trust.LoadPrivateKey(keyFile, getenv(passwordEnv))
			if err != nil {
				return err
			}
			sigPath := args[0] + ".minisig"
			if err := os.WriteFile(sigPath, release.SignSums(key, sums), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "signed %s with key %X into %s\n", args[0], key.ID(), sigPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "minisign private key file (default $FERRY_SIGNING_KEY)")
	cmd.Flags().StringVar(&passwordEnv, "password-env", "FERRY_SIGNING_KEY_PASSWORD", "environment variable that holds the key's password")
	return cmd
}

func newVerifyCommand(stdout io.Writer) *cobra.Command {
	var pubFile string
	cmd := &cobra.Command{
		Use:   "verify SHA256SUMS",
		Short: "Check SHA256SUMS.minisig against a public key, as the workers do",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			pubText, err := os.ReadFile(pubFile)
			if err != nil {
				return usageError{fmt.Errorf("--pub: %w", err)}
			}
			keys, err := trust.ParseKeys(string(pubText))
			if err != nil {
				return usageError{err}
			}
			sums, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			sig, err := os.ReadFile(args[0] + ".minisig")
			if err != nil {
				return err
			}
			if err := release.VerifySums(sums, sig, keys, false); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: signature OK\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&pubFile, "pub", "", "minisign public key file")
	cmd.MarkFlagRequired("pub")
	return cmd
}
