// Package githubfake is a GitHub REST API server for tests, dctest and the
// demo. It serves the release endpoints as GitHub documents them:
//
//   - list releases, newest first, with per_page/page and a Link header;
//   - ETag on every JSON answer and 304 Not Modified for a matching
//     If-None-Match, which does not count against the rate limit;
//   - latest release, release by tag and by id, create, edit and delete;
//   - asset metadata, upload, and download: with Accept:
//     application/octet-stream the asset endpoint answers 302 to a download
//     URL, which honours Range requests;
//   - X-RateLimit-* headers, and on demand primary (403/429 with
//     X-RateLimit-Remaining: 0 and X-RateLimit-Reset) or secondary (with
//     Retry-After) rate-limit answers, or server errors.
//
// Counters let tests assert how many counted requests were made and how many
// bytes of each asset were served.
package githubfake

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v84/github"
)

// RateLimitLimit is the hourly request limit the fake reports.
const RateLimitLimit = 5000

// Server is a fake GitHub.
type Server struct {
	srv *httptest.Server

	mu       sync.Mutex
	repos    map[string]*repo // by "owner/name"
	nextID   int64
	token    string
	used     int
	faults   []fault
	cuts     map[string][]int64 // asset name: byte counts at which to cut the next downloads
	counters Counters
	now      func() time.Time
	// faultScope limits injected failures to paths that contain it.
	faultScope string
}

type repo struct {
	releases []*release
}

type release struct {
	id         int64
	tag        string
	commitish  string
	name       string
	body       string
	draft      bool
	prerelease bool
	createdAt  time.Time
	publishAt  time.Time
	assets     []*asset
}

type asset struct {
	id      int64
	name    string
	label   string
	ctype   string
	content []byte
	// path, when set, serves the asset from a file instead of content, so
	// that large assets need not sit in memory.
	path      string
	size      int64
	createdAt time.Time
}

type fault struct {
	status  int
	kind    string // "primary", "secondary" or "error"
	wait    time.Duration
	remains int
}

// Counters are what the fake has served.
type Counters struct {
	// Counted is the number of API requests that count against the rate
	// limit: every API request except a 304 Not Modified.
	Counted int
	// NotModified is the number of 304 answers.
	NotModified int
	// ByStatus counts API and web-download answers by HTTP status.
	ByStatus map[int]int
	// Web counts requests for web download URLs (browser_download_url),
	// which are not API requests and cost no rate limit.
	Web int
	// Downloads counts download requests by asset name, and RangeRequests
	// those that carried a Range header.
	Downloads     map[string]int
	RangeRequests map[string]int
	// BytesServed counts asset bytes written, by asset name.
	BytesServed map[string]int64
}

// New starts a fake on a loopback port. Close it when done.
func New() *Server { return NewOn(nil) }

// NewOn starts a fake that serves on l (nil: a loopback port), such as a
// listener in a lab network's namespace. Close it when done.
func NewOn(l net.Listener) *Server {
	s := &Server{
		repos: map[string]*repo{},
		cuts:  map[string][]int64{},
		now:   time.Now,
	}
	s.resetCountersLocked()
	s.srv = httptest.NewUnstartedServer(s.handler())
	if l != nil {
		s.srv.Listener.Close()
		s.srv.Listener = l
	}
	s.srv.Start()
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// URL is the server's root URL.
func (s *Server) URL() string { return s.srv.URL }

// APIURL is the REST API base, as configured in github-api-url.
func (s *Server) APIURL() string { return s.srv.URL + "/api/v3/" }

// UploadURL is the upload API base.
func (s *Server) UploadURL() string { return s.srv.URL + "/api/uploads/" }

// RequireToken makes every API request need "Authorization: Bearer token"
// (or "token token"); others get 401. An empty token turns the check off.
func (s *Server) RequireToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// ReleaseSpec describes a release to add.
type ReleaseSpec struct {
	Tag        string
	Commitish  string
	Name       string
	Draft      bool
	Prerelease bool
	// CreatedAt orders the release list; zero means now.
	CreatedAt time.Time
	// Assets by file name.
	Assets map[string][]byte
	// AssetFiles are assets served from files on disk, by name.
	AssetFiles map[string]string
}

// AddRelease adds a release to owner/name and returns its id.
func (s *Server) AddRelease(repoName string, spec ReleaseSpec) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(repoName)
	created := spec.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	rel := &release{
		id: s.newIDLocked(), tag: spec.Tag, commitish: spec.Commitish, name: spec.Name,
		draft: spec.Draft, prerelease: spec.Prerelease, createdAt: created.UTC(),
	}
	if !rel.draft {
		rel.publishAt = rel.createdAt
	}
	if rel.commitish == "" {
		rel.commitish = "main"
	}
	names := make([]string, 0, len(spec.Assets))
	for n := range spec.Assets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rel.assets = append(rel.assets, &asset{id: s.newIDLocked(), name: n, ctype: "application/octet-stream", content: spec.Assets[n], size: int64(len(spec.Assets[n])), createdAt: created.UTC()})
	}
	for n, p := range spec.AssetFiles {
		fi, err := os.Stat(p)
		if err != nil {
			panic("githubfake: " + err.Error())
		}
		rel.assets = append(rel.assets, &asset{id: s.newIDLocked(), name: n, ctype: "application/octet-stream", path: p, size: fi.Size(), createdAt: created.UTC()})
	}
	r.releases = append(r.releases, rel)
	return rel.id
}

