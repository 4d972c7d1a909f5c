package artifacts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/hashicorp/go-version"
)

// Ignore lists upstream versions that generate-artifacts must skip, by
// component name. It is read from artifacts_ignore.yaml.
type Ignore struct {
	Debs    map[string][]string `yaml:"debs,omitempty"`
	Images  map[string][]string `yaml:"images,omitempty"`
	OSImage []string            `yaml:"osImage,omitempty"`
}

// LoadIgnore reads an ignore file; a missing file ignores nothing.
func LoadIgnore(p string) (*Ignore, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return &Ignore{}, nil
	}
	if err != nil {
		return nil, err
	}
	var ig Ignore
	if err := decodeStrict(data, &ig); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &ig, nil
}

// Sources say where generate-artifacts looks.
type Sources struct {
	GitHubAPIURL string
	GitHubToken  string
	Proxy        string
	// Release skips pre-releases: GitHub pre-releases, tags with a
	// pre-release part (1.2.0-rc.1) and OS versions marked prerelease.
	Release bool
	Ignore  *Ignore
	// WorkDir holds downloads while they are hashed.
	WorkDir string
}

// Feed is an OS image channel's listing.
type Feed struct {
	Versions []FeedVersion `json:"versions"`
}

// FeedVersion is one OS image version in a feed.
type FeedVersion struct {
	Version    string `json:"version"`
	Prerelease bool   `json:"prerelease,omitempty"`
	Kernel     File   `json:"kernel"`
	Initrd     File   `json:"initrd"`
}

// Generate returns a copy of set with every component at its newest
// upstream version that is not ignored. Any source that fails is an error:
// nothing is half updated.
func Generate(ctx context.Context, set *Set, src Sources) (*Set, error) {
	if src.Ignore == nil {
		src.Ignore = &Ignore{}
	}
	out := *set
	out.Debs = append([]Deb(nil), set.Debs...)
	out.Images = append([]Image(nil), set.Images...)
	for i := range out.Debs {
		if err := src.latestDeb(ctx, &out.Debs[i]); err != nil {
			return nil, fmt.Errorf("deb %s: %w", out.Debs[i].Name, err)
		}
	}
	for i := range out.Images {
		if err := src.latestImage(ctx, &out.Images[i]); err != nil {
			return nil, fmt.Errorf("image %s: %w", out.Images[i].Name, err)
		}
	}
	if set.OSImage != nil {
		o := *set.OSImage
		if err := src.latestOS(ctx, &o); err != nil {
			return nil, fmt.Errorf("osImage %s: %w", o.Channel, err)
		}
		out.OSImage = &o
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("generated set: %w", err)
	}
	return &out, nil
}

// parseUpstream reads a version from a tag such as v1.2.3 or 1.2.3.
func parseUpstream(tag string) (*version.Version, bool) {
	v, err := version.NewVersion(strings.TrimPrefix(tag, "v"))
	return v, err == nil
}

func (src *Sources) skip(v *version.Version, prerelease bool, ignored []string, raw string) bool {
	if src.Release && (prerelease || v.Prerelease() != "") {
		return true
	}
	for _, ig := range ignored {
		if ig == raw || ig == strings.TrimPrefix(raw, "v") {
			return true
		}
	}
	return false
}

