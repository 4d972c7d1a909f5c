package updater

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/google/go-github/v84/github"
	lru "github.com/hashicorp/golang-lru/v2"
)

// maxWebhookBody bounds a webhook delivery; GitHub caps payloads at 25 MB,
// release events are a few KB.
const maxWebhookBody = 1 << 20

// releaseActions are the release event actions that may change the answer.
var releaseActions = map[string]bool{
	"published": true, "released": true, "prereleased": true, "created": true, "edited": true, "deleted": true, "unpublished": true,
}

// WebhookHandler receives GitHub webhook deliveries. A release event with a
// valid X-Hub-Signature-256 writes trigger/check, so that the leader,
// whichever updater it is, checks for a release at once. Every updater
// serves it, so a load balancer may send deliveries to any of them.
//
// A signed payload seen in the last DeliveryWindow is answered but not
// acted on again, whatever its X-GitHub-Delivery (which the signature does
// not cover). A network (a /24, or an IPv6 /64) that sent more than
// BadSignatureLimit bad signatures within a minute gets 429 for its bad
// ones until the minute is over; a valid signature always passes, so that
// GitHub behind the same proxy as an attacker is never locked out.
func WebhookHandler(st *storage.Storage, log *slog.Logger) http.Handler {
	g := newWebhookGuard(time.Now)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
		if err != nil || len(body) > maxWebhookBody {
			http.Error(w, "cannot read the payload", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		secret, err := st.GetWebhookSecret(ctx)
		if err != nil {
			log.Error("webhook: cannot read webhook-secret", "error", err)
			http.Error(w, "cannot read the configuration", http.StatusServiceUnavailable)
			return
		}
		if secret == "" {
			log.Warn("webhook refused: webhook-secret is not set")
			http.Error(w, "webhook-secret is not set on this fleet", http.StatusForbidden)
			return
		}
		if !validSignature(secret, body, r.Header.Get("X-Hub-Signature-256")) {
			network := networkOf(r)
			if wait, limited := g.badSignature(network); limited {
				w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
				http.Error(w, "too many bad signatures; try later", http.StatusTooManyRequests)
				return
			}
			log.Warn("webhook refused: bad signature", "delivery", r.Header.Get("X-GitHub-Delivery"), "remote", r.RemoteAddr)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if g.repeated(body) {
			log.Info("webhook: repeated delivery ignored", "delivery", r.Header.Get("X-GitHub-Delivery"))
			w.Write([]byte("repeated delivery: ignored\n"))
			return
		}

		event := r.Header.Get("X-GitHub-Event")
		switch event {
		case "ping":
			w.Write([]byte("pong\n"))
			return
		case "release":
		default:
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte("ignored: not a release event\n"))
			return
		}
		var payload struct {
			Action string `json:"action"`
		}
		if err := json.Unmarshal(body, &payload); err != nil {
			http.Error(w, "payload is not JSON", http.StatusBadRequest)
			return
		}
		if !releaseActions[payload.Action] {
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte("ignored action\n"))
			return
		}
		delivery := r.Header.Get("X-GitHub-Delivery")
		if _, err := st.PutCheckTrigger(ctx, &fleet.CheckTrigger{At: time.Now().UTC(), Delivery: delivery}); err != nil {
			log.Error("webhook: cannot trigger a release check", "error", err)
			http.Error(w, "cannot reach etcd", http.StatusServiceUnavailable)
			return
		}
		log.Info("webhook: release check triggered", "delivery", delivery, "action", payload.Action)
		w.Write([]byte("check triggered\n"))
	})
}

// validSignature checks "sha256=<hex HMAC-SHA256 of body>" in constant
// time.
func validSignature(secret string, body []byte, header string) bool {
	return strings.HasPrefix(header, "sha256=") && github.ValidateSignature(header, body, []byte(secret)) == nil
}

// Webhook guard limits.
const (
	DeliveryWindow    = 10 * time.Minute
	BadSignatureLimit = 10
	maxTracked        = 4096
)

// webhookGuard remembers the signed payloads of recent deliveries and
// counts bad signatures per network, in this process. Both tables are
// bounded; the least recently used entry makes room for a new one, so
// that filling a table never clears what it holds.
type webhookGuard struct {
	mu   sync.Mutex
	seen *lru.Cache[[sha256.Size]byte, time.Time]
	bad  *lru.Cache[string, *badWindow]
	now  func() time.Time
}

type badWindow struct {
	start time.Time
	count int
}

func newWebhookGuard(now func() time.Time) *webhookGuard {
	seen, _ := lru.New[[sha256.Size]byte, time.Time](maxTracked)
	bad, _ := lru.New[string, *badWindow](maxTracked)
	return &webhookGuard{seen: seen, bad: bad, now: now}
}

// repeated records a signed payload and reports whether it was seen
// within DeliveryWindow.
func (g *webhookGuard) repeated(body []byte) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now, sum := g.now(), sha256.Sum256(body)
	if at, ok := g.seen.Get(sum); ok && now.Sub(at) < DeliveryWindow {
		return true
	}
	g.seen.Add(sum, now)
	return false
}

// badSignature counts a bad signature from network, and reports whether
// the network is over the limit for now, and for how long.
func (g *webhookGuard) badSignature(network string) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	w, ok := g.bad.Get(network)
	if !ok || now.Sub(w.start) >= time.Minute {
		w = &badWindow{start: now}
		g.bad.Add(network, w)
	}
	w.count++
	if w.count <= BadSignatureLimit {
		return 0, false
	}
	return time.Minute - now.Sub(w.start), true
}

// networkOf is the client's network: its IPv4 /24 or IPv6 /64, so that
// one host cannot escape the limit by changing its address within them.
func networkOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	bits := 64
	if addr.Unmap().Is4() {
		addr, bits = addr.Unmap(), 24
	}
	p, _ := addr.Prefix(bits)
	return p.String()
}
