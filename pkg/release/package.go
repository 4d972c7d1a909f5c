package release

import (
	"context"
	"errors"
	"fmt"
	"os"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/storage"
)

// maxSumsSize bounds SHA256SUMS and its signature.
const maxSumsSize = 1 << 20

// Trust says which signatures a fleet accepts.
type Trust struct {
	Keys          []minisign.PublicKey
	AllowUnsigned bool
}

// FindVersion looks a ferry version up under the tag its env uses first
// (test- in dev, release- otherwise), then the other.
func (s *Source) FindVersion(ctx context.Context, env storage.Env, version string) (*Release, error) {
	prefixes := []string{PrefixRelease, PrefixTest}
	if env == storage.EnvDev {
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

// FetchPackage downloads the ferry package of a release into dir, after
// checking SHA256SUMS's signature against trust, and checks the package
// against SHA256SUMS and its control Version. A file that fails a check is
// removed; only a package that passed every check is returned.
func (s *Source) FetchPackage(ctx context.Context, rel *Release, version string, trust Trust, dir string, o DownloadOptions) (string, error) {
	name := DebAsset(version)
	debAsset, ok := rel.Asset(name)
	if !ok {
		return "", fmt.Errorf("release %s has no asset %s", rel.Tag, name)
	}
	sumsAsset, ok := rel.Asset(SumsAsset)
	if !ok {
		return "", fmt.Errorf("release %s has no %s: refusing an unverifiable package", rel.Tag, SumsAsset)
	}
	sums, err := s.Fetch(ctx, sumsAsset, maxSumsSize)
	if err != nil {
		return "", err
	}
	var sig []byte
	if sigAsset, ok := rel.Asset(SigAsset); ok {
		if sig, err = s.Fetch(ctx, sigAsset, maxSumsSize); err != nil {
			return "", err
		}
	}
	if err := VerifySums(sums, sig, trust.Keys, trust.AllowUnsigned); err != nil {
		return "", fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	table, err := ParseSums(sums)
	if err != nil {
		return "", fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	want, ok := table[name]
	if !ok {
		return "", fmt.Errorf("release %s: %s has no line for %s", rel.Tag, SumsAsset, name)
	}
	path, err := s.DownloadFile(ctx, debAsset, dir, want, o)
	if err != nil {
		return "", err
	}
	got, err := deb.Field(ctx, path, "Version")
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("%s is not a Debian package: %w", name, err)
	}
	if got != version {
		os.Remove(path)
		return "", fmt.Errorf("%s holds version %s, not %s", name, got, version)
	}
	return path, nil
}
