package release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/retry"
)

var (
	// ErrChecksum means a file does not match its expected SHA-256.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrSignature means SHA256SUMS has no valid signature from a trusted key.
	ErrSignature = errors.New("signature not valid")
	// ErrUnsigned means no signing key is configured and unsigned releases
	// are not allowed.
	ErrUnsigned = errors.New("no signing keys configured")
)

// Asset names of a ferry release.
const (
	SumsAsset = "SHA256SUMS"
	SigAsset  = "SHA256SUMS.minisig"
)

// DebAsset is the name of the ferry package of a version.
func DebAsset(version string) string { return "ferry_" + version + "_amd64.deb" }

// DownloadOptions tune a download.
type DownloadOptions struct {
	// Attempts bounds the tries that make no progress; default 8.
	Attempts int
	// RetryBase and RetryMax bound the backoff; defaults 1s and 30s.
	RetryBase, RetryMax time.Duration
	// Progress, if set, is told how many bytes each read delivered.
	Progress func(n int64)
	// MaxSize, when > 0, is the most bytes the download may have (the
	// size a signed manifest gives): reading stops, for good, at the first
	// byte beyond it.
	MaxSize int64
	// IdleTimeout is how long a request may wait for its answer, or for
	// the next bytes of it, before it is abandoned as stalled (and tried
	// again); default IdleTimeout.
	IdleTimeout time.Duration
}

// StalledError is a download that received nothing for its idle timeout:
// a server that accepted the connection and went silent. It is transient.
type StalledError struct{ After time.Duration }

func (e *StalledError) Error() string {
	return fmt.Sprintf("no data for %s: the server went silent", e.After)
}

// Transient marks a stall as worth retrying (see retry.Transient).
func (e *StalledError) Transient() bool { return true }

func (o *DownloadOptions) defaults() {
	if o.Attempts <= 0 {
		o.Attempts = 8
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = IdleTimeout
	}
}