// SetAsset replaces (or adds) an asset's content in the release with tag.
func (s *Server) SetAsset(repoName, tag, name string, content []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := s.mustRelease(repoName, tag)
	if a := rel.asset(name); a != nil {
		a.content, a.size, a.path = content, int64(len(content)), ""
		return
	}
	rel.assets = append(rel.assets, &asset{id: s.newIDLocked(), name: name, ctype: "application/octet-stream", content: content, size: int64(len(content)), createdAt: s.now().UTC()})
}

// DeleteRelease removes the release with tag.
func (s *Server) DeleteRelease(repoName, tag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(repoName)
	for i, rel := range r.releases {
		if rel.tag == tag {
			r.releases = append(r.releases[:i], r.releases[i+1:]...)
			return
		}
	}
	panic("githubfake: no release " + tag)
}

// Misannounce makes the API announce an asset as size bytes while the
// download still serves all of it, as a tampered release would.
func (s *Server) Misannounce(repoName, tag, name string, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.mustRelease(repoName, tag).asset(name)
	if a == nil {
		panic("githubfake: no asset " + name)
	}
	a.size = size
}

// mustRelease is the release with tag; a test that names one that does
// not exist is wrong.
func (s *Server) mustRelease(repoName, tag string) *release {
	rel := s.repoLocked(repoName).byTag(tag)
	if rel == nil {
		panic("githubfake: no release " + tag)
	}
	return rel
}

func (r *release) asset(name string) *asset {
	for _, a := range r.assets {
		if a.name == name {
			return a
		}
	}
	return nil
}

// Asset returns the content of an asset, and whether it exists.
func (s *Server) Asset(repoName, tag, name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := s.repoLocked(repoName).byTag(tag)
	if rel == nil {
		return nil, false
	}
	for _, a := range rel.assets {
		if a.name == name {
			return a.content, true
		}
	}
	return nil, false
}

// Release is a release as tests see it.
type Release struct {
	ID         int64
	Tag        string
	Commitish  string
	Draft      bool
	Prerelease bool
	Assets     []string
}

// Releases returns the releases of a repository, newest first.
func (s *Server) Releases(repoName string) []Release {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Release
	for _, r := range s.repoLocked(repoName).sorted() {
		rel := Release{ID: r.id, Tag: r.tag, Commitish: r.commitish, Draft: r.draft, Prerelease: r.prerelease}
		for _, a := range r.assets {
			rel.Assets = append(rel.Assets, a.name)
		}
		out = append(out, rel)
	}
	return out
}

// FailNext makes the next n API requests fail with status (e.g. 500).
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{status: status, kind: "error", remains: n})
}

// RateLimitPrimary makes the next n API requests fail as GitHub does when
// the hourly limit is used up: status 403 or 429, X-RateLimit-Remaining: 0
// and X-RateLimit-Reset at now+reset.
func (s *Server) RateLimitPrimary(n, status int, reset time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{status: status, kind: "primary", wait: reset, remains: n})
}

