package ci

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func runCI(env map[string]string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

// An encrypted key costs seconds of scrypt per use (minisign's fixed
// parameters), so this test keeps to three uses.
func TestEncryptedKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prefix := filepath.Join(dir, "release")
	sums := filepath.Join(dir, "SHA256SUMS")
	require.NoError(t, os.WriteFile(sums, []byte(strings.Repeat("ab", 32)+"  ferry_1.0.0_amd64.deb\n"), 0o644))
	env := map[string]string{"FERRY_SIGNING_KEY_PASSWORD": "correct horse", "FERRY_SIGNING_KEY": prefix + ".key"}

	code, _, errOut := runCI(env, "keygen", prefix)
	require.Equal(t, ExitOK, code, errOut)
	code, _, errOut = runCI(map[string]string{"FERRY_SIGNING_KEY": prefix + ".key"}, "sign", sums)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "encrypted")
	code, _, errOut = runCI(map[string]string{"FERRY_SIGNING_KEY": prefix + ".key", "FERRY_SIGNING_KEY_PASSWORD": "wrong"}, "sign", sums)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "wrong password")
	require.NotContains(t, errOut, "correct horse")
	code, _, errOut = runCI(env, "sign", sums)
	require.Equal(t, ExitOK, code, errOut)
	code, _, errOut = runCI(nil, "verify", "--pub", prefix+".pub", sums)
	require.Equal(t, ExitOK, code, errOut)
}

func TestKeygenSignVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prefix := filepath.Join(dir, "release")
	env := map[string]string{}

	code, out, errOut := runCI(env, "keygen", prefix)
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "key id")
	fi, err := os.Stat(prefix + ".key")
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	code, _, errOut = runCI(env, "keygen", prefix)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "not overwriting")

	sums := filepath.Join(dir, "SHA256SUMS")
	require.NoError(t, os.WriteFile(sums, []byte(strings.Repeat("ab", 32)+"  ferry_1.0.0_amd64.deb\n"), 0o644))

	code, _, errOut = runCI(nil, "sign", sums)
	require.Equal(t, ExitUsage, code)
	require.Contains(t, errOut, "FERRY_SIGNING_KEY")

	env["FERRY_SIGNING_KEY"] = prefix + ".key"
	code, out, errOut = runCI(env, "sign", sums)
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "SHA256SUMS.minisig")

	code, out, errOut = runCI(nil, "verify", "--pub", prefix+".pub", sums)
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "signature OK")

	other := filepath.Join(dir, "other")
	require.Equal(t, ExitOK, func() int { c, _, _ := runCI(nil, "keygen", other); return c }())
	code, _, errOut = runCI(nil, "verify", "--pub", other+".pub", sums)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "does not verify")

	require.NoError(t, os.WriteFile(sums, []byte("garbage\n"), 0o644))
	code, _, errOut = runCI(env, "sign", sums)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "line 1")

	code, _, _ = runCI(nil, "no-such-command")
	require.Equal(t, ExitUsage, code)
}
