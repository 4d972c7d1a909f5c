package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/spf13/cobra"
)

// signingFlags are the flags of a command that signs with the release key.
type signingFlags struct{ keyFile, passwordEnv string }

func (f *signingFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.keyFile, "key", "", "minisign private key that signs "+what+" (default $FERRY_SIGNING_KEY)")
	cmd.Flags().StringVar(&f.passwordEnv, "password-env", "FERRY_SIGNING_KEY_PASSWORD", "environment variable that holds the key's password")
}

// load reads the key; its bytes and password are never printed.
func (f *signingFlags) load(a *app, what string) (minisign.PrivateKey, error) {
	keyFile := f.keyFile
	if keyFile == "" {
		keyFile = a.getenv("FERRY_SIGNING_KEY")
	}
	if keyFile == "" {
		return minisign.PrivateKey{}, usagef("no release key: give --key FILE or set FERRY_SIGNING_KEY; %s", what)
	}
	key, err := trust.LoadPrivateKey(keyFile, a.getenv(f.passwordEnv))
	if err != nil {
		return minisign.PrivateKey{}, &usageError{err}
	}
	return key, nil
}

// nextSerial is the serial after that of the statement etcd holds (read
// without a signature: servers verify what they apply), and that
// statement, or nil.
func nextSerial(sd *trust.Signed, err error) (int64, *trust.Statement, error) {
	if errors.Is(err, storage.ErrNotFound) {
		return 1, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	s, err := trust.DecodeStatement(sd.Data)
	if err != nil {
		return 0, nil, fmt.Errorf("the statement in etcd does not decode (%v); publishing one with serial 1 would be ignored by servers that applied it, so fix or remove it first", err)
	}
	return s.Serial + 1, s, nil
}

func (a *app) newReleaseWithdrawCommand() *cobra.Command {
	var sf signingFlags
	cmd := &cobra.Command{
		Use:   "withdraw VERSION... --key FILE",
		Short: "Withdraw released versions: no server installs them, no updater picks them",
		Long: `Publish a withdrawals statement, signed with the release key, that adds the
versions to those already withdrawn. It travels through etcd, which cannot
forge one: every worker verifies it against its own trusted keys (a key in
the top of trusted-keys, trusted for every channel), keeps the newest it
verified in its data-dir, and refuses to install a withdrawn version from
then on, whatever GitHub or etcd serve. The updater leader never picks a
withdrawn version.

This answers a release that was pulled, or found bad, after it was signed:
its manifest stays valid until it expires, and a replaying or compromised
mirror could serve it again. A newer release is the way forward; the
fleet stays on what it runs until one comes.`,
		Example: `  ferry release withdraw 2026.01.02-1 --key release.key`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, v := range args {
				if _, err := release.ParseVersion(v); err != nil {
					return &usageError{err}
				}
			}
			key, err := sf.load(a, "withdrawing signs a statement that every server verifies")
			if err != nil {
				return err
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				serial, old, err := nextSerial(st.GetWithdrawals(ctx))
				if err != nil {
					return err
				}
				var withdrawn []string
				if old != nil {
					withdrawn = old.Withdrawn
				}
				for _, v := range args {
					if !slices.Contains(withdrawn, v) {
						withdrawn = append(withdrawn, v)
					}
				}
				s := &trust.Statement{Product: trust.Product, Kind: trust.KindWithdrawals, Serial: serial, Created: a.now().UTC(), Withdrawn: withdrawn}
				sd, err := s.Sign(key)
				if err != nil {
					return err
				}
				if err := st.PutWithdrawals(ctx, sd); err != nil {
					return err
				}
				// The leader looks again at once, and picks around them.
				if _, err := st.PutCheckTrigger(ctx, &fleet.CheckTrigger{At: a.now().UTC(), Delivery: "ferry release withdraw"}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "withdrawn: %s (statement %d, signed with key %X); workers refuse them from their next install on\n", strings.Join(withdrawn, ", "), serial, key.ID())
				return nil
			})
		},
	}
	sf.register(cmd, "the withdrawals statement")
	return cmd
}