func (src *Sources) latestDeb(ctx context.Context, d *Deb) error {
	if d.AssetGlob == "" {
		return errors.New("assetGlob is not set: generate-artifacts needs it to pick the asset of a new release")
	}
	gh, err := release.NewSource(release.Options{APIURL: src.GitHubAPIURL, Repo: d.Repository, Token: src.GitHubToken, Proxy: src.Proxy})
	if err != nil {
		return err
	}
	rels, err := gh.ListAll(ctx)
	if err != nil {
		return err
	}
	var best *release.Release
	var bestV *version.Version
	for _, r := range rels {
		v, ok := parseUpstream(r.Tag)
		if !ok || r.Draft || src.skip(v, r.Prerelease, src.Ignore.Debs[d.Name], r.Tag) {
			continue
		}
		if bestV == nil || v.GreaterThan(bestV) {
			best, bestV = r, v
		}
	}
	if best == nil {
		return fmt.Errorf("%s has no release to take", d.Repository)
	}
	var asset *release.Asset
	for i, a := range best.Assets {
		if ok, _ := path.Match(d.AssetGlob, a.Name); ok {
			if asset != nil {
				return fmt.Errorf("release %s: assets %s and %s both match %q", best.Tag, asset.Name, a.Name, d.AssetGlob)
			}
			asset = &best.Assets[i]
		}
	}
	if asset == nil {
		return fmt.Errorf("release %s has no asset matching %q", best.Tag, d.AssetGlob)
	}
	if d.Release == best.Tag && d.Asset == asset.Name && d.SHA256 != "" && d.Version != "" && d.Size > 0 {
		return nil // unchanged: no need to download it again
	}
	dir, err := os.MkdirTemp(src.WorkDir, ".generate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file, sum, err := gh.DownloadHashed(ctx, *asset, dir, release.DownloadOptions{})
	if err != nil {
		return err
	}
	pkg, err := deb.Field(ctx, file, "Package")
	if err != nil {
		return fmt.Errorf("%s is not a Debian package: %w", asset.Name, err)
	}
	if pkg != d.Name {
		return fmt.Errorf("%s holds package %q, not %s", asset.Name, pkg, d.Name)
	}
	v, err := deb.Field(ctx, file, "Version")
	if err != nil {
		return err
	}
	// The upstream tag is newer; the package in it must be too, in dpkg's
	// order, or the fleet would be asked to downgrade it.
	if nv, err := release.ParseVersion(v); err == nil {
		if ov, err := release.ParseVersion(d.Version); err == nil && nv.Compare(ov) < 0 {
			return fmt.Errorf("release %s holds %s %s, older than the set's %s in dpkg's order: ignore %s in the ignore file, or fix the release", best.Tag, d.Name, v, d.Version, best.Tag)
		}
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	d.Release, d.Asset, d.Version, d.Size, d.SHA256 = best.Tag, asset.Name, v, fi.Size(), sum
	return nil
}

func (src *Sources) transport() (http.RoundTripper, error) {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	if src.Proxy != "" {
		u, err := url.Parse(src.Proxy)
		if err != nil {
			return nil, err
		}
		t.Proxy = http.ProxyURL(u)
	}
	return t, nil
}

func (src *Sources) latestImage(ctx context.Context, im *Image) error {
	repo, err := name.NewRepository(im.Repository)
	if err != nil {
		return err
	}
	tr, err := src.transport()
	if err != nil {
		return err
	}
	tags, err := remote.List(repo, remote.WithContext(ctx), remote.WithTransport(tr))
	if err != nil {
		return fmt.Errorf("list tags of %s: %w", im.Repository, err)
	}
	best, bestTag := (*version.Version)(nil), ""
	for _, tag := range tags {
		v, ok := parseUpstream(tag)
		if !ok || src.skip(v, false, src.Ignore.Images[im.Name], tag) {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestTag = v, tag
		}
	}
	if best == nil {
		return fmt.Errorf("%s has no version tag to take", im.Repository)
	}
	desc, err := remote.Head(repo.Tag(bestTag), remote.WithContext(ctx), remote.WithTransport(tr))
	if err != nil {
		return fmt.Errorf("resolve %s:%s: %w", im.Repository, bestTag, err)
	}
	im.Tag, im.Digest = bestTag, desc.Digest.String()
	return nil
}

func (src *Sources) latestOS(ctx context.Context, o *OSImage) error {
	if o.Feed == "" {
		return errors.New("feed is not set: generate-artifacts needs the channel's feed URL")
	}
	tr, err := src.transport()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.Feed, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("feed %s answered %s", o.Feed, resp.Status)
	}
	var feed Feed
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&feed); err != nil {
		return fmt.Errorf("feed %s is not a version listing: %w", o.Feed, err)
	}
	var best *FeedVersion
	var bestV *version.Version
	for i, fv := range feed.Versions {
		v, ok := parseUpstream(fv.Version)
		if !ok || src.skip(v, fv.Prerelease, src.Ignore.OSImage, fv.Version) {
			continue
		}
		if bestV == nil || v.GreaterThan(bestV) {
			best, bestV = &feed.Versions[i], v
		}
	}
	if best == nil {
		return fmt.Errorf("feed %s has no version to take", o.Feed)
	}
	if best.Kernel.Size <= 0 || best.Initrd.Size <= 0 {
		return fmt.Errorf("feed %s: version %s gives no size for its kernel or initrd; the set needs both", o.Feed, best.Version)
	}
	o.Version, o.Kernel, o.Initrd = best.Version, best.Kernel, best.Initrd
	return nil
}

// WriteFile writes data to path atomically (temporary file, sync, rename),
// and only when it differs. It reports whether it wrote.
func WriteFile(p string, data []byte) (bool, error) {
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".artifacts-")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return false, err
	}
	return true, os.Rename(tmp.Name(), p)
}
