// Package release finds ferry releases on GitHub (or GitHub Enterprise, or
// the test fake) and downloads and verifies their assets.
package release

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/google/go-github/v84/github"
)

var (
	// ErrNoRelease means the listing worked and holds no release that the
	// environment may take. It is an answer, not a failure.
	ErrNoRelease = errors.New("no eligible release")
	// ErrNotFound means GitHub answered 404 for the release or asset.
	ErrNotFound = errors.New("not found on GitHub")
)

// DefaultAPIURL is GitHub's REST API.
const DefaultAPIURL = "https://api.github.com/"

// Options configure a Source.
type Options struct {
	// APIURL is the REST API base (github-api-url); default DefaultAPIURL.
	APIURL string
	// Repo is owner/name (github-repo).
	Repo  string
	Token string
	// Proxy is the URL of an HTTP proxy (proxy); empty means none.
	Proxy string
	// Transport replaces the HTTP transport; Proxy is then ignored.
	Transport http.RoundTripper
	// ObserveStatus, if set, is told the HTTP status of every answer that
	// came over the network (a 304 is reported as 304).
	ObserveStatus func(code int)
	// MaxPages bounds the pages (of 100) one listing reads; default 10.
	MaxPages int
}

// Source reads releases of one repository.
type Source struct {
	gh          *github.Client
	owner, name string
	maxPages    int
	httpClient  *http.Client
	// web is the base of web download URLs (https://github.com/), or nil
	// when it cannot be told from the API URL.
	web *url.URL
	// token is set: assets are read through the API, which takes it (a
	// web URL of a private repository does not).
	token bool
}

