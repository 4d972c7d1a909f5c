package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"aead.dev/minisign"
)

// Statement kinds.
const (
	// KindKeys introduces release keys and retires others: TUF's root
	// rotation, made small.
	KindKeys = "keys"
	// KindWithdrawals lists versions that must never be installed again.
	KindWithdrawals = "withdrawals"
)

// ErrStatement is a statement that must not be trusted.
var ErrStatement = errors.New("trust statement refused")

// Statement is a signed change to what servers trust, published through
// etcd (which cannot forge one) and applied by each server on its own:
// new release keys and retired ones, or withdrawn versions. Serial orders
// statements of a kind: a server applies one only when its serial is
// higher than the last it applied, so that an old statement replayed
// undoes nothing.
type Statement struct {
	Product string    `json:"product"`
	Kind    string    `json:"kind"`
	Serial  int64     `json:"serial"`
	Created time.Time `json:"created"`
	// Add are minisign public keys (the base64 line of a .pub file) that
	// every server trusts from now on, for every channel.
	Add []string `json:"add,omitempty"`
	// Retire are the IDs (16 hex digits, as `minisign -V` and ferry print
	// them) of keys that no server trusts from now on.
	Retire []string `json:"retire,omitempty"`
	// Withdrawn are versions no server installs, and no updater picks.
	Withdrawn []string `json:"withdrawn,omitempty"`
}

// Signed is a statement's encoding and its minisign signature, as etcd
// carries them.
type Signed struct {
	Data []byte `json:"data"`
	Sig  []byte `json:"sig"`
}

// KeyID is how ferry writes a key's ID.
func KeyID(k minisign.PublicKey) string { return fmt.Sprintf("%016X", k.ID()) }

// Validate checks a statement's own shape.
func (s *Statement) Validate() error {
	switch {
	case s.Product != Product:
		return fmt.Errorf("statement: product %q is not %s", s.Product, Product)
	case s.Serial <= 0:
		return fmt.Errorf("statement: serial must be above 0")
	case s.Created.IsZero():
		return fmt.Errorf("statement: no creation time")
	}
	switch s.Kind {
	case KindKeys:
		if len(s.Add) == 0 && len(s.Retire) == 0 {
			return fmt.Errorf("statement: a keys statement adds or retires a key")
		}
		if _, err := ParseKeys(strings.Join(s.Add, "\n")); err != nil {
			return fmt.Errorf("statement: %w", err)
		}
		for _, id := range s.Retire {
			if len(id) != 16 || strings.Trim(id, "0123456789ABCDEF") != "" {
				return fmt.Errorf("statement: %q is not a key ID (16 upper-case hex digits)", id)
			}
		}
	case KindWithdrawals:
		if len(s.Withdrawn) == 0 {
			return fmt.Errorf("statement: a withdrawals statement names a version")
		}
	default:
		return fmt.Errorf("statement: kind %q is not %s or %s", s.Kind, KindKeys, KindWithdrawals)
	}
	return nil
}

// Sign encodes and signs the statement.
func (s *Statement) Sign(key minisign.PrivateKey) (*Signed, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return &Signed{Data: data, Sig: minisign.Sign(key, data)}, nil
}

// Verify checks the signature against keys, then decodes and validates a
// statement of kind. Nothing is read before the signature verified.
func (sd *Signed) Verify(kind string, keys []minisign.PublicKey) (*Statement, error) {
	if len(sd.Data) > MaxManifestSize || len(sd.Sig) > MaxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrStatement, MaxManifestSize)
	}
	if !slices.ContainsFunc(keys, func(k minisign.PublicKey) bool { return minisign.Verify(k, sd.Data, sd.Sig) }) {
		return nil, fmt.Errorf("%w: not signed by a key this server trusts for every channel", ErrStatement)
	}
	s, err := DecodeStatement(sd.Data)
	if err != nil {
		return nil, err
	}
	if s.Kind != kind {
		return nil, fmt.Errorf("%w: a %s statement where %s belongs", ErrStatement, s.Kind, kind)
	}
	return s, nil
}

// DecodeStatement decodes a statement without checking a signature: for
// tools that show one or build the next, never for deciding what to trust.
func DecodeStatement(data []byte) (*Statement, error) {
	var s Statement
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatement, err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatement, err)
	}
	return &s, nil
}

