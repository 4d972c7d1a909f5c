package trust

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/stretchr/testify/require"
)

func writeKey(t *testing.T, dir, name string, pub minisign.PublicKey, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte("untrusted comment: minisign public key\n"+pub.String()+"\n"), mode))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

func TestLoadKeys(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "trusted-keys")
	require.NoError(t, os.Mkdir(dir, 0o755))
	_, err := LoadKeys(dir)
	require.ErrorIs(t, err, ErrNoKeys)
	require.ErrorContains(t, err, "NAME.pub")

	pub1, _, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	pub2, _, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	writeKey(t, dir, "a.pub", pub1, 0o644)
	one := writeKey(t, dir, "b.pub", pub2, 0o644)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README"), []byte("not a key"), 0o644))
	keys, err := LoadKeys(dir)
	require.NoError(t, err)
	require.Equal(t, Keys(pub1, pub2), keys)
	keys, err = LoadKeys(one)
	require.NoError(t, err)
	require.Equal(t, Keys(pub2), keys)

	// A key in test/ signs for the test channel alone.
	pub3, _, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	require.NoError(t, os.Mkdir(filepath.Join(dir, ChannelTest), 0o755))
	writeKey(t, filepath.Join(dir, ChannelTest), "nightly.pub", pub3, 0o644)
	keys, err = LoadKeys(dir)
	require.NoError(t, err)
	require.Equal(t, []minisign.PublicKey{pub1, pub2, pub3}, keys.For(ChannelTest))
	require.Equal(t, []minisign.PublicKey{pub1, pub2}, keys.For(ChannelProduction))
	require.Equal(t, []minisign.PublicKey{pub1, pub2}, keys.For(ChannelStaging))
	require.Equal(t, 3, keys.Len())

	// A symbolic link is refused: what it trusts could change with its
	// target.
	link := filepath.Join(dir, "link.pub")
	require.NoError(t, os.Symlink(one, link))
	_, err = LoadKeys(dir)
	require.ErrorContains(t, err, "is a symbolic link")
	require.NoError(t, os.Remove(link))
	_, err = LoadKeys(link)
	require.Error(t, err)

	// A key file others can write is refused, and so is the directory.
	require.NoError(t, os.Chmod(one, 0o664))
	_, err = LoadKeys(dir)
	require.ErrorContains(t, err, "writable by group or others")
	require.NoError(t, os.Chmod(one, 0o644))
	require.NoError(t, os.Chmod(dir, 0o777))
	_, err = LoadKeys(dir)
	require.ErrorContains(t, err, "chmod go-w")
	require.NoError(t, os.Chmod(dir, 0o755))

	// A key file or directory of another user is refused, whatever its
	// mode: its owner could put a key there.
	if os.Getuid() == 0 {
		require.NoError(t, os.Chown(one, 65534, 65534))
		_, err = LoadKeys(dir)
		require.ErrorContains(t, err, "belongs to uid 65534")
		require.NoError(t, os.Chown(one, 0, 0))
		require.NoError(t, os.Chown(dir, 65534, 65534))
		_, err = LoadKeys(dir)
		require.ErrorContains(t, err, "chown root:")
		require.NoError(t, os.Chown(dir, 0, 0))
	}

	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.pub"), []byte("RWQnot-a-key\n"), 0o644))
	_, err = LoadKeys(dir)
	require.ErrorContains(t, err, "is not a minisign public key")
	_, err = LoadKeys(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func TestPrivateDir(t *testing.T) {
	t.Parallel()
	d := filepath.Join(t.TempDir(), "downloads")
	require.NoError(t, EnsurePrivateDir(d))
	fi, err := os.Stat(d)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	// A directory of this user's, left open by an older version, is closed.
	require.NoError(t, os.Chmod(d, 0o777))
	require.NoError(t, EnsurePrivateDir(d))
	fi, err = os.Stat(d)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	open := filepath.Join(t.TempDir(), "open")
	require.NoError(t, os.Mkdir(open, 0o755))
	require.NoError(t, os.Chmod(open, 0o755))
	require.ErrorContains(t, CheckPrivateDir(open), "chmod 0700")
	// One of another user's is refused.
	if os.Getuid() == 0 {
		require.NoError(t, os.Chown(d, 65534, 65534))
		require.ErrorContains(t, EnsurePrivateDir(d), "belongs to uid 65534")
	}
}

func manifest(now time.Time) *Manifest {
	return &Manifest{Product: Product, Version: "2026.01.02-1", Channel: ChannelStaging,
		Assets:  []Asset{{Name: "ferry_2026.01.02-1_amd64.deb", Size: 1000, SHA256: strings.Repeat("ab", 32)}},
		Created: now.Add(-time.Hour), Expires: now.Add(24 * time.Hour)}
}

func TestManifest(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	pub, priv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	otherPub, otherPriv, err := minisign.GenerateKey(nil)
	require.NoError(t, err)

	data, sig, err := manifest(now).Sign(priv)
	require.NoError(t, err)
	m, err := ParseManifest(data, sig, []minisign.PublicKey{otherPub, pub})
	require.NoError(t, err)
	require.Equal(t, manifest(now).Assets, m.Assets)
	a, ok := m.Asset("ferry_2026.01.02-1_amd64.deb")
	require.True(t, ok)
	require.Equal(t, int64(1000), a.Size)
	require.NoError(t, m.Check(Product, "2026.01.02-1", []string{ChannelStaging, ChannelProduction}, now))

	for _, c := range []struct {
		name    string
		version string
		accept  []string
		at      time.Time
		want    string
	}{
		{"another version", "2026.01.03-1", []string{ChannelStaging}, now, "not the requested 2026.01.03-1"},
		{"a channel the fleet does not take", "2026.01.02-1", []string{ChannelProduction}, now, "channel staging"},
		{"expired", "2026.01.02-1", []string{ChannelStaging}, now.Add(25 * time.Hour), "expired at 2026-06-02T00:00:00Z"},
		{"from the future", "2026.01.02-1", []string{ChannelStaging}, now.Add(-3 * time.Hour), "in the future"},
	} {
		err := m.Check(Product, c.version, c.accept, c.at)
		require.ErrorIs(t, err, ErrManifest, c.name)
		require.ErrorContains(t, err, c.want, c.name)
	}

	// Signed by a key this server does not trust, or changed after signing.
	_, err = ParseManifest(data, sig, []minisign.PublicKey{otherPub})
	require.ErrorIs(t, err, ErrManifest)
	_, otherSig, err := manifest(now).Sign(otherPriv)
	require.NoError(t, err)
	_, err = ParseManifest(data, otherSig, []minisign.PublicKey{pub})
	require.ErrorContains(t, err, "signature not valid")
	changed := []byte(strings.Replace(string(data), `"staging"`, `"production"`, 1))
	_, err = ParseManifest(changed, sig, []minisign.PublicKey{pub})
	require.ErrorIs(t, err, ErrManifest)
	_, err = ParseManifest(data, sig, nil)
	require.ErrorIs(t, err, ErrNoKeys)

	bad := manifest(now)
	bad.Assets = append(bad.Assets, bad.Assets[0])
	_, _, err = bad.Sign(priv)
	require.ErrorContains(t, err, "listed twice")
	bad = manifest(now)
	bad.Channel = "nightly"
	_, _, err = bad.Sign(priv)
	require.ErrorContains(t, err, "not test, staging or production")
}

func compareStrings(a, b string) int { return strings.Compare(a, b) }

func TestFloor(t *testing.T) {
	t.Parallel()
	path := FloorFile(t.TempDir())
	f, err := LoadFloor(path)
	require.NoError(t, err)
	require.NoError(t, f.Allows("1", compareStrings), "an empty floor allows anything")

	now := time.Now()
	require.NoError(t, f.Observe(path, "3", now))
	require.NoError(t, f.Observe(path, "4", now))
	f, err = LoadFloor(path)
	require.NoError(t, err)
	require.Equal(t, Floor{Current: "4", Previous: "3", UpdatedAt: now.UTC().Round(0)}, Floor{Current: f.Current, Previous: f.Previous, UpdatedAt: f.UpdatedAt.Round(0)})
	require.NoError(t, f.Allows("5", compareStrings))
	require.NoError(t, f.Allows("4", compareStrings))
	require.NoError(t, f.Allows("3", compareStrings), "one step back")
	err = f.Allows("2", compareStrings)
	require.ErrorIs(t, err, ErrBelowFloor)
	require.ErrorContains(t, err, "2 is older than 4, which this server runs, and is not the version it ran before (3)")

	// After the step back, the next step back is refused.
	require.NoError(t, f.Observe(path, "3", now))
	require.NoError(t, f.Allows("4", compareStrings))
	require.True(t, errors.Is(f.Allows("2", compareStrings), ErrBelowFloor))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	require.NoError(t, os.WriteFile(path, []byte("{"), 0o600))
	_, err = LoadFloor(path)
	require.ErrorContains(t, err, "damaged")
}

func TestKeyStatements(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "trusted-keys")
	require.NoError(t, os.Mkdir(dir, 0o755))
	oldPub, oldKey, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	newPub, newKey, err := minisign.GenerateKey(nil)
	require.NoError(t, err)
	writeKey(t, dir, "release.pub", oldPub, 0o644)
	sign := func(key minisign.PrivateKey, serial int64, add []minisign.PublicKey, retire ...minisign.PublicKey) *Signed {
		s := &Statement{Product: Product, Kind: KindKeys, Serial: serial, Created: time.Now()}
		for _, k := range add {
			s.Add = append(s.Add, k.String())
		}
		for _, k := range retire {
			s.Retire = append(s.Retire, KeyID(k))
		}
		sd, err := s.Sign(key)
		require.NoError(t, err)
		return sd
	}
	ring := func() []minisign.PublicKey {
		r, err := LoadKeys(dir)
		require.NoError(t, err)
		return r.Any
	}

	// Signed by a key the server does not trust: refused.
	_, err = ApplyKeys(dir, sign(newKey, 1, []minisign.PublicKey{newPub}), time.Now())
	require.ErrorIs(t, err, ErrStatement)
	// A withdrawals statement is not a keys one.
	w, err := (&Statement{Product: Product, Kind: KindWithdrawals, Serial: 1, Created: time.Now(), Withdrawn: []string{"1.0"}}).Sign(oldKey)
	require.NoError(t, err)
	_, err = ApplyKeys(dir, w, time.Now())
	require.ErrorContains(t, err, "a withdrawals statement where keys belongs")
	// Retiring the only key is refused.
	_, err = ApplyKeys(dir, sign(oldKey, 1, nil, oldPub), time.Now())
	require.ErrorContains(t, err, "retire every key")

	applied, err := ApplyKeys(dir, sign(oldKey, 1, []minisign.PublicKey{newPub}), time.Now())
	require.NoError(t, err)
	require.True(t, applied)
	require.ElementsMatch(t, []minisign.PublicKey{oldPub, newPub}, ring())
	applied, err = ApplyKeys(dir, sign(oldKey, 1, []minisign.PublicKey{newPub}), time.Now())
	require.NoError(t, err)
	require.False(t, applied, "the same serial again changes nothing")

	applied, err = ApplyKeys(dir, sign(newKey, 2, nil, oldPub), time.Now())
	require.NoError(t, err)
	require.True(t, applied)
	require.Equal(t, []minisign.PublicKey{newPub}, ring())
	require.FileExists(t, filepath.Join(dir, "release.pub.retired"), "the retired key's file is kept, unread")
	_, err = ApplyKeys(dir, sign(oldKey, 3, []minisign.PublicKey{oldPub}), time.Now())
	require.ErrorIs(t, err, ErrStatement, "a retired key signs nothing any more")
}

func TestStatementValidation(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for name, c := range map[string]struct {
		s    Statement
		want string
	}{
		"other product":   {Statement{Product: "x", Kind: KindKeys, Serial: 1, Created: now, Retire: []string{"0123456789ABCDEF"}}, "product"},
		"serial 0":        {Statement{Product: Product, Kind: KindKeys, Created: now, Retire: []string{"0123456789ABCDEF"}}, "serial"},
		"empty keys":      {Statement{Product: Product, Kind: KindKeys, Serial: 1, Created: now}, "adds or retires"},
		"bad key":         {Statement{Product: Product, Kind: KindKeys, Serial: 1, Created: now, Add: []string{"RWQnope"}}, "not a minisign public key"},
		"bad key id":      {Statement{Product: Product, Kind: KindKeys, Serial: 1, Created: now, Retire: []string{"abc"}}, "not a key ID"},
		"empty withdraws": {Statement{Product: Product, Kind: KindWithdrawals, Serial: 1, Created: now}, "names a version"},
		"unknown kind":    {Statement{Product: Product, Kind: "root", Serial: 1, Created: now}, "kind"},
	} {
		require.ErrorContains(t, c.s.Validate(), c.want, name)
	}
}
