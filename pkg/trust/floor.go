package trust

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ErrBelowFloor is an install refused by the version floor.
var ErrBelowFloor = errors.New("below this server's version floor")

// Floor is this server's record of the version it runs and the one it ran
// before, kept in its data-dir. A server installs a lower version only when
// it is exactly the previous one: one step back, which a rollback needs, and
// never anything older, whatever etcd asks for.
type Floor struct {
	Current   string    `json:"current"`
	Previous  string    `json:"previous,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// FloorFile is the floor's file in a data-dir.
func FloorFile(dataDir string) string { return filepath.Join(dataDir, "version-floor.json") }

// LoadFloor reads the floor; a missing file is an empty floor.
func LoadFloor(path string) (*Floor, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Floor{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("version floor: %w", err)
	}
	var f Floor
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("version floor %s is damaged (%v): fix or remove it by hand after checking what this server runs", path, err)
	}
	return &f, nil
}

// Observe records that the server now runs version, and writes the floor
// when that changed it.
func (f *Floor) Observe(path, version string, now time.Time) error {
	if f.Current == version {
		return nil
	}
	if f.Current != "" {
		f.Previous = f.Current
	}
	f.Current, f.UpdatedAt = version, now.UTC()
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("version floor: %w", err)
	}
	return os.Rename(tmp, path)
}

// Allows tells whether the server may install target: not lower than what
// it runs, or exactly the version it ran before. compare(a, b) is negative
// when a is lower than b.
func (f *Floor) Allows(target string, compare func(a, b string) int) error {
	if f.Current == "" || compare(target, f.Current) >= 0 || target == f.Previous {
		return nil
	}
	before := f.Previous
	if before == "" {
		before = "nothing recorded"
	}
	return fmt.Errorf("%w: %s is older than %s, which this server runs, and is not the version it ran before (%s); only one step back is allowed", ErrBelowFloor, target, f.Current, before)
}