// Fetch downloads a small asset (SHA256SUMS, a signature) into memory,
// refusing anything larger than limit bytes.
func (s *Source) Fetch(ctx context.Context, a Asset, limit int64) ([]byte, error) {
	if a.Size > limit {
		return nil, fmt.Errorf("asset %s is %d bytes, more than the %d expected", a.Name, a.Size, limit)
	}
	if a.Data != nil {
		if int64(len(a.Data)) > limit {
			return nil, fmt.Errorf("asset %s is %d bytes, more than the %d expected", a.Name, len(a.Data), limit)
		}
		return a.Data, nil
	}
	var buf bytes.Buffer
	d := s.assetDownloader(a)
	if err := d.run(ctx, &memSink{buf: &buf, limit: limit}, DownloadOptions{Attempts: 4, RetryBase: 500 * time.Millisecond, RetryMax: 5 * time.Second}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DownloadFile streams an asset to dir/<name>, checking its SHA-256 against
// wantSHA256 (hex). It writes to a temporary file in dir, resumes with Range
// requests after a broken connection, and renames the file into place only
// once the checksum matched and the data is on disk. On any failure the
// temporary file is removed. Memory use does not depend on the asset size.
func (s *Source) DownloadFile(ctx context.Context, a Asset, dir, wantSHA256 string, o DownloadOptions) (string, error) {
	if wantSHA256 == "" {
		return "", fmt.Errorf("download %s: no checksum to check it against", a.Name)
	}
	path, _, err := downloadFile(ctx, s.assetDownloader(a), dir, wantSHA256, o)
	return path, err
}

// DownloadHashed streams an asset to dir/<name> like DownloadFile, for an
// asset whose checksum is not known yet, and returns its SHA-256 (hex).
func (s *Source) DownloadHashed(ctx context.Context, a Asset, dir string, o DownloadOptions) (path, sha string, err error) {
	return downloadFile(ctx, s.assetDownloader(a), dir, "", o)
}

// DownloadURL is DownloadFile for a plain HTTP(S) URL, saved as dir/name.
func DownloadURL(ctx context.Context, client *http.Client, rawURL, dir, name, wantSHA256 string, o DownloadOptions) (string, error) {
	d := &downloader{client: client, asset: Asset{Name: name}, location: rawURL, fixed: true,
		resolve: func(context.Context) (string, error) { return rawURL, nil }}
	if wantSHA256 == "" {
		return "", fmt.Errorf("download %s: no checksum to check it against", name)
	}
	path, _, err := downloadFile(ctx, d, dir, wantSHA256, o)
	return path, err
}

// assetDownloader reads an asset from its web download URL when the source
// has no token (no API request), and through the API otherwise.
func (s *Source) assetDownloader(a Asset) *downloader {
	d := &downloader{client: s.httpClient, asset: a}
	if a.URL != "" && (!s.token || a.ID == 0) {
		d.fixed = true
		d.resolve = func(context.Context) (string, error) { return a.URL, nil }
		return d
	}
	d.resolve = func(ctx context.Context) (string, error) { return s.resolveAsset(ctx, a) }
	return d
}

// downloadFile checks the SHA-256 when wantSHA256 is set, and returns it.
func downloadFile(ctx context.Context, d *downloader, dir, wantSHA256 string, o DownloadOptions) (string, string, error) {
	a := d.asset
	o.defaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("download directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".download-"+a.Name+"-")
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", a.Name, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	limit := o.MaxSize
	if limit <= 0 {
		limit = -1 // MaxSize unset: no limit
	}
	sink := &fileSink{HashingWriter: HashingWriter{W: tmp, H: sha256.New(), Limit: limit}, f: tmp}
	if err := d.run(ctx, sink, o); err != nil {
		return "", "", err
	}
	got := hex.EncodeToString(sink.H.Sum(nil))
	if wantSHA256 != "" && !strings.EqualFold(got, wantSHA256) {
		return "", "", fmt.Errorf("%s: SHA-256 is %s, expected %s: %w", a.Name, got, wantSHA256, ErrChecksum)
	}
	if err := tmp.Sync(); err != nil {
		return "", "", fmt.Errorf("sync %s: %w", a.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return "", "", fmt.Errorf("close %s: %w", a.Name, err)
	}
	final := filepath.Join(dir, a.Name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", "", fmt.Errorf("rename %s: %w", a.Name, err)
	}
	done = true
	return final, got, nil
}

// CheckFile hashes the file at path and compares it with wantSHA256 (hex).
func CheckFile(path, wantSHA256 string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, wantSHA256) {
		return fmt.Errorf("%s changed after it was verified: SHA-256 is %s, expected %s: %w", filepath.Base(path), got, wantSHA256, ErrChecksum)
	}
	return nil
}

// sink receives the bytes of a download. reset restarts it at offset 0,
// when a server ignored a Range request.
type sink interface {
	io.Writer
	size() int64
	reset() error
}

type memSink struct {
	buf   *bytes.Buffer
	limit int64
}

func (m *memSink) Write(p []byte) (int, error) {
	if int64(m.buf.Len()+len(p)) > m.limit {
		return 0, fmt.Errorf("more than the %d bytes expected", m.limit)
	}
	return m.buf.Write(p)
}
func (m *memSink) size() int64  { return int64(m.buf.Len()) }
func (m *memSink) reset() error { m.buf.Reset(); return nil }

// HashingWriter writes to W and hashes what it wrote, so that what is
// downloaded is never read back to be checked. With Limit >= 0 it refuses
// to write past Limit bytes (ErrTooLarge, permanent); 0 takes no byte.
type HashingWriter struct {
	W io.Writer
	H hash.Hash
	// N is how many bytes it wrote.
	N int64
	// Limit is the most bytes it takes; negative for no limit.
	Limit int64
}

// ErrTooLarge is a download that grew past the size it must have.
var ErrTooLarge = errors.New("larger than its signed size")

func (w *HashingWriter) Write(p []byte) (int, error) {
	if w.Limit >= 0 && w.N+int64(len(p)) > w.Limit {
		return 0, retry.Permanent(fmt.Errorf("more than %d bytes: %w", w.Limit, ErrTooLarge))
	}
	n, err := w.W.Write(p)
	w.H.Write(p[:n])
	w.N += int64(n)
	return n, err
}

// fileSink appends to a file and hashes as it goes, so that a resumed
// download never reads the file back.
type fileSink struct {
	HashingWriter
	f *os.File
}

func (f *fileSink) size() int64 { return f.N }
func (f *fileSink) reset() error {
	f.H.Reset()
	f.N = 0
	if err := f.f.Truncate(0); err != nil {
		return err
	}
	_, err := f.f.Seek(0, io.SeekStart)
	return err
}

// downloader follows GitHub's asset flow: the API answers the asset URL
// with a 302 to a short-lived download URL, which is then read with Range
// requests. The download URL is reused across retries until it stops
// working; only then is the API asked again.
type downloader struct {
	client   *http.Client
	asset    Asset
	location string
	// resolve finds the URL to read from.
	resolve func(context.Context) (string, error)
	// fixed is set for a plain URL: a 4xx answer will not change on retry.
	fixed bool
}

func (d *downloader) run(ctx context.Context, out sink, o DownloadOptions) error {
	o.defaults()
	// A try that moved bytes starts the count and the backoff over: a
	// slow but working link is not given up on.
	tries, stalls := 0, 0
	_, err := retry.Do(ctx, retry.Policy{Base: o.RetryBase, Max: o.RetryMax, Tries: uint(o.Attempts * 8)}, func() (struct{}, error) {
		tries++
		before := out.size()
		err := d.once(ctx, out, o)
		switch {
		case err == nil:
			return struct{}{}, nil
		case ctx.Err() != nil:
			return struct{}{}, retry.Permanent(ctx.Err())
		case out.size() > before:
			stalls = 0
			return struct{}{}, retry.Again(err, o.RetryBase)
		}
		if stalls++; stalls >= o.Attempts {
			return struct{}{}, retry.Permanent(err)
		}
		return struct{}{}, err
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("download %s: %w", d.asset.Name, ctx.Err())
	case stalls >= o.Attempts || tries >= o.Attempts*8:
		return fmt.Errorf("download %s: giving up after %d attempts without progress: %w", d.asset.Name, o.Attempts, err)
	}
	return fmt.Errorf("download %s: %w", d.asset.Name, err)
}

// StatusError is an HTTP answer a download could not use.
type StatusError struct {
	Code   int
	Status string
	Header http.Header
}

// HTTPHeader is the answer's headers (Retry-After, say).
func (e *StatusError) HTTPHeader() http.Header { return e.Header }

func (e *StatusError) Error() string { return e.Status }

// HTTPStatus is the answer's status code.
func (e *StatusError) HTTPStatus() int { return e.Code }

// once makes one request from the current offset and copies what arrives.
// A watchdog abandons the request when its answer, or the next bytes of
// it, take longer than o.IdleTimeout.
func (d *downloader) once(ctx context.Context, out sink, o DownloadOptions) error {
	if d.location == "" {
		loc, err := d.resolve(ctx)
		if err != nil {
			return err
		}
		d.location = loc
	}
	offset := out.size()
	if d.asset.Size > 0 && offset == d.asset.Size {
		return nil
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(o.IdleTimeout, func() { cancel(&StalledError{After: o.IdleTimeout}) })
	defer idle.Stop()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, d.location, nil)
	if err != nil {
		return retry.Permanent(err)
	}
	req.Header.Set("Accept", "application/octet-stream")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return stalledOr(rctx, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		if start := contentRangeStart(resp.Header.Get("Content-Range")); start != offset {
			return retry.Permanent(fmt.Errorf("server resumed at byte %d, not %d", start, offset))
		}
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// The server ignored Range: start over.
			if err := out.reset(); err != nil {
				return retry.Permanent(err)
			}
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && d.asset.Size == offset:
		return nil
	case d.fixed && resp.StatusCode >= 400 && resp.StatusCode < 500 && !retry.Transient(&StatusError{Code: resp.StatusCode, Header: resp.Header}):
		err := fmt.Errorf("%s answered %s", d.location, resp.Status)
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", err, ErrNotFound)
		}
		return retry.Permanent(err)
	case resp.StatusCode == http.StatusForbidden, resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusGone:
		// The short-lived URL expired: ask the API for a new one.
		d.location = ""
		return &StatusError{Code: resp.StatusCode, Status: "download URL answered " + resp.Status, Header: resp.Header}
	default:
		return &StatusError{Code: resp.StatusCode, Status: "download answered " + resp.Status, Header: resp.Header}
	}

	r := &progressReader{r: resp.Body, fn: func(n int64) {
		idle.Reset(o.IdleTimeout)
		if o.Progress != nil {
			o.Progress(n)
		}
	}}
	if _, err := io.Copy(out, bufio.NewReaderSize(r, 256<<10)); err != nil {
		if retry.IsPermanent(err) {
			return err
		}
		return fmt.Errorf("read %s at byte %d: %w", d.asset.Name, out.size(), stalledOr(rctx, err))
	}
	if d.asset.Size > 0 && out.size() != d.asset.Size {
		return fmt.Errorf("%s: got %d of %d bytes", d.asset.Name, out.size(), d.asset.Size)
	}
	return nil
}

// stalledOr is the stall that ended a request, when the watchdog did, or
// else err.
func stalledOr(rctx context.Context, err error) error {
	var stalled *StalledError
	if errors.As(context.Cause(rctx), &stalled) {
		return stalled
	}
	return err
}

// resolveAsset asks the API for an asset's download URL.
func (s *Source) resolveAsset(ctx context.Context, a Asset) (string, error) {
	u := fmt.Sprintf("repos/%s/%s/releases/assets/%d", s.owner, s.name, a.ID)
	req, err := s.gh.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return "", retry.Permanent(err)
	}
	req = req.WithContext(ctx)
	req.Header.Set("Accept", "application/octet-stream")
	// The API client carries the token; the storage host it redirects to
	// must not get it.
	client := s.gh.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusSeeOther:
		loc, err := resp.Location()
		if err != nil {
			return "", fmt.Errorf("asset %s: redirect without a location", a.Name)
		}
		return loc.String(), nil
	case http.StatusOK:
		// Served directly: read it through the same URL.
		return req.URL.String(), nil
	case http.StatusNotFound:
		return "", retry.Permanent(fmt.Errorf("asset %s: %w", a.Name, ErrNotFound))
	}
	return "", fmt.Errorf("asset %s: the API answered %s", a.Name, resp.Status)
}

func contentRangeStart(h string) int64 {
	// "bytes 100-199/200"
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return -1
	}
	start, _, _ := strings.Cut(rest, "-")
	n, err := strconv.ParseInt(start, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

type progressReader struct {
	r  io.Reader
	fn func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(int64(n))
	}
	return n, err
}

// ParseSums parses SHA256SUMS as sha256sum writes it: "<hex>  <name>", or
// "<hex> *<name>" in binary mode.
func ParseSums(data []byte) (map[string]string, error) {
	sums := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimLeft(name, " "), "*")
		if b, err := hex.DecodeString(sum); !ok || err != nil || len(b) != sha256.Size || name == "" {
			return nil, fmt.Errorf("SHA256SUMS line %d is not \"<sha256>  <file>\"", i+1)
		}
		sums[name] = strings.ToLower(sum)
	}
	return sums, nil
}

