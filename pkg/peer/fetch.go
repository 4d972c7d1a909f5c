package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrBadContent is what a dropped peer did: it served content that is not
// the release's (a wrong digest, too many bytes).
var ErrBadContent = errors.New("served content that is not the release's")

// DefaultTimeout is how long a peer may take to answer, or to send its
// next bytes, before the next peer (or upstream) is asked.
const DefaultTimeout = 10 * time.Second

// Asset is one piece of a release's content, as the signed release gives
// it: a package (SHA-256 and size from the signed manifest or the
// artifact set) or an image (its manifest's digest).
type Asset struct {
	// Release is the version being rolled out: peers are grouped by it.
	Release string
	// Name is for messages: a file name, an image reference.
	Name   string
	Digest string
	// Size is the exact size of a file; -1 when not known ahead (an
	// image, whose blobs' sizes its manifest gives).
	Size int64
}

// Fetcher gets release content from peers first and from upstream only
// when no peer holds it: the first server to need an asset claims it in
// etcd and fetches it over the uplink, the others wait for it and then
// spread over the servers that hold it.
type Fetcher struct {
	Cache   *Cache
	Storage *storage.Storage
	ID      string
	// URL is where this server's Server answers its peers, announced
	// with what it holds.
	URL string
	// Lease binds announcements and claims to this worker's life.
	Lease   func() clientv3.LeaseID
	Metrics *Metrics
	Log     *slog.Logger
	// Timeout is what a dead or slow peer costs; default DefaultTimeout.
	Timeout time.Duration
	// Running is the version this worker runs, whose content the cache
	// keeps beside that of the release rolled out.
	Running string

	once      sync.Once
	client    *http.Client
	beginning sync.Mutex

	mu      sync.Mutex
	rollout string
	dropped map[string]error
	// down are the peers that did not answer: they are not asked again
	// for a while, so that a dead or silent peer costs one timeout, not
	// one per asset; unless they announce again (a restarted worker).
	down map[string]downMark
	// busy holds one token per asset being fetched, so that a fetch ahead
	// and a step's own fetch of the same asset are one fetch.
	busy map[string]chan struct{}
}

// one waits until no other fetch of a runs in this worker, and returns
// the function that ends this one.
func (f *Fetcher) one(ctx context.Context, a Asset) (func(), error) {
	key := a.Release + "/" + a.Digest
	f.mu.Lock()
	if f.busy == nil {
		f.busy = map[string]chan struct{}{}
	}
	token := f.busy[key]
	if token == nil {
		token = make(chan struct{}, 1)
		f.busy[key] = token
	}
	f.mu.Unlock()
	select {
	case token <- struct{}{}:
		return func() { <-token }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *Fetcher) init() {
	f.once.Do(func() {
		if f.Timeout <= 0 {
			f.Timeout = DefaultTimeout
		}
		if f.Metrics == nil {
			f.Metrics = NewMetrics(nil)
		}
		if f.Log == nil {
			f.Log = slog.Default()
		}
		// Peers are on the datacenter network: never through the
		// site's proxy.
		f.client = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: f.Timeout}).DialContext,
			ResponseHeaderTimeout: f.Timeout,
			MaxIdleConnsPerHost:   4,
		}}
	})
}

// Begin starts the fetches for the rollout of release: peers dropped in
// another rollout are given a new chance; the cache keeps only the content
// of release and of the version this worker runs (what a rollback needs);
// and what the cache holds of release is announced again, once per
// process (a restarted worker has a new lease).
func (f *Fetcher) Begin(ctx context.Context, release string) error {
	f.init()
	// One Begin at a time: a fetch ahead and a step begin together.
	f.beginning.Lock()
	defer f.beginning.Unlock()
	f.mu.Lock()
	begun := f.rollout == release
	f.mu.Unlock()
	if begun {
		return nil
	}
	if err := f.Cache.Keep(release, f.Running); err != nil {
		return err
	}
	if err := f.announce(ctx, release); err != nil {
		return err
	}
	f.mu.Lock()
	f.rollout, f.dropped, f.down = release, nil, nil
	f.mu.Unlock()
	return nil
}

