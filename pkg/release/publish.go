package release

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"aead.dev/minisign"

	"github.com/google/go-github/v84/github"
)

// Assets are the three files every ferry release carries.
func Assets(version string) []string {
	return []string{DebAsset(version), SumsAsset, SigAsset}
}

// VerifyRelease checks that a release has its three assets, that
// SHA256SUMS carries a valid signature from tr.Keys and lists the package,
// and that the release carries a valid signed manifest for the channel it
// is on (ChannelOf). It downloads only the small files.
func (s *Source) VerifyRelease(ctx context.Context, rel *Release, version string, tr Trust) error {
	for _, name := range Assets(version) {
		if _, ok := rel.Asset(name); !ok {
			return fmt.Errorf("release %s lacks the asset %s", rel.Tag, name)
		}
	}
	sumsAsset, _ := rel.Asset(SumsAsset)
	sigAsset, _ := rel.Asset(SigAsset)
	sums, err := s.Fetch(ctx, sumsAsset, maxSumsSize)
	if err != nil {
		return err
	}
	sig, err := s.Fetch(ctx, sigAsset, maxSumsSize)
	if err != nil {
		return err
	}
	if err := VerifySums(sums, sig, tr.Keys.All(), false); err != nil {
		return fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	table, err := ParseSums(sums)
	if err != nil {
		return fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	if _, ok := table[DebAsset(version)]; !ok {
		return fmt.Errorf("release %s: %s has no line for %s", rel.Tag, SumsAsset, DebAsset(version))
	}
	tr.Channels = []string{ChannelOf(rel)}
	_, err = s.Manifest(ctx, rel, version, tr)
	return err
}

// CreateRelease creates a release for tag at commitish.
func (s *Source) CreateRelease(ctx context.Context, tag, commitish string, prerelease bool, body string) (*Release, error) {
	gr, _, err := s.gh.Repositories.CreateRelease(ctx, s.owner, s.name, &github.RepositoryRelease{
		TagName: github.Ptr(tag), TargetCommitish: github.Ptr(commitish), Name: github.Ptr(tag),
		Body: github.Ptr(body), Prerelease: github.Ptr(prerelease), Draft: github.Ptr(false),
	})
	if err != nil {
		return nil, s.wrap("create release "+tag, err)
	}
	r, _ := fromGitHub(gr)
	return r, nil
}

// SetPrerelease marks a release as a pre-release or a full release.
func (s *Source) SetPrerelease(ctx context.Context, rel *Release, prerelease bool) error {
	edit := &github.RepositoryRelease{Prerelease: github.Ptr(prerelease)}
	if !prerelease {
		edit.MakeLatest = github.Ptr("true")
	}
	if _, _, err := s.gh.Repositories.EditRelease(ctx, s.owner, s.name, rel.ID, edit); err != nil {
		return s.wrap("edit release "+rel.Tag, err)
	}
	return nil
}

// UploadAsset uploads a file to a release under name.
func (s *Source) UploadAsset(ctx context.Context, rel *Release, name string, data []byte) error {
	tmp, err := os.CreateTemp("", "ferry-upload-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, 0); err != nil {
		return err
	}
	return s.UploadFile(ctx, rel, name, tmp)
}

// UploadFile uploads an open file to a release under name.
func (s *Source) UploadFile(ctx context.Context, rel *Release, name string, f *os.File) error {
	if _, _, err := s.gh.Repositories.UploadReleaseAsset(ctx, s.owner, s.name, rel.ID, &github.UploadOptions{Name: name}, f); err != nil {
		return s.wrap("upload "+name+" to "+rel.Tag, err)
	}
	return nil
}

// DeleteAsset removes an asset from a release.
func (s *Source) DeleteAsset(ctx context.Context, a Asset) error {
	if _, err := s.gh.Repositories.DeleteReleaseAsset(ctx, s.owner, s.name, a.ID); err != nil {
		return s.wrap("delete asset "+a.Name, err)
	}
	return nil
}

// CopyAssets uploads to a release the package at debPath (downloaded from
// from and verified), with from's SHA256SUMS and its signature.
func (s *Source) CopyAssets(ctx context.Context, from, to *Release, version, debPath string) error {
	f, err := os.Open(filepath.Clean(debPath))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.UploadFile(ctx, to, DebAsset(version), f); err != nil {
		return err
	}
	for _, name := range []string{SumsAsset, SigAsset} {
		a, ok := from.Asset(name)
		if !ok {
			return fmt.Errorf("release %s has no %s", from.Tag, name)
		}
		data, err := s.Fetch(ctx, a, maxSumsSize)
		if err != nil {
			return err
		}
		if err := s.UploadAsset(ctx, to, name, bytes.Clone(data)); err != nil {
			return err
		}
	}
	return nil
}

// SignedAssets returns, by name, the assets of a release of version on
// channel: the package at debPath, SHA256SUMS and its signature, and the
// channel's manifest and its signature, all signed with key. It reads the
// package into memory: for tests and small tools.
func SignedAssets(version, channel, debPath string, key minisign.PrivateKey, now time.Time, validity time.Duration) (map[string][]byte, error) {
	deb, err := os.ReadFile(debPath)
	if err != nil {
		return nil, err
	}
	sums, err := MakeSums(map[string]io.Reader{DebAsset(version): bytes.NewReader(deb)})
	if err != nil {
		return nil, err
	}
	m, err := NewManifest(version, channel, debPath, now, validity)
	if err != nil {
		return nil, err
	}
	assets, err := ManifestFiles(m, key)
	if err != nil {
		return nil, err
	}
	assets[DebAsset(version)], assets[SumsAsset], assets[SigAsset] = deb, sums, SignSums(key, sums)
	return assets, nil
}
