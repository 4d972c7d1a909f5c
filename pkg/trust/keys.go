// Package trust holds what a boot server trusts, all of it on the server's
// own disk and none of it in etcd: the release public keys, the signed
// release manifest that binds a version to its channel, assets and expiry,
// and the version floor that allows no downgrade beyond one step back.
package trust

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// LoadKeys reads the minisign public keys at path: every *.pub file of a
// directory, or one file. Each file and the directory must not be writable
// by group or others, or whoever can write there could add a key.
func LoadKeys(path string) ([]minisign.PublicKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	if err := CheckPrivate(path); err != nil {
		return nil, err
	}
	files := []string{path}
	if fi.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.pub"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	var keys []minisign.PublicKey
	for _, f := range files {
		if err := CheckPrivate(f); err != nil {
			return nil, err
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
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w in %s: put the release public key there as NAME.pub (the file `ferry-ci keygen` writes)", ErrNoKeys, path)
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

// CheckPrivate refuses a file or directory that group or others can write.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
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
