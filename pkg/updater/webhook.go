package updater

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/pkg/storage"
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
// A delivery id (X-GitHub-Delivery) seen in the last DeliveryWindow is
// answered but not acted on again, and a client that sent more than
// BadSignatureLimit bad signatures within a minute is refused with 429
// until the minute is over.
func WebhookHandler(st *storage.Storage, log *slog.Logger) http.Handler {
	g := &webhookGuard{seen: map[string]time.Time{}, bad: map[string]*badWindow{}, now: time.Now}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		remote := remoteHost(r)
		if wait, limited := g.limited(remote); limited {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			http.Error(w, "too many bad signatures; try later", http.StatusTooManyRequests)
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
			g.badSignature(remote)
			log.Warn("webhook refused: bad signature", "delivery", r.Header.Get("X-GitHub-Delivery"), "remote", r.RemoteAddr)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if delivery := r.Header.Get("X-GitHub-Delivery"); delivery != "" && g.repeated(delivery) {
			log.Info("webhook: repeated delivery ignored", "delivery", delivery)
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
		if err := st.PutCheckTrigger(ctx, &storage.CheckTrigger{At: time.Now().UTC(), Delivery: delivery}); err != nil {
			log.Error("webhook: cannot trigger a release check", "error", err)
			http.Error(w, "cannot reach etcd", http.StatusServiceUnavailable)
			return
		}
		log.Info("webhook: release check triggered", "delivery", delivery, "action", payload.Action)
		w.Write([]byte("check triggered\n"))
	})
}

// validSignature checks "sha256=<hex HMAC-SHA256 of body>" in constant time.
func validSignature(secret string, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
}

// SignWebhook returns the X-Hub-Signature-256 value GitHub would send.
func SignWebhook(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Webhook guard limits.
const (
	DeliveryWindow    = 10 * time.Minute
	BadSignatureLimit = 10
	maxTracked        = 4096
)

// webhookGuard remembers recent deliveries and counts bad signatures per
// client, in this process.
type webhookGuard struct {
	mu   sync.Mutex
	seen map[string]time.Time
	bad  map[string]*badWindow
	now  func() time.Time
}

type badWindow struct {
	start time.Time
	count int
}

// repeated records a delivery and reports whether it was seen within
// DeliveryWindow.
func (g *webhookGuard) repeated(delivery string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if at, ok := g.seen[delivery]; ok && now.Sub(at) < DeliveryWindow {
		return true
	}
	if len(g.seen) >= maxTracked {
		for id, at := range g.seen {
			if now.Sub(at) >= DeliveryWindow {
				delete(g.seen, id)
			}
		}
		if len(g.seen) >= maxTracked {
			g.seen = map[string]time.Time{}
		}
	}
	g.seen[delivery] = now
	return false
}

func (g *webhookGuard) badSignature(remote string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	w := g.bad[remote]
	if w == nil || now.Sub(w.start) >= time.Minute {
		if len(g.bad) >= maxTracked {
			g.bad = map[string]*badWindow{}
		}
		w = &badWindow{start: now}
		g.bad[remote] = w
	}
	w.count++
}

// limited reports whether remote is refused for now, and for how long.
func (g *webhookGuard) limited(remote string) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.bad[remote]
	if w == nil || w.count < BadSignatureLimit {
		return 0, false
	}
	left := time.Minute - g.now().Sub(w.start)
	if left <= 0 {
		delete(g.bad, remote)
		return 0, false
	}
	return left, true
}

// remoteHost is the client's address without its port.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