// RateLimitSecondary makes the next n API requests fail as GitHub's
// secondary rate limit does: status 403 or 429 with Retry-After.
func (s *Server) RateLimitSecondary(n, status int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{status: status, kind: "secondary", wait: retryAfter, remains: n})
}

// ScopeFaults makes injected failures hit only API requests whose path
// contains part, e.g. "/releases/" for the release and asset lookups of the
// workers but not the updater's release list. "" hits every request.
func (s *Server) ScopeFaults(part string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultScope = part
}

// ClearFaults cancels every pending injected failure.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// CutDownload makes the next download of the named asset stop after
// afterBytes bytes by dropping the connection, as a broken network would.
// Several calls cut several later downloads in order.
func (s *Server) CutDownload(assetName string, afterBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts[assetName] = append(s.cuts[assetName], afterBytes)
}

// Counters returns a copy of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters
	c.ByStatus = copyMap(c.ByStatus)
	c.Downloads = copyMap(c.Downloads)
	c.RangeRequests = copyMap(c.RangeRequests)
	c.BytesServed = copyMap(c.BytesServed)
	return c
}

// ResetCounters sets every counter to zero.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetCountersLocked()
}

func (s *Server) resetCountersLocked() {
	s.counters = Counters{
		ByStatus: map[int]int{}, Downloads: map[string]int{},
		RangeRequests: map[string]int{}, BytesServed: map[string]int64{},
	}
}

func copyMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Server) repoLocked(name string) *repo {
	r := s.repos[name]
	if r == nil {
		r = &repo{}
		s.repos[name] = r
	}
	return r
}

func (s *Server) newIDLocked() int64 {
	s.nextID++
	return s.nextID
}

func (r *repo) sorted() []*release {
	out := append([]*release(nil), r.releases...)
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].createdAt.Equal(out[j].createdAt) {
			return out[i].createdAt.After(out[j].createdAt)
		}
		return out[i].id > out[j].id
	})
	return out
}

func (r *repo) byTag(tag string) *release {
	for _, rel := range r.releases {
		if rel.tag == tag {
			return rel
		}
	}
	return nil
}

func (r *repo) byID(id int64) *release {
	for _, rel := range r.releases {
		if rel.id == id {
			return rel
		}
	}
	return nil
}

func (r *repo) assetByID(id int64) (*release, *asset) {
	for _, rel := range r.releases {
		for _, a := range rel.assets {
			if a.id == id {
				return rel, a
			}
		}
	}
	return nil, nil
}

// --- HTTP ---

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v3/repos/{owner}/{repo}/releases", s.api(s.releasesRoot))
	mux.HandleFunc("/api/v3/repos/{owner}/{repo}/releases/{rest...}", s.api(s.releasesSub))
	mux.HandleFunc("POST /api/uploads/repos/{owner}/{repo}/releases/{id}/assets", s.api(s.upload))
	mux.HandleFunc("GET /download/{id}/{name}", s.download)
	mux.HandleFunc("GET /{owner}/{repo}/releases/download/{tag}/{name}", s.webDownload)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found")
	})
	return mux
}

// apiRequest is one API call in flight.
type apiRequest struct {
	w    http.ResponseWriter
	r    *http.Request
	repo *repo
	name string // owner/name
}