// rotationFile records, in the key directory, the serial of the last keys
// statement applied there.
const rotationFile = "rotation.json"

type rotationRecord struct {
	Serial    int64     `json:"serial"`
	AppliedAt time.Time `json:"applied_at"`
}

// ApplyKeys applies a keys statement to the key directory dir, whose keys
// for every channel (Any) must have signed it: it writes each added key as
// rotated-<ID>.pub, renames the file of each retired key to <name>.retired
// (kept, never read), and records the serial. A statement whose serial is
// not above the last applied changes nothing (applied is false). It
// refuses a statement that would leave no key for every channel.
func ApplyKeys(dir string, sd *Signed, now time.Time) (applied bool, err error) {
	ring, err := LoadKeys(dir)
	if err != nil {
		return false, err
	}
	s, err := sd.Verify(KindKeys, ring.Any)
	if err != nil {
		return false, err
	}
	var rec rotationRecord
	if data, err := os.ReadFile(filepath.Join(dir, rotationFile)); err == nil {
		if err := json.Unmarshal(data, &rec); err != nil {
			return false, fmt.Errorf("%s is damaged (%v): check the key directory by hand", filepath.Join(dir, rotationFile), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if s.Serial <= rec.Serial {
		return false, nil
	}
	added, _ := ParseKeys(strings.Join(s.Add, "\n"))
	left := 0
	for _, k := range append(ring.Any, added...) {
		if !slices.Contains(s.Retire, KeyID(k)) {
			left++
		}
	}
	if left == 0 {
		return false, fmt.Errorf("%w: it would retire every key this server trusts for every channel", ErrStatement)
	}
	for _, k := range added {
		if slices.Contains(s.Retire, KeyID(k)) {
			continue
		}
		text := fmt.Sprintf("untrusted comment: added by keys statement %d\n%s\n", s.Serial, k.String())
		if err := WriteFile(filepath.Join(dir, "rotated-"+KeyID(k)+".pub"), []byte(text), 0o644); err != nil {
			return false, err
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return false, err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return false, err
		}
		keys, err := ParseKeys(string(data))
		if err != nil {
			return false, fmt.Errorf("trusted key %s: %w", f, err)
		}
		if slices.ContainsFunc(keys, func(k minisign.PublicKey) bool { return slices.Contains(s.Retire, KeyID(k)) }) {
			if err := os.Rename(f, f+".retired"); err != nil {
				return false, err
			}
		}
	}
	data, _ := json.Marshal(rotationRecord{Serial: s.Serial, AppliedAt: now.UTC()})
	return true, WriteFile(filepath.Join(dir, rotationFile), data, 0o644)
}

// WriteFile writes path through a synced temporary file and a rename, so
// that a crash leaves the old file or the new one, never half of one.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// Withdrawals keeps, in a file of the data-dir, the withdrawals statement
// with the highest serial this server has verified: a statement that etcd
// loses, or an older one replayed, withdraws no less.
type Withdrawals struct {
	Path string
}

// Update verifies sd (nil: none in etcd) against keys, keeps it when its
// serial is the highest seen, and returns the versions withdrawn.
func (w Withdrawals) Update(sd *Signed, keys []minisign.PublicKey) ([]string, error) {
	var kept *Statement
	if data, err := os.ReadFile(w.Path); err == nil {
		var old Signed
		if err := json.Unmarshal(data, &old); err != nil {
			return nil, fmt.Errorf("%s is damaged (%v): remove it, and it is fetched again from etcd", w.Path, err)
		}
		// It verified when it was kept; a key retired since cannot
		// withdraw less, so it is decoded without one.
		if kept, err = DecodeStatement(old.Data); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if sd != nil {
		s, err := sd.Verify(KindWithdrawals, keys)
		if err != nil {
			return withdrawnOf(kept), err
		}
		if kept == nil || s.Serial > kept.Serial {
			data, _ := json.Marshal(sd)
			if err := WriteFile(w.Path, data, 0o600); err != nil {
				return nil, err
			}
			kept = s
		}
	}
	return withdrawnOf(kept), nil
}

func withdrawnOf(s *Statement) []string {
	if s == nil {
		return nil
	}
	return s.Withdrawn
}