// Announce says, under this worker's lease, that it holds what its cache
// holds, of every release the cache keeps: a worker that restarted (after
// its self-upgrade, say) serves its peers again at once.
func (f *Fetcher) Announce(ctx context.Context) error {
	f.init()
	rels, err := f.Cache.Releases()
	if err != nil {
		return err
	}
	for _, rel := range rels {
		if err := f.announce(ctx, rel); err != nil {
			return err
		}
	}
	return nil
}

// announce announces what the cache holds of release.
func (f *Fetcher) announce(ctx context.Context, release string) error {
	s, err := f.Cache.Store(release)
	if err != nil {
		return err
	}
	list, err := s.Assets()
	if err != nil {
		return err
	}
	for _, d := range list {
		if err := f.Storage.AnnouncePeer(ctx, release, d, f.ID, f.URL, f.Lease()); err != nil {
			return err
		}
	}
	return nil
}

// droppedPeers is the peers dropped in this rollout, and why.
func (f *Fetcher) droppedPeers() map[string]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.dropped)
}

func (f *Fetcher) drop(id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropped == nil {
		f.dropped = map[string]error{}
	}
	f.dropped[id] = err
}

func (f *Fetcher) isDropped(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.dropped[id]
	return ok
}

// downFor is how long a peer that did not answer is left alone.
const downFor = time.Minute

// downMark is when a peer that did not answer may be asked again, and
// the lease of the announcement it did not answer on: a restarted worker
// announces under another.
type downMark struct {
	until time.Time
	lease clientv3.LeaseID
}

func (f *Fetcher) markDown(id string, h storage.Holder) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down == nil {
		f.down = map[string]downMark{}
	}
	f.down[id] = downMark{until: time.Now().Add(downFor), lease: h.Lease}
}

// isDown reports whether a peer is left alone: it did not answer lately,
// and has not restarted since.
func (f *Fetcher) isDown(id string, h storage.Holder) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.down[id]
	return ok && time.Now().Before(m.until) && h.Lease == m.lease
}

// source is how one asset is fetched: have reports whether the store
// holds it whole; fromPeer fetches it from a peer's base URL, fromUpstream
// from upstream, each into the store, checking every byte.
type source struct {
	have         func() bool
	fromPeer     func(ctx context.Context, base string) error
	fromUpstream func(ctx context.Context) error
}

// get runs the fetch of one asset.
func (f *Fetcher) get(ctx context.Context, a Asset, store *Store, src source) error {
	done, err := f.one(ctx, a)
	if err != nil {
		return err
	}
	defer done()
	log := f.Log.With("asset", a.Name, "digest", a.Digest)
	// tried are the peers asked already, by the revision of the
	// announcement they were asked on.
	tried := map[string]int64{}
	waited := false
	for {
		if src.have() {
			return f.holds(ctx, a, store)
		}
		holders, rev, err := f.Storage.PeerHolders(ctx, a.Release, a.Digest)
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(holders))
		unanswered := 0
		for id, h := range holders {
			switch {
			case id == f.ID || f.isDropped(id):
			case tried[id] >= h.Revision:
			case f.isDown(id, h):
				unanswered++
			default:
				ids = append(ids, id)
			}
		}
		// Spread the fleet over the peers that hold it.
		rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		busy := false
		for _, id := range ids {
			base, err := peerURL(holders[id].URL)
			if err == nil {
				err = src.fromPeer(ctx, base)
			}
			var status *release.StatusError
			switch {
			case err == nil:
				log.Info("fetched from a peer", "peer", id)
				return f.holds(ctx, a, store)
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, release.ErrChecksum), errors.Is(err, release.ErrTooLarge):
				f.drop(id, fmt.Errorf("%w: %w", ErrBadContent, err))
				f.Metrics.dropped.Inc()
				log.Error("a peer served content that is not the release's: dropped for the rest of the rollout", "peer", id, "error", err)
			case errors.As(err, &status) && status.Code == http.StatusServiceUnavailable:
				busy = true
			case errors.As(err, &status), errors.Is(err, release.ErrNotFound):
				// It answered, without the asset (404: gone from its
				// cache); it may well have the next one.
				tried[id] = holders[id].Revision
				log.Warn("a peer could not serve; trying the next", "peer", id, "error", err)
			default:
				tried[id] = holders[id].Revision
				unanswered++
				f.markDown(id, holders[id])
				log.Warn("a peer did not answer; trying the next, and leaving it alone for a minute", "peer", id, "error", err)
			}
		}
		if busy {
			// Every peer that holds it is serving others: wait for one
			// more to hold it, or for a moment.
			f.wait(ctx, a, rev, 500*time.Millisecond)
			continue
		}
		if unanswered > 0 && !waited {
			// Servers hold it but do not answer: one restarting after
			// its self-upgrade announces again within moments. Give
			// them one timeout before going upstream.
			waited = true
			f.wait(ctx, a, rev, f.Timeout)
			continue
		}
		holder, crev, err := f.Storage.ClaimUpstream(ctx, a.Release, a.Digest, f.ID, f.Lease(), rev)
		if err != nil {
			return err
		}
		if holder == "" {
			continue // a server announced it since: ask it
		}
		if holder == f.ID {
			log.Info("fetching from upstream for the site")
			err := src.fromUpstream(ctx)
			if err == nil {
				// Announced before the claim goes, so that no waiter
				// finds neither and goes upstream too.
				err = f.holds(ctx, a, store)
			}
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if derr := f.Storage.DropUpstreamClaim(dctx, a.Release, a.Digest, f.ID); derr != nil {
				log.Warn("cannot drop the upstream claim; it ends with this worker's lease", "error", derr)
			}
			cancel()
			return err
		}
		log.Info("waiting for a peer that fetches it from upstream", "peer", holder)
		f.wait(ctx, a, max(rev, crev), 0)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// wait returns when a holder or the claim of a changes after rev, or after
