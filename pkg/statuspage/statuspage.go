// Package statuspage is the fleet's read-only web status page. Every
// ferry-updater serves it (any of them can read etcd): the rollout and its
// barriers, every server, the leader and the last release check, the pin
// and release windows, history and the config, with secrets masked.
//
// The page is static HTML, CSS and JavaScript embedded in the binary; it
// fetches nothing from elsewhere. It follows the fleet through server-sent
// events (/api/events): one reader per updater follows etcd with a watch
// while at least one browser is connected, and sends every browser the new
// view. While etcd does not answer, the page keeps the last view it had and
// says that etcd is unreachable, and why.
package statuspage

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
)

//go:embed assets
var assets embed.FS

// Options configure a status page.
type Options struct {
	Store Store
	// Etcd, if set, names the cause when etcd does not answer.
	Etcd Health
	// ServedBy is the id of the server whose updater serves the page.
	ServedBy string
	Logger   *slog.Logger
	// HistoryLimit is how many history records the page shows (20).
	HistoryLimit int64
	// ReadTimeout bounds one read of etcd (3s); Refresh is how often the
	// view is read again when nothing changed, for the ages and liveness
	// (2s); MinGap the least time between two reads, which bounds the
	// cost of a busy fleet (300ms).
	ReadTimeout, Refresh, MinGap time.Duration
	Now                          func() time.Time
}

// Store is where the page reads the fleet: pkg/storage's Storage.
type Store interface {
	Snapshot(ctx context.Context) (*fleet.Snapshot, error)
	GetHistory(ctx context.Context, limit int64) ([]*fleet.HistoryRecord, error)
	// WaitChange returns when anything changed after revision afterRev.
	WaitChange(ctx context.Context, afterRev int64) error
}

// Health says why the store does not answer: pkg/storage's Monitor.
type Health interface {
	// Err is nil while the store answers.
	Err() error
}

// Page is what the page shows, as /api/status and /api/events send it.
type Page struct {
	// Now is the server's clock when the view was sent, so that the
	// browser shows ages that do not depend on its own clock.
	Now      time.Time `json:"now"`
	ServedBy string    `json:"served_by"`
	Etcd     EtcdState `json:"etcd"`
	// The rest is the view read at Etcd.ReadAt; nil before the first read.
	Fleet *fleetview.Fleet `json:"fleet"`
	// From is the version the fleet ran before the current rollout: that
	// of the last completed one.
	From        string                 `json:"from,omitempty"`
	History     []*fleet.HistoryRecord `json:"history"`
	Config      []ConfigEntry          `json:"config"`
	ConfigError string                 `json:"config_error,omitempty"`
	Window      *Window                `json:"window,omitempty"`
	// Refused are the versions a failed rollout refused.
	Refused []*fleet.Refused `json:"refused,omitempty"`
}

// EtcdState says whether the view is current.
type EtcdState struct {
	Reachable bool `json:"reachable"`
	// Error is why etcd does not answer; Since when it stopped.
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// ReadAt is when the view shown was read.
	ReadAt time.Time `json:"read_at,omitzero"`
	// revision is the etcd revision the view was read at.
	revision int64
}

// ConfigEntry is one config/ key, its value masked when secret.
type ConfigEntry struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Set     bool   `json:"set"`
	Default string `json:"default,omitempty"`
	Secret  bool   `json:"secret,omitempty"`
}

// Window is the release window: whether a rollout may start now, and when
// the next window opens.
type Window struct {
	Lines    []string  `json:"lines"`
	Timezone string    `json:"timezone"`
	Open     bool      `json:"open"`
	Next     time.Time `json:"next,omitzero"`
}

// Server serves the status page.
type Server struct {
	opts   Options
	static http.Handler

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
	// stop ends the reader; nil while nobody is connected.
	stop context.CancelFunc
	// page is the newest view, as JSON; last the newest that etcd answered.
	page []byte
	last *Page
	down time.Time
}

// New returns a status page.
func New(o Options) *Server {
	if o.HistoryLimit == 0 {
		o.HistoryLimit = 20
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 3 * time.Second
	}
	if o.Refresh == 0 {
		o.Refresh = 2 * time.Second
	}
	if o.MinGap == 0 {
		o.MinGap = 300 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	return &Server{opts: o, static: http.FileServerFS(sub), subs: map[chan struct{}]struct{}{}}
}

// Handler serves the page at /, its assets under /assets/, the view as
// JSON at /api/status and as server-sent events at /api/events. Every URL
// is relative, so the page works behind a reverse proxy under any path.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", s.static)
	mux.Handle("GET /assets/", http.StripPrefix("/assets", noListing(s.static)))
	mux.HandleFunc("GET /api/status", s.serveStatus)
	mux.HandleFunc("GET /api/events", s.serveEvents)
	return secure(mux)
}

