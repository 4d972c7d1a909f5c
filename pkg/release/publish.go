package release

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-github/v84/github"
)

// Assets are the three files every ferry release carries.
func Assets(version string) []string {
	return []string{DebAsset(version), SumsAsset, SigAsset}
}

// VerifyRelease checks that a release has its three assets and that
// SHA256SUMS carries a valid signature from trust and lists the package.
// It downloads only the two small files.
func (s *Source) VerifyRelease(ctx context.Context, rel *Release, version string, trust Trust) error {
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
	if err := VerifySums(sums, sig, trust.Keys, false); err != nil {
		return fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	table, err := ParseSums(sums)
	if err != nil {
		return fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	if _, ok := table[DebAsset(version)]; !ok {
		return fmt.Errorf("release %s: %s has no line for %s", rel.Tag, SumsAsset, DebAsset(version))
	}
	return nil
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

// CopyAssets copies the named assets of one release to another, through
// dir, verified against the SHA256SUMS among them.
func (s *Source) CopyAssets(ctx context.Context, from, to *Release, version, dir string) error {
	sumsAsset, _ := from.Asset(SumsAsset)
	sums, err := s.Fetch(ctx, sumsAsset, maxSumsSize)
	if err != nil {
		return err
	}
	table, err := ParseSums(sums)
	if err != nil {
		return err
	}
	debAsset, _ := from.Asset(DebAsset(version))
	path, err := s.DownloadFile(ctx, debAsset, dir, table[DebAsset(version)], DownloadOptions{})
	if err != nil {
		return err
	}
	defer os.Remove(path)
	sigAsset, _ := from.Asset(SigAsset)
	sig, err := s.Fetch(ctx, sigAsset, maxSumsSize)
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.UploadFile(ctx, to, DebAsset(version), f); err != nil {
		return err
	}
	for name, data := range map[string][]byte{SumsAsset: sums, SigAsset: bytes.Clone(sig)} {
		if err := s.UploadAsset(ctx, to, name, data); err != nil {
			return err
		}
	}
	return nil
}
