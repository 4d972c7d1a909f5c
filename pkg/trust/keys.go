// Package trust holds what a boot server trusts, all of it on the server's
// own disk and none of it in etcd: the release public keys, grouped by the
// channels they may sign for, the channels the server takes, the signed
// release manifest that binds a version to its channel, assets and expiry,
// and the version floor that allows no downgrade beyond one step back.
package trust

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"aead.dev/minisign"
)

// DefaultKeysDir is where the package and the operator put the release
// public keys, one minisign .pub file each.
const DefaultKeysDir = "/etc/ferry/trusted-keys"

// ErrNoKeys means no trusted key was found.
var ErrNoKeys = errors.New("no trusted release key")

// Channels lists every channel, narrowest audience last.
var Channels = []string{ChannelTest, ChannelStaging, ChannelProduction}

// KeyRing is the release keys a server trusts: Any sign for every channel
// the server takes; Only[channel] sign for that channel alone. A nightly
// CI key put in trusted-keys/test/ can sign test builds, and a server that
// takes test builds trusts it, but no manifest it signs is ever a staging
// or production one.
type KeyRing struct {
	Any  []minisign.PublicKey
	Only map[string][]minisign.PublicKey
}

// Keys is a ring of keys trusted for every channel.
func Keys(keys ...minisign.PublicKey) KeyRing { return KeyRing{Any: keys} }

// For returns the keys that may sign a manifest of channel.
func (r KeyRing) For(channel string) []minisign.PublicKey {
	return append(slices.Clip(r.Any), r.Only[channel]...)
}

// All returns every key of the ring, whatever it may sign.
func (r KeyRing) All() []minisign.PublicKey {
	all := slices.Clip(r.Any)
	for _, ch := range Channels {
		all = append(all, r.Only[ch]...)
	}
	return all
}

// Len is the number of keys in the ring.
func (r KeyRing) Len() int { return len(r.All()) }

// LoadKeys reads the minisign public keys at path: every *.pub file of a
// directory, trusted for every channel, and every *.pub file of its
// subdirectories test/, staging/ and production/, trusted for that channel
// only; or one file. What it reads must belong to root or to this process's
// user, must not be writable by group or others, and must not be a
// symbolic link: whoever could change it could make this server trust
// their key.
func LoadKeys(path string) (KeyRing, error) {
	var ring KeyRing
	fi, err := CheckOwned(path)
	if err != nil {
		return ring, fmt.Errorf("trusted keys: %w", err)
	}
	if !fi.IsDir() {
		if ring.Any, err = loadKeyFiles([]string{path}); err != nil {
			return ring, err
		}
	} else {
		if ring.Any, err = loadKeyDir(path); err != nil {
			return ring, err
		}
		for _, ch := range Channels {
			sub := filepath.Join(path, ch)
			if _, err := os.Lstat(sub); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if _, err := CheckOwned(sub); err != nil {
				return ring, fmt.Errorf("trusted keys: %w", err)
			}
			keys, err := loadKeyDir(sub)
			if err != nil {
				return ring, err
			}
			if len(keys) > 0 {
				if ring.Only == nil {
					ring.Only = map[string][]minisign.PublicKey{}
				}
				ring.Only[ch] = keys
			}
		}
	}
	if ring.Len() == 0 {
		return ring, fmt.Errorf("%w in %s: put the release public key there as NAME.pub (the file `ferry-ci keygen` writes)", ErrNoKeys, path)
	}
	return ring, nil
}

func loadKeyDir(dir string) ([]minisign.PublicKey, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return loadKeyFiles(files)
}

func loadKeyFiles(files []string) ([]minisign.PublicKey, error) {
	var keys []minisign.PublicKey
	for _, f := range files {
		if _, err := CheckOwned(f); err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		k, err := ParseKeys(string(data))
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", f, err)
		}
		keys = append(keys, k...)
	}
	return keys, nil
}

// ParseKeys parses minisign public keys, one a line, in the base64 form
// that minisign prints. "untrusted comment:" and "#" lines, as found in a
// .pub file, are skipped.
func ParseKeys(text string) ([]minisign.PublicKey, error) {
	var keys []minisign.PublicKey
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "untrusted comment:") || strings.HasPrefix(line, "#") {
			continue
		}
		var k minisign.PublicKey
		if err := k.UnmarshalText([]byte(line)); err != nil {
			return nil, fmt.Errorf("%q is not a minisign public key (want the base64 line of a .pub file, e.g. RWQ...)", line)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// CheckOwned refuses a trust file or directory that is a symbolic link,
// belongs to anyone but root or this process's user, or that group or
// others can write, and returns its information.
func CheckOwned(path string) (fs.FileInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symbolic link: put the file itself there, so that what this server trusts cannot change with the link's target", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("%s belongs to uid %d: whoever owns it could change what this server trusts; run chown root: %s", path, st.Uid, path)
	}
	if err := checkNotShared(path, fi); err != nil {
		return nil, err
	}
	return fi, nil
}

// CheckPrivate refuses a file or directory that group or others can write.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkNotShared(path, fi)
}

func checkNotShared(path string, fi fs.FileInfo) error {
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %s): whoever can write it could change what this server trusts; run chmod go-w %s", path, fi.Mode().Perm(), path)
	}
	return nil
}

// CheckPrivateDir refuses a directory that anyone but its owner can read
// or write (downloads, where a verified file waits for dpkg).
func CheckPrivateDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %s: others could swap a verified file before dpkg reads it; run chmod 0700 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}

// EnsurePrivateDir makes path a directory that only this process's user
// can use: it creates it with mode 0700, or takes an existing one back to
// 0700 when this user owns it. A directory owned by another user is
// refused.
func EnsurePrivateDir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this process (uid %d): another user could swap a verified file before dpkg reads it", path, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(path, 0o700); err != nil {
			return err
		}
	}
	return CheckPrivateDir(path)
}