// api wraps an API handler with authentication, fault injection, rate-limit
// headers and counting. The handler runs with s.mu held.
func (s *Server) api(h func(*apiRequest)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			s.counters.ByStatus[rec.status]++
			if rec.status == http.StatusNotModified {
				s.counters.NotModified++
			} else {
				s.counters.Counted++
				s.used++
			}
		}()
		s.rateHeaders(w)
		if s.token != "" {
			auth := r.Header.Get("Authorization")
			if auth != "Bearer "+s.token && auth != "token "+s.token {
				writeError(rec, http.StatusUnauthorized, "Bad credentials")
				return
			}
		}
		if strings.Contains(r.URL.Path, s.faultScope) && s.injectFault(rec) {
			return
		}
		name := r.PathValue("owner") + "/" + r.PathValue("repo")
		h(&apiRequest{w: rec, r: r, repo: s.repoLocked(name), name: name})
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (s *Server) rateHeaders(w http.ResponseWriter) {
	h := w.Header()
	remaining := RateLimitLimit - s.used
	if remaining < 0 {
		remaining = 0
	}
	h.Set("X-RateLimit-Limit", strconv.Itoa(RateLimitLimit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-RateLimit-Used", strconv.Itoa(s.used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(s.now().Add(time.Hour).Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

func (s *Server) injectFault(w http.ResponseWriter) bool {
	if len(s.faults) == 0 {
		return false
	}
	f := &s.faults[0]
	f.remains--
	if f.remains <= 0 {
		s.faults = s.faults[1:]
	}
	h := w.Header()
	switch f.kind {
	case "primary":
		h.Set("X-RateLimit-Remaining", "0")
		// GitHub's reset is whole seconds; round up so a client never
		// retries before it.
		h.Set("X-RateLimit-Reset", strconv.FormatInt(s.now().Add(f.wait+time.Second-1).Unix(), 10))
		writeJSON(w, f.status, map[string]string{
			"message":           "API rate limit exceeded. (But here's the good news: Authenticated requests get a higher rate limit.)",
			"documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
		})
	case "secondary":
		secs := int((f.wait + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.Itoa(secs))
		writeJSON(w, f.status, map[string]string{
			"message":           "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
			"documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
		})
	default:
		writeError(w, f.status, http.StatusText(f.status))
	}
	return true
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{
		"message":           msg,
		"documentation_url": "https://docs.github.com/rest",
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(data)
}

// writeCacheable answers v with an ETag, or 304 when the client already
// has this exact answer.
func writeCacheable(ar *apiRequest, v any) {
	data, _ := json.Marshal(v)
	sum := sha256.Sum256(data)
	etag := `W/"` + hex.EncodeToString(sum[:16]) + `"`
	w := ar.w
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "private, max-age=60, s-maxage=60")
	w.Header().Set("Vary", "Accept, Authorization")
	if etagMatch(ar.r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}

func etagMatch(header, etag string) bool {
	strip := func(s string) string { return strings.TrimPrefix(strings.TrimSpace(s), "W/") }
	for _, candidate := range strings.Split(header, ",") {
		if c := strip(candidate); c != "" && (c == "*" || c == strip(etag)) {
			return true
		}
	}
	return false
}

func (s *Server) releasesRoot(ar *apiRequest) {
	switch ar.r.Method {
	case http.MethodGet:
		s.listReleases(ar)
	case http.MethodPost:
		s.createRelease(ar)
	default:
		writeError(ar.w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
}

func (s *Server) releasesSub(ar *apiRequest) {
	parts := strings.Split(ar.r.PathValue("rest"), "/")
	m := ar.r.Method
	switch {
	case len(parts) == 1 && parts[0] == "latest" && m == http.MethodGet:
		for _, rel := range ar.repo.sorted() {
			if !rel.draft && !rel.prerelease {
				writeCacheable(ar, s.releaseJSON(ar.name, rel))
				return
			}
		}
		writeError(ar.w, http.StatusNotFound, "Not Found")
	case len(parts) == 2 && parts[0] == "tags" && m == http.MethodGet:
		rel := ar.repo.byTag(parts[1])
		if rel == nil || rel.draft {
			writeError(ar.w, http.StatusNotFound, "Not Found")
			return
		}
		writeCacheable(ar, s.releaseJSON(ar.name, rel))
	case len(parts) == 2 && parts[0] == "assets":
		s.assetEndpoint(ar, parts[1])
	case len(parts) == 1:
		s.releaseByID(ar, parts[0])
	case len(parts) == 2 && parts[1] == "assets" && m == http.MethodGet:
		rel := s.releaseFromPath(ar, parts[0])
		if rel == nil {
			return
		}
		out := make([]*github.ReleaseAsset, 0, len(rel.assets))
		for _, a := range rel.assets {
			out = append(out, s.assetJSON(ar.name, rel, a))
		}
		writeCacheable(ar, out)
	default:
		writeError(ar.w, http.StatusNotFound, "Not Found")
	}
}

func (s *Server) releaseFromPath(ar *apiRequest, idStr string) *release {
	id, err := strconv.ParseInt(idStr, 10, 64)
	var rel *release
	if err == nil {
		rel = ar.repo.byID(id)
	}
	if rel == nil {
		writeError(ar.w, http.StatusNotFound, "Not Found")
	}
	return rel
}

func (s *Server) releaseByID(ar *apiRequest, idStr string) {
	rel := s.releaseFromPath(ar, idStr)
	if rel == nil {
		return
	}
	switch ar.r.Method {
	case http.MethodGet:
		writeCacheable(ar, s.releaseJSON(ar.name, rel))
	case http.MethodPatch:
		var in github.RepositoryRelease
		if err := json.NewDecoder(ar.r.Body).Decode(&in); err != nil {
			writeError(ar.w, http.StatusBadRequest, "Problems parsing JSON")
			return
		}
		if in.TagName != nil && *in.TagName != rel.tag && ar.repo.byTag(*in.TagName) != nil {
			writeValidation(ar.w, "Release", "tag_name", "already_exists")
			return
		}
		applyRelease(rel, &in)
		if in.Draft != nil && !*in.Draft && rel.publishAt.IsZero() {
			rel.publishAt = s.now().UTC()
		}
		writeJSON(ar.w, http.StatusOK, s.releaseJSON(ar.name, rel))
	case http.MethodDelete:
		for i, r := range ar.repo.releases {
			if r == rel {
				ar.repo.releases = append(ar.repo.releases[:i], ar.repo.releases[i+1:]...)
				break
			}
		}
		ar.w.WriteHeader(http.StatusNoContent)
	default:
		writeError(ar.w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
}

func applyRelease(rel *release, in *github.RepositoryRelease) {
	if in.TagName != nil {
		rel.tag = *in.TagName
	}
	if in.TargetCommitish != nil {
		rel.commitish = *in.TargetCommitish
	}
	if in.Name != nil {
		rel.name = *in.Name
	}
	if in.Body != nil {
		rel.body = *in.Body
	}
	if in.Draft != nil {
		rel.draft = *in.Draft
	}
	if in.Prerelease != nil {
		rel.prerelease = *in.Prerelease
	}
}

func writeValidation(w http.ResponseWriter, resource, field, code string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message":           "Validation Failed",
		"errors":            []map[string]string{{"resource": resource, "code": code, "field": field}},
		"documentation_url": "https://docs.github.com/rest/releases/releases",
	})
}

func (s *Server) createRelease(ar *apiRequest) {
	var in github.RepositoryRelease
	if err := json.NewDecoder(ar.r.Body).Decode(&in); err != nil || in.TagName == nil || *in.TagName == "" {
		writeValidation(ar.w, "Release", "tag_name", "missing_field")
		return
	}
	if ar.repo.byTag(*in.TagName) != nil {
		writeValidation(ar.w, "Release", "tag_name", "already_exists")
		return
	}
	rel := &release{id: s.newIDLocked(), commitish: "main", createdAt: s.now().UTC()}
	applyRelease(rel, &in)
	if !rel.draft {
		rel.publishAt = rel.createdAt
	}
	ar.repo.releases = append(ar.repo.releases, rel)
	writeJSON(ar.w, http.StatusCreated, s.releaseJSON(ar.name, rel))
}

func (s *Server) listReleases(ar *apiRequest) {
	q := ar.r.URL.Query()
	perPage := atoiDefault(q.Get("per_page"), 30)
	if perPage < 1 {
		perPage = 30
	}
	if perPage > 100 {
		perPage = 100
	}
	page := atoiDefault(q.Get("page"), 1)
	if page < 1 {
		page = 1
	}
	all := ar.repo.sorted()
	last := (len(all) + perPage - 1) / perPage
	if last == 0 {
		last = 1
	}
	lo := (page - 1) * perPage
	hi := lo + perPage
	if lo > len(all) {
		lo = len(all)
	}
	if hi > len(all) {
		hi = len(all)
	}
	out := make([]*github.RepositoryRelease, 0, hi-lo)
	for _, rel := range all[lo:hi] {
		out = append(out, s.releaseJSON(ar.name, rel))
	}
	setLinks(ar.w, ar.r.URL, page, last, perPage)
	writeCacheable(ar, out)
}

func setLinks(w http.ResponseWriter, u *url.URL, page, last, perPage int) {
	link := func(p int, rel string) string {
		q := u.Query()
		q.Set("per_page", strconv.Itoa(perPage))
		q.Set("page", strconv.Itoa(p))
		v := *u
		v.RawQuery = q.Encode()
		return fmt.Sprintf("<%s>; rel=%q", v.String(), rel)
	}
	var links []string
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"), link(page-1, "prev"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
}

func atoiDefault(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

func (s *Server) assetEndpoint(ar *apiRequest, idStr string) {
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil {
		writeError(ar.w, http.StatusNotFound, "Not Found")
		return
	}
	rel, a := ar.repo.assetByID(id)
	if a == nil {
		writeError(ar.w, http.StatusNotFound, "Not Found")
		return
	}
	switch ar.r.Method {
	case http.MethodGet:
		if strings.Contains(ar.r.Header.Get("Accept"), "application/octet-stream") {
			// GitHub sends asset bytes from another host, through a
			// short-lived URL.
			loc := fmt.Sprintf("%s/download/%d/%s?expires=%d", s.srv.URL, a.id, url.PathEscape(a.name), s.now().Add(5*time.Minute).Unix())
			ar.w.Header().Set("Location", loc)
			ar.w.WriteHeader(http.StatusFound)
			return
		}
		writeCacheable(ar, s.assetJSON(ar.name, rel, a))
	case http.MethodDelete:
		for i, x := range rel.assets {
			if x == a {
				rel.assets = append(rel.assets[:i], rel.assets[i+1:]...)
				break
			}
		}
		ar.w.WriteHeader(http.StatusNoContent)
	default:
		writeError(ar.w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
}

func (s *Server) upload(ar *apiRequest) {
	rel := s.releaseFromPath(ar, ar.r.PathValue("id"))
	if rel == nil {
		return
	}
	name := ar.r.URL.Query().Get("name")
	if name == "" {
		writeValidation(ar.w, "ReleaseAsset", "name", "missing_field")
		return
	}
	for _, a := range rel.assets {
		if a.name == name {
			writeValidation(ar.w, "ReleaseAsset", "name", "already_exists")
			return
		}
	}
	data, err := io.ReadAll(ar.r.Body)
	if err != nil {
		writeError(ar.w, http.StatusBadRequest, "could not read the upload")
		return
	}
	ctype := ar.r.Header.Get("Content-Type")
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	a := &asset{id: s.newIDLocked(), name: name, label: ar.r.URL.Query().Get("label"), ctype: ctype, content: data, size: int64(len(data)), createdAt: s.now().UTC()}
	rel.assets = append(rel.assets, a)
	writeJSON(ar.w, http.StatusCreated, s.assetJSON(ar.name, rel, a))
}

// webDownload serves a browser_download_url as GitHub does: a redirect to
// the asset's short-lived storage URL, with no API rate limit. A release
// of a repository that needs a token (a private one) is not found there,
// and neither is a draft's.
func (s *Server) webDownload(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { s.counters.ByStatus[rec.status]++ }()
	s.counters.Web++
	if strings.Contains(r.URL.Path, s.faultScope) && s.injectFault(rec) {
		return
	}
	rp := s.repos[r.PathValue("owner")+"/"+r.PathValue("repo")]
	var rel *release
	if rp != nil && s.token == "" {
		rel = rp.byTag(r.PathValue("tag"))
	}
	if rel == nil || rel.draft {
		http.NotFound(rec, r)
		return
	}
	a := rel.asset(r.PathValue("name"))
	if a == nil {
		http.NotFound(rec, r)
		return
	}
	loc := fmt.Sprintf("%s/download/%d/%s?expires=%d", s.srv.URL, a.id, url.PathEscape(a.name), s.now().Add(5*time.Minute).Unix())
	http.Redirect(rec, r, loc, http.StatusFound)
}

func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	var found *asset
	for _, rp := range s.repos {
		if _, a := rp.assetByID(id); a != nil {
			found = a
			break
		}
	}
	if found == nil {
		s.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	name, content, path, created := found.name, found.content, found.path, found.createdAt
	s.counters.Downloads[name]++
	if r.Header.Get("Range") != "" {
		s.counters.RangeRequests[name]++
	}
	cut := int64(-1)
	if c := s.cuts[name]; len(c) > 0 {
		cut, s.cuts[name] = c[0], c[1:]
	}
	s.mu.Unlock()

	cw := &countingWriter{ResponseWriter: w, s: s, name: name, cut: cut}
	w.Header().Set("Content-Type", "application/octet-stream")
	var body io.ReadSeeker = bytes.NewReader(content)
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		body = f
	}
	http.ServeContent(cw, r, name, created, body)
}

// countingWriter counts asset bytes and drops the connection after cut
// bytes when cut >= 0.
type countingWriter struct {
	http.ResponseWriter
	s       *Server
	name    string
	cut     int64
	written int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.cut >= 0 && c.written+int64(len(b)) > c.cut {
		b = b[:c.cut-c.written]
		n, _ := c.ResponseWriter.Write(b)
		c.add(int64(n))
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		// Ends the handler and closes the connection without finishing
		// the body, so the client sees a short read.
		panic(http.ErrAbortHandler)
	}
	n, err := c.ResponseWriter.Write(b)
	c.add(int64(n))
	return n, err
}

func (c *countingWriter) add(n int64) {
	c.written += n
	c.s.mu.Lock()
	c.s.counters.BytesServed[c.name] += n
	c.s.mu.Unlock()
}

func (s *Server) releaseJSON(repoName string, rel *release) *github.RepositoryRelease {
	base := fmt.Sprintf("%s/api/v3/repos/%s/releases/%d", s.srv.URL, repoName, rel.id)
	out := &github.RepositoryRelease{
		ID:              github.Ptr(rel.id),
		TagName:         github.Ptr(rel.tag),
		TargetCommitish: github.Ptr(rel.commitish),
		Name:            github.Ptr(rel.name),
		Body:            github.Ptr(rel.body),
		Draft:           github.Ptr(rel.draft),
		Prerelease:      github.Ptr(rel.prerelease),
		CreatedAt:       &github.Timestamp{Time: rel.createdAt},
		URL:             github.Ptr(base),
		HTMLURL:         github.Ptr(fmt.Sprintf("%s/%s/releases/tag/%s", s.srv.URL, repoName, rel.tag)),
		AssetsURL:       github.Ptr(base + "/assets"),
		UploadURL:       github.Ptr(fmt.Sprintf("%s/api/uploads/repos/%s/releases/%d/assets{?name,label}", s.srv.URL, repoName, rel.id)),
		Assets:          []*github.ReleaseAsset{},
	}
	if !rel.publishAt.IsZero() {
		out.PublishedAt = &github.Timestamp{Time: rel.publishAt}
	}
	for _, a := range rel.assets {
		out.Assets = append(out.Assets, s.assetJSON(repoName, rel, a))
	}
	return out
}

func (s *Server) assetJSON(repoName string, rel *release, a *asset) *github.ReleaseAsset {
	return &github.ReleaseAsset{
		ID:                 github.Ptr(a.id),
		Name:               github.Ptr(a.name),
		Label:              github.Ptr(a.label),
		ContentType:        github.Ptr(a.ctype),
		State:              github.Ptr("uploaded"),
		Size:               github.Ptr(int(a.size)),
		DownloadCount:      github.Ptr(0),
		CreatedAt:          &github.Timestamp{Time: a.createdAt},
		UpdatedAt:          &github.Timestamp{Time: a.createdAt},
		URL:                github.Ptr(fmt.Sprintf("%s/api/v3/repos/%s/releases/assets/%d", s.srv.URL, repoName, a.id)),
		BrowserDownloadURL: github.Ptr(fmt.Sprintf("%s/%s/releases/download/%s/%s", s.srv.URL, repoName, url.PathEscape(rel.tag), url.PathEscape(a.name))),
	}
}
