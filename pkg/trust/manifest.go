package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"aead.dev/minisign"
)

// Product is the product every ferry manifest names.
const Product = "ferry"

// Channels a release is published on.
const (
	ChannelTest       = "test"
	ChannelStaging    = "staging"
	ChannelProduction = "production"
)

// MaxManifestSize bounds a manifest and its signature.
const MaxManifestSize = 1 << 20

// ErrManifest is a manifest that must not be trusted: a bad signature, a
// version, product or channel other than asked for, or an expired one.
var ErrManifest = errors.New("release manifest refused")

// ManifestAsset is the release asset that holds the manifest for channel;
// its signature is ManifestAsset(channel) + ".minisig".
func ManifestAsset(channel string) string { return "manifest-" + channel + ".json" }

// Asset is one file of a release, as the manifest binds it.
type Asset struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest is the signed statement that a release of a version is meant for
// a channel, holds exactly these assets, and is valid until Expires.
type Manifest struct {
	Product string    `json:"product"`
	Version string    `json:"version"`
	Channel string    `json:"channel"`
	Assets  []Asset   `json:"assets"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks the manifest's own shape.
func (m *Manifest) Validate() error {
	switch {
	case m.Product == "":
		return fmt.Errorf("manifest: no product")
	case m.Version == "":
		return fmt.Errorf("manifest: no version")
	case !slices.Contains([]string{ChannelTest, ChannelStaging, ChannelProduction}, m.Channel):
		return fmt.Errorf("manifest: channel %q is not test, staging or production", m.Channel)
	case m.Created.IsZero() || m.Expires.IsZero() || !m.Expires.After(m.Created):
		return fmt.Errorf("manifest: created %s and expires %s do not make a validity period", m.Created, m.Expires)
	case len(m.Assets) == 0:
		return fmt.Errorf("manifest: no assets")
	}
	seen := map[string]bool{}
	for _, a := range m.Assets {
		if a.Name == "" || a.Size <= 0 || !sha256Pattern.MatchString(a.SHA256) {
			return fmt.Errorf("manifest: asset %q needs a name, a size > 0 and a lower-case hex sha256", a.Name)
		}
		if seen[a.Name] {
			return fmt.Errorf("manifest: asset %s is listed twice", a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

// Asset returns the manifest's entry for name.
func (m *Manifest) Asset(name string) (Asset, bool) {
	for _, a := range m.Assets {
		if a.Name == name {
			return a, true
		}
	}
	return Asset{}, false
}

// Sign encodes the manifest and signs the encoding with key; it returns
// the file and its .minisig.
func (m *Manifest) Sign(key minisign.PrivateKey) (data, sig []byte, err error) {
	if err := m.Validate(); err != nil {
		return nil, nil, err
	}
	data, err = json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	data = append(data, '\n')
	return data, minisign.Sign(key, data), nil
}

// ParseManifest checks data's signature against keys, then decodes and
// validates it. Nothing in data is read before the signature verified.
func ParseManifest(data, sig []byte, keys []minisign.PublicKey) (*Manifest, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: %w", ErrManifest, ErrNoKeys)
	}
	if len(data) > MaxManifestSize || len(sig) > MaxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrManifest, MaxManifestSize)
	}
	ok := false
	for _, k := range keys {
		if minisign.Verify(k, data, sig) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: signature not valid for any trusted key", ErrManifest)
	}
	return decodeManifest(data)
}

func decodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return &m, nil
}

// Check refuses a manifest for another product or version, for a channel
// not in accept, or outside its validity period at now.
func (m *Manifest) Check(product, version string, accept []string, now time.Time) error {
	switch {
	case m.Product != product:
		return fmt.Errorf("%w: it is for product %q, not %q", ErrManifest, m.Product, product)
	case m.Version != version:
		return fmt.Errorf("%w: it is for version %s, not the requested %s", ErrManifest, m.Version, version)
	case !slices.Contains(accept, m.Channel):
		return fmt.Errorf("%w: it is for channel %s; this server takes %v", ErrManifest, m.Channel, accept)
	case !now.Before(m.Expires):
		return fmt.Errorf("%w: it expired at %s; publish the release again with a fresh manifest", ErrManifest, m.Expires.UTC().Format(time.RFC3339))
	case now.Add(time.Hour).Before(m.Created):
		return fmt.Errorf("%w: it was created at %s, in the future; check the clocks", ErrManifest, m.Created.UTC().Format(time.RFC3339))
	}
	return nil
}

// ParseChannels checks a server's channels setting: names from Channels,
// each once, at least one.
func ParseChannels(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("channels: name at least one of %s", strings.Join(Channels, ", "))
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(Channels, n) {
			return nil, fmt.Errorf("channels: %q is not a channel; want some of %s", n, strings.Join(Channels, ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Narrow keeps the channels of want, in want's order, that the server's
// own channels allow: etcd may narrow what a server takes, never widen it.
func Narrow(want, allowed []string) []string {
	var out []string
	for _, ch := range want {
		if slices.Contains(allowed, ch) {
			out = append(out, ch)
		}
	}
	return out
}
