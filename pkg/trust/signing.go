package trust

import (
	"errors"
	"fmt"
	"os"

	"aead.dev/minisign"
)

// LoadPrivateKey reads a minisign private key file. An encrypted key needs
// its password; an unencrypted one (minisign -G -W) is read as it is. The
// key's bytes never appear in an error.
func LoadPrivateKey(path, password string) (minisign.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("signing key: %w", err)
	}
	if minisign.IsEncrypted(data) {
		if password == "" {
			return minisign.PrivateKey{}, fmt.Errorf("signing key %s is encrypted: give its password in the variable named by --password-env", path)
		}
		key, err := minisign.DecryptKey(password, data)
		if err != nil {
			return minisign.PrivateKey{}, fmt.Errorf("signing key %s: cannot decrypt it (wrong password?)", path)
		}
		return key, nil
	}
	var key minisign.PrivateKey
	if err := key.UnmarshalText(data); err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("signing key %s is not a minisign private key", path)
	}
	return key, nil
}

// WriteKeyPair writes a new key pair to prefix.key (mode 0600, encrypted
// when password is set) and prefix.pub, refusing to overwrite either.
func WriteKeyPair(prefix, password string) (minisign.PublicKey, error) {
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		return pub, err
	}
	var keyText []byte
	if password != "" {
		keyText, err = minisign.EncryptKey(password, priv)
	} else {
		keyText, err = priv.MarshalText()
	}
	if err != nil {
		return pub, err
	}
	pubText, err := pub.MarshalText()
	if err != nil {
		return pub, err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{prefix + ".key", keyText, 0o600}, {prefix + ".pub", append(pubText, '\n'), 0o644}} {
		fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if errors.Is(err, os.ErrExist) {
			return pub, fmt.Errorf("%s exists; not overwriting a key", f.path)
		}
		if err != nil {
			return pub, err
		}
		if _, err := fh.Write(f.data); err != nil {
			fh.Close()
			return pub, err
		}
		if err := fh.Close(); err != nil {
			return pub, err
		}
	}
	return pub, nil
}
