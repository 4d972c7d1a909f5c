package release

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strings"
	"sync"
)

// maxCachedBody bounds one cached API answer. Release lists are far smaller;
// a larger answer is passed through uncached.
const maxCachedBody = 8 << 20

// maxCacheEntries bounds the cache; past it, an arbitrary entry is dropped.
const maxCacheEntries = 512

// HeaderCache is set on answers served from the cache after a 304.
const HeaderCache = "X-Ferry-Cache"

// etagTransport makes every GET of the JSON API a conditional request. It
// keeps the last 200 answer of each URL with its ETag, sends If-None-Match,
// and turns a 304 into the kept answer. GitHub does not count a 304 against
// the rate limit, so an idle poll costs nothing.
type etagTransport struct {
	base http.RoundTripper
	// observe, if set, is told the status of every answer from the network.
	observe func(status int)

	mu      sync.Mutex
	entries map[[32]byte]*cachedAnswer
}

type cachedAnswer struct {
	etag   string
	header http.Header
	body   []byte
}

func newETagTransport(base http.RoundTripper, observe func(int)) *etagTransport {
	return &etagTransport{base: base, observe: observe, entries: map[[32]byte]*cachedAnswer{}}
}

func cacheable(req *http.Request) bool {
	return req.Method == http.MethodGet &&
		req.Header.Get("Range") == "" &&
		!strings.Contains(req.Header.Get("Accept"), "application/octet-stream")
}

// cacheKey separates answers by URL, media type and credentials. The
// credentials are hashed so the key never holds a token.
func cacheKey(req *http.Request) [32]byte {
	h := sha256.New()
	io.WriteString(h, req.URL.String())
	h.Write([]byte{0})
	io.WriteString(h, req.Header.Get("Accept"))
	h.Write([]byte{0})
	io.WriteString(h, req.Header.Get("Authorization"))
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

func (t *etagTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !cacheable(req) {
		return t.send(req)
	}
	key := cacheKey(req)
	t.mu.Lock()
	kept := t.entries[key]
	t.mu.Unlock()

	if kept != nil {
		req = req.Clone(req.Context())
		req.Header.Set("If-None-Match", kept.etag)
	}
	resp, err := t.send(req)
	if err != nil {
		return nil, err
	}

	switch {
	case resp.StatusCode == http.StatusNotModified && kept != nil:
		resp.Body.Close()
		header := kept.header.Clone()
		// Rate-limit headers describe now, not the time of the kept answer.
		for k, v := range resp.Header {
			if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Ratelimit-") {
				header[k] = v
			}
		}
		header.Set(HeaderCache, "hit")
		return &http.Response{
			Status:        "200 OK",
			StatusCode:    http.StatusOK,
			Proto:         resp.Proto,
			ProtoMajor:    resp.ProtoMajor,
			ProtoMinor:    resp.ProtoMinor,
			Header:        header,
			Body:          io.NopCloser(bytes.NewReader(kept.body)),
			ContentLength: int64(len(kept.body)),
			Request:       req,
		}, nil
	case resp.StatusCode == http.StatusOK && resp.Header.Get("ETag") != "":
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxCachedBody+1))
		if err != nil {
			resp.Body.Close()
			return nil, err
		}
		if len(body) > maxCachedBody {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
			return resp, nil
		}
		resp.Body.Close()
		t.store(key, &cachedAnswer{etag: resp.Header.Get("ETag"), header: resp.Header.Clone(), body: body})
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, nil
}

func (t *etagTransport) send(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && t.observe != nil {
		t.observe(resp.StatusCode)
	}
	return resp, err
}

func (t *etagTransport) store(key [32]byte, a *cachedAnswer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.entries[key]; !ok && len(t.entries) >= maxCacheEntries {
		for k := range t.entries {
			delete(t.entries, k)
			break
		}
	}
	t.entries[key] = a
}