// VerifySums checks the minisign signature of SHA256SUMS against the trusted
// keys; one valid signature is enough. With no keys it fails with
// ErrUnsigned unless allowUnsigned.
func VerifySums(sums, sig []byte, keys []minisign.PublicKey, allowUnsigned bool) error {
	if len(keys) == 0 {
		if allowUnsigned {
			return nil
		}
		return fmt.Errorf("%w: put the release public key in the server's trusted-keys directory (or, in a lab only, set allow-unsigned: true in its config.yml)", ErrUnsigned)
	}
	if len(sig) == 0 {
		return fmt.Errorf("%s is missing: %w", SigAsset, ErrSignature)
	}
	for _, k := range keys {
		if minisign.Verify(k, sums, sig) {
			return nil
		}
	}
	return fmt.Errorf("%s does not verify with any of the %d signing keys: %w", SigAsset, len(keys), ErrSignature)
}

// SignSums signs SHA256SUMS with a minisign private key, with a trusted
// comment naming the file, as `minisign -S` would.
func SignSums(key minisign.PrivateKey, sums []byte) []byte {
	return minisign.SignWithComments(key, sums, "timestamp:"+strconv.FormatInt(time.Now().Unix(), 10)+"\tfile:"+SumsAsset, "signature from ferry")
}

// MakeSums writes SHA256SUMS for files given by name and content reader.
func MakeSums(files map[string]io.Reader) ([]byte, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		h := sha256.New()
		if _, err := io.Copy(h, files[n]); err != nil {
			return nil, fmt.Errorf("hash %s: %w", n, err)
		}
		fmt.Fprintf(&b, "%x  %s\n", h.Sum(nil), n)
	}
	return b.Bytes(), nil
}
