package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/trust"
)

// maxSumsSize bounds SHA256SUMS and its signature.
const maxSumsSize = 1 << 20

// Trust says what a server accepts. Everything in it comes from the
// server's own disk and its env, never from a release or from etcd.
type Trust struct {
	Keys trust.KeyRing
	// Channels are the manifest channels this server takes under the
	// fleet's env, preferred first (see Accepted).
	Channels []string
	// AllowUnsigned, a lab switch, takes a release that has no signed
	// manifest on SHA256SUMS alone, unsigned.
	AllowUnsigned bool
	// Now is the time manifests are checked at; zero means time.Now().
	Now time.Time
}

// Channels returns the manifest channels an env takes, preferred first: prod
// takes production only; staging takes staging and production; dev takes
// any channel.
func Channels(env fleet.Env) []string {
	switch env {
	case fleet.EnvProd:
		return []string{trust.ChannelProduction}
	case fleet.EnvStaging:
		return []string{trust.ChannelStaging, trust.ChannelProduction}
	case fleet.EnvDev:
		return []string{trust.ChannelTest, trust.ChannelStaging, trust.ChannelProduction}
	}
	return nil
}

// Accepted returns the channels a server takes under env, preferred
// first: those env takes (see Channels) that the server's own config
// allows. etcd's env narrows what a server takes, never widens it.
func Accepted(env fleet.Env, allowed []string) []string {
	return trust.Narrow(Channels(env), allowed)
}

// EnvWithin returns env, or the widest env narrower than it whose every
// channel the server allows: what the updater looks for, so that it never
// asks for a release that the servers would refuse. dev needs test,
// staging needs staging, prod needs production.
func EnvWithin(env fleet.Env, allowed []string) fleet.Env {
	needs := map[fleet.Env]string{fleet.EnvDev: trust.ChannelTest, fleet.EnvStaging: trust.ChannelStaging, fleet.EnvProd: trust.ChannelProduction}
	narrower := map[fleet.Env]fleet.Env{fleet.EnvDev: fleet.EnvStaging, fleet.EnvStaging: fleet.EnvProd, fleet.EnvProd: fleet.EnvNone}
	for env != fleet.EnvNone && !slices.Contains(allowed, needs[env]) {
		env = narrower[env]
	}
	return env
}

// ChannelOf is the channel a release is published on: test for a test- tag,
// staging for a release- pre-release, production for a full release-.
func ChannelOf(rel *Release) string {
	prefix, _, _ := SplitTag(rel.Tag)
	switch {
	case prefix == PrefixTest:
		return trust.ChannelTest
	case rel.Prerelease:
		return trust.ChannelStaging
	}
	return trust.ChannelProduction
}