func (a *app) newReleaseRotateKeysCommand() *cobra.Command {
	var sf signingFlags
	var add, retire []string
	cmd := &cobra.Command{
		Use:   "rotate-keys --key CURRENT.key [--add NEW.pub]... [--retire OLD.pub|KEYID]...",
		Short: "Introduce a new release key, or retire one, on every server without logging in",
		Long: `Publish a keys statement, signed with a release key that the servers trust
now, that adds public keys to every server's trusted-keys and retires
others. It travels through etcd, which cannot forge one: each worker
verifies it against the keys in the top of its own trusted-keys (trusted
for every channel), and, when its serial is newer than the last it
applied, writes each added key there as rotated-KEYID.pub and renames the
file of each retired key to NAME.pub.retired. It refuses a statement that
would leave it no key. A worker applies it before its next install.

Rotate in two steps, so that no server is left without a key it needs:
  1. ferry release rotate-keys --key old.key --add new.pub
     (then sign releases with new.key)
  2. once every server has taken a release signed with the new key:
     ferry release rotate-keys --key new.key --retire old.pub

This answers a key that must change (a person leaves, a key is feared
lost): the trust root moves without anyone logging in to the servers,
and only the holder of a trusted key can move it. A retired key signs
nothing any more, even if it leaks afterwards.`,
		Example: `  ferry release rotate-keys --key release-2026.key --add release-2027.pub
  ferry release rotate-keys --key release-2027.key --retire release-2026.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(add) == 0 && len(retire) == 0 {
				return usagef("give --add NEW.pub or --retire OLD.pub (or its key ID), or both")
			}
			s := &trust.Statement{Product: trust.Product, Kind: trust.KindKeys, Created: a.now().UTC()}
			for _, f := range add {
				keys, err := readPublicKeys(f)
				if err != nil {
					return err
				}
				for _, k := range keys {
					s.Add = append(s.Add, k.String())
				}
			}
			for _, r := range retire {
				if len(r) == 16 && strings.Trim(strings.ToUpper(r), "0123456789ABCDEF") == "" {
					s.Retire = append(s.Retire, strings.ToUpper(r))
					continue
				}
				keys, err := readPublicKeys(r)
				if err != nil {
					return err
				}
				for _, k := range keys {
					s.Retire = append(s.Retire, trust.KeyID(k))
				}
			}
			key, err := sf.load(a, "a keys statement is signed by a key the servers trust now")
			if err != nil {
				return err
			}
			if slices.Contains(s.Retire, trust.KeyID(key.Public().(minisign.PublicKey))) && len(s.Add) == 0 {
				fmt.Fprintf(a.stderr, "warning: the statement retires key %X, which signs it; servers apply it only if they trust another key\n", key.ID())
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				serial, _, err := nextSerial(st.GetKeyStatement(ctx))
				if err != nil {
					return err
				}
				s.Serial = serial
				sd, err := s.Sign(key)
				if err != nil {
					return &usageError{err}
				}
				if err := st.PutKeyStatement(ctx, sd); err != nil {
					return err
				}
				var ids []string
				added, _ := trust.ParseKeys(strings.Join(s.Add, "\n"))
				for _, k := range added {
					ids = append(ids, trust.KeyID(k))
				}
				fmt.Fprintf(a.stdout, "keys statement %d, signed with key %X: adds [%s], retires [%s]; each worker applies it before its next install\n", serial, key.ID(), strings.Join(ids, " "), strings.Join(s.Retire, " "))
				return nil
			})
		},
	}
	sf.register(cmd, "the keys statement (a key the servers trust now)")
	cmd.Flags().StringArrayVar(&add, "add", nil, "public key file (.pub) to trust on every server, for every channel")
	cmd.Flags().StringArrayVar(&retire, "retire", nil, "public key file (.pub), or key ID, to trust no more")
	return cmd
}

func readPublicKeys(path string) ([]minisign.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &usageError{err}
	}
	keys, err := trust.ParseKeys(string(data))
	if err != nil {
		return nil, usagef("%s: %v", path, err)
	}
	if len(keys) == 0 {
		return nil, usagef("%s holds no public key", path)
	}
	return keys, nil
}