// NewSource checks the options and builds a Source. It makes no request.
func NewSource(o Options) (*Source, error) {
	owner, name, ok := strings.Cut(o.Repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("github-repo %q: want owner/name; set it with `ferry config set github-repo OWNER/NAME`", o.Repo)
	}
	if o.APIURL == "" {
		o.APIURL = DefaultAPIURL
	}
	base, err := url.Parse(o.APIURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("github-api-url %q is not an http(s) URL", o.APIURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}

	tr := o.Transport
	if tr == nil {
		t, err := NewTransport(o.Proxy)
		if err != nil {
			return nil, err
		}
		tr = t
	}
	hc := &http.Client{Transport: newETagTransport(tr, o.ObserveStatus)}
	gh := github.NewClient(hc)
	if o.Token != "" {
		gh = gh.WithAuthToken(o.Token)
	}
	gh.BaseURL = base
	gh.UploadURL = uploadURL(base)
	gh.UserAgent = "ferry/" + version.Version

	maxPages := o.MaxPages
	if maxPages <= 0 {
		maxPages = 10
	}
	return &Source{gh: gh, owner: owner, name: name, maxPages: maxPages, httpClient: hc, web: webBase(base), token: o.Token != ""}, nil
}

// webBase derives the web server from the REST API base: api.github.com
// serves github.com; GitHub Enterprise (and the fake) serve the API under
// /api/v3/ of the web host. Nil when the API URL fits neither.
func webBase(api *url.URL) *url.URL {
	u := *api
	switch {
	case u.Host == "api.github.com":
		u.Host, u.Path = "github.com", "/"
	case strings.HasSuffix(u.Path, "/api/v3/"):
		u.Path = strings.TrimSuffix(u.Path, "api/v3/")
	default:
		return nil
	}
	return &u
}

// Repo is the repository, owner/name.
func (s *Source) Repo() string { return s.owner + "/" + s.name }

// WebAsset is the asset name of the release tag as a web download, for a
// caller that knows the names from elsewhere (an artifact set): no API
// request is made. With a token, or when the web server is not known, it
// looks the release up through the API instead.
func (s *Source) WebAsset(ctx context.Context, tag, name string) (Asset, error) {
	if s.token || s.web == nil {
		rel, err := s.ByTag(ctx, tag)
		if err != nil {
			return Asset{}, err
		}
		a, ok := rel.Asset(name)
		if !ok {
			return Asset{}, fmt.Errorf("release %s of %s has no asset %s: %w", tag, s.Repo(), name, ErrNotFound)
		}
		return a, nil
	}
	u := s.web.JoinPath(s.owner, s.name, "releases", "download", tag, name)
	return Asset{Name: name, URL: u.String()}, nil
}

// uploadURL derives the upload API from the REST API base: GitHub's is a
// separate host; GitHub Enterprise serves it under /api/uploads/.
func uploadURL(base *url.URL) *url.URL {
	u := *base
	if u.Host == "api.github.com" {
		u.Host, u.Path = "uploads.github.com", "/"
		return &u
	}
	u.Path = strings.TrimSuffix(u.Path, "api/v3/") + "api/uploads/"
	return &u
}

// Release is a ferry release on GitHub.
type Release struct {
	ID          int64
	Tag         string
	Prefix      string // PrefixTest or PrefixRelease
	Version     Version
	Commitish   string
	Draft       bool
	Prerelease  bool
	CreatedAt   time.Time
	PublishedAt time.Time
	Assets      []Asset
}

// Asset is one file attached to a release.
type Asset struct {
	ID   int64
	Name string
	Size int64
	// URL is the web download URL (GitHub's browser_download_url). A source
	// without a token reads the asset there, which costs no API request.
	URL string
	// Data, when set, is the asset's content, carried in from a
	// fleet.ReleaseRef: it is not downloaded at all.
	Data []byte
}

// Asset returns the named asset, or false.
func (r *Release) Asset(name string) (Asset, bool) {
	for _, a := range r.Assets {
		if a.Name == name {
			return a, true
		}
	}
	return Asset{}, false
}

// fromGitHub converts a release; ok is false when its tag is not a ferry
// release tag (Prefix and Version are then empty).
func fromGitHub(gr *github.RepositoryRelease) (*Release, bool) {
	prefix, v, ok := SplitTag(gr.GetTagName())
	r := &Release{
		ID: gr.GetID(), Tag: gr.GetTagName(), Prefix: prefix, Version: v,
		Commitish: gr.GetTargetCommitish(), Draft: gr.GetDraft(), Prerelease: gr.GetPrerelease(),
		CreatedAt: gr.GetCreatedAt().Time, PublishedAt: gr.GetPublishedAt().Time,
	}
	for _, a := range gr.Assets {
		r.Assets = append(r.Assets, Asset{ID: a.GetID(), Name: a.GetName(), Size: int64(a.GetSize()), URL: a.GetBrowserDownloadURL()})
	}
	return r, ok
}

// List returns every ferry release of the repository (tags that are not
// ferry release tags are left out), reading up to MaxPages pages.
func (s *Source) List(ctx context.Context) ([]*Release, error) {
	return s.list(ctx, true)
}

// ListAll returns every release, whatever its tag, for other projects'
// repositories.
func (s *Source) ListAll(ctx context.Context) ([]*Release, error) {
	return s.list(ctx, false)
}

func (s *Source) list(ctx context.Context, ferryOnly bool) ([]*Release, error) {
	var out []*Release
	opts := &github.ListOptions{PerPage: 100}
	for page := 0; page < s.maxPages; page++ {
		rels, resp, err := s.gh.Repositories.ListReleases(ctx, s.owner, s.name, opts)
		if err != nil {
			return nil, s.wrap("list releases", err)
		}
		for _, gr := range rels {
			if r, ok := fromGitHub(gr); ok || !ferryOnly {
				out = append(out, r)
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return out, nil
}

// ByTag returns the release with the tag, or ErrNotFound. Any tag works:
// extra packages come from other projects' releases.
func (s *Source) ByTag(ctx context.Context, tag string) (*Release, error) {
	gr, _, err := s.gh.Repositories.GetReleaseByTag(ctx, s.owner, s.name, tag)
	if err != nil {
		return nil, s.wrap("release "+tag, err)
	}
	r, _ := fromGitHub(gr)
	return r, nil
}

// Latest returns the newest release that env may take and skip does not
// leave out (a withdrawn version, say; nil leaves out nothing), or
// ErrNoRelease.
func (s *Source) Latest(ctx context.Context, env fleet.Env, skip func(version string) bool) (*Release, error) {
	if env == fleet.EnvNone {
		return nil, fmt.Errorf("env is none: %w", ErrNoRelease)
	}
	rels, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	if skip != nil {
		rels = slices.DeleteFunc(slices.Clone(rels), func(r *Release) bool { return skip(r.Version.String()) })
	}
	r := Select(rels, env)
	if r == nil {
		return nil, fmt.Errorf("%s/%s has no release for env %s: %w", s.owner, s.name, env, ErrNoRelease)
	}
	return r, nil
}

// Eligible reports whether env may take the release:
//   - prod: a release- tag that is not a pre-release;
//   - staging: any release- tag;
//   - dev: any test- tag;
//   - none: nothing.
//
// Drafts are never eligible.
func Eligible(r *Release, env fleet.Env) bool {
	if r.Draft {
		return false
	}
	switch env {
	case fleet.EnvProd:
		return r.Prefix == PrefixRelease && !r.Prerelease
	case fleet.EnvStaging:
		return r.Prefix == PrefixRelease
	case fleet.EnvDev:
		return r.Prefix == PrefixTest
	}
	return false
}

// Select returns the newest release env may take, or nil.
func Select(rels []*Release, env fleet.Env) *Release {
	var best *Release
	for _, r := range rels {
		if Eligible(r, env) && (best == nil || r.Version.Newer(best.Version)) {
			best = r
		}
	}
	return best
}

func (s *Source) wrap(what string, err error) error {
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s in %s/%s: %w", what, s.owner, s.name, ErrNotFound)
	}
	return fmt.Errorf("%s in %s/%s: %w", what, s.owner, s.name, err)
}