// FindVersion looks a ferry version up under the tag its env uses first
// (test- in dev, release- otherwise), then the other.
func (s *Source) FindVersion(ctx context.Context, env fleet.Env, version string) (*Release, error) {
	prefixes := []string{PrefixRelease, PrefixTest}
	if env == fleet.EnvDev {
		prefixes = []string{PrefixTest, PrefixRelease}
	}
	var err error
	for _, p := range prefixes {
		var r *Release
		r, err = s.ByTag(ctx, p+version)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no release tagged %s%s or %s%s: %w", prefixes[0], version, prefixes[1], version, err)
}

// Manifest returns the signed manifest of version in rel for the first of
// tr.Channels that rel carries a manifest for, verified against tr.Keys
// and checked for product, version, channel and expiry. It returns
// trust.ErrManifest when rel has none the fleet takes, or none is valid.
func (s *Source) Manifest(ctx context.Context, rel *Release, version string, tr Trust) (*trust.Manifest, error) {
	now := tr.Now
	if now.IsZero() {
		now = time.Now()
	}
	for _, ch := range tr.Channels {
		a, ok := rel.Asset(trust.ManifestAsset(ch))
		if !ok {
			continue
		}
		sigAsset, ok := rel.Asset(trust.ManifestAsset(ch) + ".minisig")
		if !ok {
			return nil, fmt.Errorf("release %s: %s has no signature: %w", rel.Tag, a.Name, trust.ErrManifest)
		}
		data, err := s.Fetch(ctx, a, trust.MaxManifestSize)
		if err != nil {
			return nil, err
		}
		sig, err := s.Fetch(ctx, sigAsset, trust.MaxManifestSize)
		if err != nil {
			return nil, err
		}
		m, err := trust.ParseManifest(data, sig, tr.Keys.For(ch))
		if err == nil {
			err = m.Check(trust.Product, version, []string{ch}, now)
		}
		if err != nil {
			return nil, fmt.Errorf("release %s, %s: %w", rel.Tag, a.Name, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("release %s has no signed manifest for a channel this server takes (%v): %w", rel.Tag, tr.Channels, trust.ErrManifest)
}

// FetchPackage downloads the ferry package of a release into dir, after
// verifying the release's signed manifest (see Manifest), and checks the
// package against the manifest's size and SHA-256 and its control Version.
// It never reads more bytes than the manifest gives. A file that fails a
// check is removed; only a package that passed every check is returned,
// with its SHA-256.
func (s *Source) FetchPackage(ctx context.Context, rel *Release, version string, tr Trust, dir string, o DownloadOptions) (string, string, error) {
	p, err := s.SignedPackage(ctx, rel, version, tr)
	if err != nil {
		return "", "", err
	}
	path, err := s.DownloadPackage(ctx, p, dir, o)
	if err != nil {
		return "", "", err
	}
	if err := p.CheckVersion(ctx, path); err != nil {
		os.Remove(path)
		return "", "", err
	}
	return path, p.Want.SHA256, nil
}

// SignedPackage is the ferry package of a release, as the release's
// signed manifest gives it (or, with the lab switch, SHA256SUMS).
type SignedPackage struct {
	// Asset is the release asset to download.
	Asset Asset
	// Want is the manifest's entry: name, size and SHA-256. Its size
	// is 0 when only an unsigned SHA256SUMS gave the SHA-256.
	Want    trust.Asset
	Version string
}

// SignedPackage verifies the release's signed manifest (see Manifest) and
// returns the entry of the ferry package of version, refusing a release
// whose asset GitHub announces at another size.
func (s *Source) SignedPackage(ctx context.Context, rel *Release, version string, tr Trust) (*SignedPackage, error) {
	name := DebAsset(version)
	debAsset, ok := rel.Asset(name)
	if !ok {
		return nil, fmt.Errorf("release %s has no asset %s", rel.Tag, name)
	}
	var want trust.Asset
	m, err := s.Manifest(ctx, rel, version, tr)
	switch {
	case err == nil:
		if want, ok = m.Asset(name); !ok {
			return nil, fmt.Errorf("release %s: the signed manifest lists no %s: %w", rel.Tag, name, trust.ErrManifest)
		}
	case tr.AllowUnsigned && errors.Is(err, trust.ErrManifest):
		// The lab switch: SHA256SUMS, unsigned, is all there is.
		if want, err = s.unsignedEntry(ctx, rel, name); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	if want.Size > 0 && debAsset.Size != want.Size {
		err := fmt.Errorf("release %s: GitHub announces %s as %d bytes, the signed manifest says %d", rel.Tag, name, debAsset.Size, want.Size)
		if debAsset.Size > want.Size {
			err = fmt.Errorf("%w: %w", err, ErrTooLarge)
		}
		return nil, err
	}
	return &SignedPackage{Asset: debAsset, Want: want, Version: version}, nil
}

// DownloadPackage downloads p into dir, reading no more bytes than its
// signed size, and checks its SHA-256.
func (s *Source) DownloadPackage(ctx context.Context, p *SignedPackage, dir string, o DownloadOptions) (string, error) {
	o.MaxSize = p.Want.Size
	return s.DownloadFile(ctx, p.Asset, dir, p.Want.SHA256, o)
}

// CheckVersion checks that the package at path is a Debian package of
// p's version.
func (p *SignedPackage) CheckVersion(ctx context.Context, path string) error {
	got, err := deb.Field(ctx, path, "Version")
	if err != nil {
		return fmt.Errorf("%s is not a Debian package: %w", p.Want.Name, err)
	}
	if got != p.Version {
		return fmt.Errorf("%s holds version %s, not %s", p.Want.Name, got, p.Version)
	}
	return nil
}

// unsignedEntry is the SHA256SUMS line of name, for the allow-unsigned lab
// switch.
func (s *Source) unsignedEntry(ctx context.Context, rel *Release, name string) (trust.Asset, error) {
	sumsAsset, ok := rel.Asset(SumsAsset)
	if !ok {
		return trust.Asset{}, fmt.Errorf("release %s has neither a signed manifest nor %s: refusing an unverifiable package", rel.Tag, SumsAsset)
	}
	sums, err := s.Fetch(ctx, sumsAsset, maxSumsSize)
	if err != nil {
		return trust.Asset{}, err
	}
	table, err := ParseSums(sums)
	if err != nil {
		return trust.Asset{}, fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	sum, ok := table[name]
	if !ok {
		return trust.Asset{}, fmt.Errorf("release %s: %s has no line for %s", rel.Tag, SumsAsset, name)
	}
	return trust.Asset{Name: name, SHA256: sum}, nil
}

// Validity is how long a manifest of each channel is valid unless told
// otherwise: a release must be installed, or published again, within it.
var Validity = map[string]time.Duration{
	trust.ChannelTest:       30 * 24 * time.Hour,
	trust.ChannelStaging:    90 * 24 * time.Hour,
	trust.ChannelProduction: 365 * 24 * time.Hour,
}

// NewManifest builds the manifest of version for channel over the package
// file at debPath, valid from now for validity (Validity[channel] when 0).
func NewManifest(version, channel, debPath string, now time.Time, validity time.Duration) (*trust.Manifest, error) {
	if validity <= 0 {
		validity = Validity[channel]
	}
	f, err := os.Open(debPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", debPath, err)
	}
	m := &trust.Manifest{
		Product: trust.Product, Version: version, Channel: channel,
		Assets:  []trust.Asset{{Name: DebAsset(version), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}},
		Created: now.UTC().Truncate(time.Second), Expires: now.UTC().Truncate(time.Second).Add(validity),
	}
	return m, m.Validate()
}

// ManifestFiles signs m with key and returns the two release assets, by
// name: the manifest of its channel and its signature.
func ManifestFiles(m *trust.Manifest, key minisign.PrivateKey) (map[string][]byte, error) {
	data, sig, err := m.Sign(key)
	if err != nil {
		return nil, err
	}
	name := trust.ManifestAsset(m.Channel)
	return map[string][]byte{name: data, name + ".minisig": sig}, nil
}

// maxInline bounds a file that Resolve carries in the request: etcd values
// should stay small. A larger one is downloaded by each worker.
const maxInline = 64 << 10

// smallFile reports whether an asset is one of the small files a worker
// verifies a package with: a channel's manifest or its signature,
// SHA256SUMS or its signature.
func smallFile(name string, channels []string) bool {
	if name == SumsAsset || name == SigAsset {
		return true
	}
	for _, ch := range channels {
		if m := trust.ManifestAsset(ch); name == m || name == m+".minisig" {
			return true
		}
	}
	return false
}

// Resolve finds the release of version (see FindVersion) once for the
// whole fleet, with the content of its small files for the channels given
// (see Channels), so that a worker fetches nothing but the package itself,
// and that from its web download URL. Nothing is verified here: every
// worker verifies what it is given against its own keys.
func (s *Source) Resolve(ctx context.Context, env fleet.Env, version string) (*fleet.ReleaseRef, error) {
	rel, err := s.FindVersion(ctx, env, version)
	if err != nil {
		return nil, err
	}
	channels := Channels(env)
	ref := &fleet.ReleaseRef{Repo: s.Repo(), Tag: rel.Tag}
	for _, a := range rel.Assets {
		ar := fleet.AssetRef{Name: a.Name, ID: a.ID, Size: a.Size, URL: a.URL}
		switch {
		case smallFile(a.Name, channels) && a.Size <= maxInline:
			if ar.Data, err = s.Fetch(ctx, a, max(trust.MaxManifestSize, maxSumsSize)); err != nil {
				return nil, err
			}
		case a.Name != DebAsset(version):
			continue
		}
		ref.Assets = append(ref.Assets, ar)
	}
	return ref, nil
}

// FromRef is the release a fleet.ReleaseRef describes, for FetchPackage.
func FromRef(ref *fleet.ReleaseRef) *Release {
	prefix, v, _ := SplitTag(ref.Tag)
	rel := &Release{Tag: ref.Tag, Prefix: prefix, Version: v}
	for _, a := range ref.Assets {
		rel.Assets = append(rel.Assets, Asset{ID: a.ID, Name: a.Name, Size: a.Size, URL: a.URL, Data: a.Data})
	}
	return rel
}