// d (when d > 0).
func (f *Fetcher) wait(ctx context.Context, a Asset, rev int64, d time.Duration) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if d > 0 {
		wctx, cancel = context.WithTimeout(ctx, d)
	}
	defer cancel()
	if err := f.Storage.WaitPeers(wctx, a.Release, a.Digest, rev); err != nil && wctx.Err() == nil {
		f.Log.Warn("watch of the peers failed", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// holds records that the store has a whole and announces it.
func (f *Fetcher) holds(ctx context.Context, a Asset, store *Store) error {
	if err := store.markAsset(a.Digest); err != nil {
		return err
	}
	if err := f.Storage.AnnouncePeer(ctx, a.Release, a.Digest, f.ID, f.URL, f.Lease()); err != nil {
		f.Log.Warn("cannot announce what this server holds; peers will not ask it", "error", err)
	}
	return nil
}

// peerURL checks an announced URL: plain http(s), a host, no credentials.
func peerURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("announced peer URL %q is not http(s)://host:port", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}

// File returns the path of a verified copy of the file a, from this
// server's cache, a peer, or upstream. upstream downloads it into dir,
// checked against a's digest and size, and returns its path; progress
// counts its bytes. The file stays in the cache, for peers: the caller
// must not remove it.
func (f *Fetcher) File(ctx context.Context, a Asset, upstream func(ctx context.Context, dir string, progress func(int64)) (string, error)) (string, error) {
	f.init()
	store, err := f.Cache.Store(a.Release)
	if err != nil {
		return "", err
	}
	sum := a.Digest[len("sha256:"):]
	src := source{
		have: func() bool {
			size, ok := store.Has(a.Digest)
			return ok && (a.Size < 0 || size == a.Size)
		},
		fromPeer: func(ctx context.Context, base string) error {
			path, err := release.DownloadURL(ctx, f.client, base+"/v2/ferry/blobs/"+a.Digest, store.TempDir(), a.Name, sum,
				release.DownloadOptions{Attempts: 1, MaxSize: a.Size, IdleTimeout: f.Timeout, Progress: f.Metrics.in})
			if err != nil {
				return err
			}
			return store.Adopt(path, a.Digest)
		},
		fromUpstream: func(ctx context.Context) error {
			path, err := upstream(ctx, store.TempDir(), f.Metrics.fromUpstream)
			if err != nil {
				return err
			}
			return store.Adopt(path, a.Digest)
		},
	}
	if err := f.get(ctx, a, store, src); err != nil {
		return "", err
	}
	return store.Path(a.Digest), nil
}