// noListing serves files, never a directory's listing.
func noListing(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// secure adds the headers of a page that runs only its own script and
// loads nothing from elsewhere: values from etcd are shown as text, never
// as markup, and a CSP stops whatever slips through.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	p := s.read(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !p.Etcd.Reachable {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(p)
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	// nginx buffers a proxied response unless told not to.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()

	ch, unsubscribe := s.subscribe()
	defer unsubscribe()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		case <-ch:
			s.mu.Lock()
			page := s.page
			s.mu.Unlock()
			if page == nil {
				continue
			}
			fmt.Fprintf(w, "event: status\ndata: %s\n\n", page)
		}
		flusher.Flush()
	}
}

// subscribe registers a browser; the first starts the reader, the last to
// leave stops it, so that an updater nobody looks at costs etcd nothing.
func (s *Server) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	if s.page != nil {
		ch <- struct{}{}
	}
	if s.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop = cancel
		go s.follow(ctx)
	}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, ch)
		if len(s.subs) == 0 && s.stop != nil {
			s.stop()
			s.stop = nil
		}
	}
}

// follow reads the view and sends it, then waits for a change in etcd (or
// Refresh), until ctx ends.
func (s *Server) follow(ctx context.Context) {
	for ctx.Err() == nil {
		began := s.opts.Now()
		p := s.read(ctx)
		if ctx.Err() != nil {
			return
		}
		s.publish(ctx, p)
		if p.Etcd.Reachable {
			wctx, cancel := context.WithTimeout(ctx, s.opts.Refresh)
			err := s.opts.Store.WaitChange(wctx, p.Etcd.revision)
			cancel()
			if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
				s.opts.Logger.Debug("status page: watch ended", "error", err)
			}
		}
		wait := s.opts.MinGap
		if !p.Etcd.Reachable {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait - s.opts.Now().Sub(began)): // none when the wait for a change took longer
		}
	}
}

func (s *Server) publish(ctx context.Context, p *Page) {
	data, err := json.Marshal(p)
	if err != nil {
		s.opts.Logger.Error("status page: encode the view", "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return // a reader that was stopped; a newer one publishes
	}
	s.page = data
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // that browser has not sent the last one yet; it sends this
		}
	}
}

// read reads the view from etcd. When etcd does not answer it returns the
// last view read, marked unreachable with the cause.
func (s *Server) read(ctx context.Context) *Page {
	now := s.opts.Now()
	p, err := s.readEtcd(ctx, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.last, s.down = p, time.Time{}
		return p
	}
	if s.down.IsZero() {
		s.down = now
	}
	if s.opts.Etcd != nil {
		if known := errors.Unwrap(s.opts.Etcd.Err()); known != nil {
			err = known // the monitor's probe names the cause better than a timeout
		}
	}
	out := &Page{}
	if s.last != nil {
		*out = *s.last
	}
	out.Now, out.ServedBy = now.UTC(), s.opts.ServedBy
	out.Etcd = EtcdState{Error: err.Error(), Since: s.down.UTC()}
	if s.last != nil {
		out.Etcd.ReadAt = s.last.Etcd.ReadAt
	}
	return out
}

func (s *Server) readEtcd(ctx context.Context, now time.Time) (*Page, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadTimeout)
	defer cancel()
	snap, err := s.opts.Store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	hist, err := s.opts.Store.GetHistory(ctx, s.opts.HistoryLimit)
	if err != nil {
		return nil, err
	}
	p := &Page{
		Now: now.UTC(), ServedBy: s.opts.ServedBy,
		Etcd:    EtcdState{Reachable: true, ReadAt: now.UTC(), revision: snap.Revision},
		Fleet:   fleetview.New(snap),
		History: hist,
		Config:  configEntries(snap.ConfigValues),
	}
	if snap.ConfigErr != nil {
		p.ConfigError = snap.ConfigErr.Error()
	}
	for _, v := range fleet.SortedIDs(snap.Refused) {
		p.Refused = append(p.Refused, snap.Refused[v])
	}
	if req := snap.Request; req != nil {
		for _, h := range hist {
			if h.Result == fleet.ResultCompleted && !h.StartedAt.Equal(req.StartedAt) {
				p.From = h.Version
				break
			}
		}
	}
	if c := snap.Config; c != nil {
		w := &Window{Lines: c.ReleaseTime, Open: c.InReleaseWindow(now)}
		if c.ReleaseTimezone != nil {
			w.Timezone = c.ReleaseTimezone.String()
		}
		if !w.Open {
			w.Next = c.NextReleaseWindow(now).UTC()
		}
		p.Window = w
	}
	return p, nil
}

func configEntries(values map[string]string) []ConfigEntry {
	var out []ConfigEntry
	for _, k := range fleet.ConfigKeys() {
		v, set := values[k.Name]
		out = append(out, ConfigEntry{Key: k.Name, Value: k.Display(v), Set: set, Default: k.Default, Secret: k.Secret})
	}
	return out
}
