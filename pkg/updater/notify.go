package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/retry"
)

// EventKind is what a notification is about.
type EventKind string

// Notification kinds.
const (
	EventStart      EventKind = "start"
	EventSuccess    EventKind = "success"
	EventAbort      EventKind = "abort"
	EventTimeout    EventKind = "timeout"
	EventDeadServer EventKind = "dead-server"
	// EventStale: the newest release is older than release-max-age.
	EventStale EventKind = "stale-release"
	// EventServerFailed: a server failed a step that tolerated it; the
	// rollout goes on without it.
	EventServerFailed EventKind = "server-failed"
	// EventResumed: the pause after a step's canary ended.
	EventResumed EventKind = "resumed"
	// EventPaused: the fleet waits, paused (behind a canary, or by ferry
	// rollout pause).
	EventPaused EventKind = "paused"
	// EventRollback: a rollout failed and the fleet rolls back.
	EventRollback EventKind = "rollback"
)

// Event is one notification.
type Event struct {
	Kind      EventKind
	Version   string
	Reason    string // update or reconfigure
	Servers   []string
	Server    string // the server at fault, if any
	Message   string
	StartedAt time.Time
	Duration  time.Duration
	// Link is the status page (config status-url), "" when unset.
	Link string
	// Failed are the servers a completed rollout went on without.
	Failed []string
}

// Text is a one-line summary of the event.
func (e Event) Text() string {
	switch e.Kind {
	case EventStart:
		return fmt.Sprintf("ferry: %s rollout to %s started on %d servers", e.Reason, e.Version, len(e.Servers))
	case EventSuccess:
		if len(e.Failed) > 0 {
			return fmt.Sprintf("ferry: %s rollout to %s completed on %d of %d servers in %s; went on without %s", e.Reason, e.Version, len(e.Servers)-len(e.Failed), len(e.Servers), e.Duration.Truncate(time.Second), strings.Join(e.Failed, ", "))
		}
		return fmt.Sprintf("ferry: %s rollout to %s completed on %d servers in %s", e.Reason, e.Version, len(e.Servers), e.Duration.Truncate(time.Second))
	case EventRollback:
		return fmt.Sprintf("ferry: rollout to %s FAILED: %s", e.Version, e.Message)
	case EventPaused:
		return "ferry: " + e.Message
	case EventResumed:
		return fmt.Sprintf("ferry: rollout to %s resumed: %s", e.Version, e.Message)
	case EventServerFailed:
		return fmt.Sprintf("ferry: rollout to %s goes on without %s: %s", e.Version, e.Server, e.Message)
	case EventAbort:
		return fmt.Sprintf("ferry: rollout to %s STOPPED: %s aborted: %s", e.Version, e.Server, e.Message)
	case EventTimeout:
		return fmt.Sprintf("ferry: rollout to %s STOPPED: timed out: %s", e.Version, e.Message)
	case EventDeadServer:
		return fmt.Sprintf("ferry: rollout to %s STOPPED: %s has had no live worker for %s", e.Version, e.Server, e.Message)
	case EventStale:
		return fmt.Sprintf("ferry: the newest release, %s, is older than release-max-age: %s", e.Version, e.Message)
	}
	return "ferry: " + string(e.Kind)
}

// Notifier sends a notification to one destination.
type Notifier interface {
	Notify(ctx context.Context, url string, e Event) error
}

// WebhookNotifier posts Slack-compatible JSON (incoming webhook format).
type WebhookNotifier struct {
	Client *http.Client
}

type slackMessage struct {
	Text        string            `json:"text"`
	Attachments []slackAttachment `json:"attachments,omitempty"`
}

type slackAttachment struct {
	Color string `json:"color"`
	Title string `json:"title"`
	// TitleLink makes the title a link (to the status page).
	TitleLink string       `json:"title_link,omitempty"`
	Text      string       `json:"text,omitempty"`
	Fields    []slackField `json:"fields,omitempty"`
}

type slackField struct {
	Title string `json:"title"`
	Value string `json:"value"`
	Short bool   `json:"short"`
}

func slackPayload(e Event) slackMessage {
	color := "good"
	switch e.Kind {
	case EventStart:
		color = "#439FE0"
	case EventAbort, EventTimeout, EventDeadServer, EventRollback:
		color = "danger"
	case EventStale, EventServerFailed, EventPaused:
		color = "warning"
	}
	fields := []slackField{
		{Title: "version", Value: e.Version, Short: true},
		{Title: "event", Value: string(e.Kind), Short: true},
		{Title: "servers", Value: fmt.Sprint(e.Servers), Short: false},
	}
	if e.Server != "" {
		fields = append(fields, slackField{Title: "server", Value: e.Server, Short: true})
	}
	if e.Link != "" {
		fields = append(fields, slackField{Title: "status page", Value: e.Link, Short: false})
	}
	return slackMessage{
		Text:        e.Text(),
		Attachments: []slackAttachment{{Color: color, Title: "ferry " + string(e.Kind), TitleLink: e.Link, Text: e.Message, Fields: fields}},
	}
}

// Notify posts the event; any answer but 2xx is an error.
func (n *WebhookNotifier) Notify(ctx context.Context, url string, e Event) error {
	body, err := json.Marshal(slackPayload(e))
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("notify-url %s is not a valid URL; set it again with `ferry config set notify-url URL`", fleet.RedactURL(url))
	}
	req.Header.Set("Content-Type", "application/json")
	client := n.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		// The error holds the URL, and a Slack URL is a secret.
		return fmt.Errorf("post notification: %s", fleet.RedactURLs(err.Error()))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post notification: %s answered %s", fleet.RedactURL(url), resp.Status)
	}
	return nil
}

// dispatcher sends notifications in the background with retries, so that a
// slow or broken receiver never holds up a rollout.
type dispatcher struct {
	notifier Notifier
	log      *slog.Logger
	metrics  *Metrics
	queue    chan queued
	attempts int
	backoff  time.Duration
}

type queued struct {
	url string
	e   Event
}

func newDispatcher(n Notifier, log *slog.Logger, m *Metrics) *dispatcher {
	return &dispatcher{notifier: n, log: log, metrics: m, queue: make(chan queued, 64), attempts: 6, backoff: time.Second}
}

// enqueue never blocks: when the queue is full the event is dropped and
// logged.
func (d *dispatcher) enqueue(url string, e Event) {
	if url == "" {
		return
	}
	select {
	case d.queue <- queued{url: url, e: e}:
	default:
		d.metrics.notifications.WithLabelValues("dropped").Inc()
		d.log.Error("notification dropped: the queue is full", "event", e.Kind, "version", e.Version)
	}
}

func (d *dispatcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-d.queue:
			d.send(ctx, q)
		}
	}
}

func (d *dispatcher) send(ctx context.Context, q queued) {
	tries := 0
	_, err := retry.Do(ctx, retry.Policy{Base: d.backoff, Max: time.Minute, Tries: uint(d.attempts)}, func() (struct{}, error) {
		tries++
		sendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := d.notifier.Notify(sendCtx, q.url, q.e)
		if err != nil && tries < d.attempts {
			d.log.Warn("notification failed; will retry", "event", q.e.Kind, "version", q.e.Version, "attempt", tries, "error", err)
		}
		return struct{}{}, err
	})
	switch {
	case err == nil:
		d.metrics.notifications.WithLabelValues("sent").Inc()
	case ctx.Err() == nil:
		d.metrics.notifications.WithLabelValues("failed").Inc()
		d.log.Error("notification given up", "event", q.e.Kind, "version", q.e.Version, "attempts", d.attempts, "error", err)
	}
}
