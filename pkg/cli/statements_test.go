package cli

import (
	"path/filepath"
	"testing"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

func TestWithdrawAndRotateKeys(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	dir := t.TempDir()
	pub, err := trust.WriteKeyPair(filepath.Join(dir, "release"), "")
	require.NoError(t, err)
	newPub, err := trust.WriteKeyPair(filepath.Join(dir, "next"), "")
	require.NoError(t, err)
	key := filepath.Join(dir, "release.key")

	r := f.run("", "release", "withdraw", "2026.01.02-1")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "no release key")
	r = f.run("", "release", "withdraw", "not a version", "--key", key)
	require.Equal(t, ExitUsage, r.code)

	r = f.run("", "release", "withdraw", "2026.01.02-1", "--key", key)
	require.Equal(t, ExitOK, r.code, r.stderr)
	r = f.run("", "release", "withdraw", "2026.01.03-1", "2026.01.02-1", "--key", key)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "withdrawn: 2026.01.02-1, 2026.01.03-1 (statement 2")
	sd, err := f.st.GetWithdrawals(f.ctx())
	require.NoError(t, err)
	s, err := sd.Verify(trust.KindWithdrawals, []minisign.PublicKey{pub})
	require.NoError(t, err)
	require.Equal(t, int64(2), s.Serial)
	require.Equal(t, []string{"2026.01.02-1", "2026.01.03-1"}, s.Withdrawn)
	snap, err := f.st.Snapshot(f.ctx())
	require.NoError(t, err)
	require.NotZero(t, snap.TriggerRev, "the leader is asked to check again at once")

	r = f.run("", "release", "rotate-keys", "--key", key)
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "--add")
	r = f.run("", "release", "rotate-keys", "--key", key, "--add", filepath.Join(dir, "next.pub"))
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "keys statement 1")
	r = f.run("", "release", "rotate-keys", "--key", filepath.Join(dir, "next.key"), "--retire", filepath.Join(dir, "release.pub"))
	require.Equal(t, ExitOK, r.code, r.stderr)
	sd, err = f.st.GetKeyStatement(f.ctx())
	require.NoError(t, err)
	s, err = sd.Verify(trust.KindKeys, []minisign.PublicKey{newPub})
	require.NoError(t, err)
	require.Equal(t, int64(2), s.Serial)
	require.Equal(t, []string{trust.KeyID(pub)}, s.Retire)
}
