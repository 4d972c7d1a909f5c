package updater

import (
	"strconv"

	"github.com/ferry-cd/ferry/pkg/fleet"
	build "github.com/ferry-cd/ferry/pkg/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the updater's Prometheus metrics, in a registry of their own
// so that several updaters can run in one test process.
type Metrics struct {
	Registry        *prometheus.Registry
	leader          prometheus.Gauge
	checks          *prometheus.CounterVec
	githubRequests  *prometheus.CounterVec
	rollouts        *prometheus.CounterVec
	rolloutDuration prometheus.Gauge
	notifications   *prometheus.CounterVec
	releaseTime     prometheus.Gauge
	releaseStale    prometheus.Gauge
	rolloutStart    prometheus.Gauge
	lastCheck       prometheus.Gauge
	lastCheckOK     prometheus.Gauge
	servers         *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them, with the Go and process
// collectors, in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_leader", Help: "1 while this updater is the leader.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_updater_release_checks_total", Help: "Release checks by result: found, none, error, rate_limited.",
		}, []string{"result"}),
		githubRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_updater_github_requests_total", Help: "GitHub API answers by HTTP status; 304 answers cost no rate limit.",
		}, []string{"code"}),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_updater_rollouts_total", Help: "Finished rollouts by result.",
		}, []string{"result"}),
		rolloutDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_rollout_duration_seconds", Help: "Age of the running rollout; 0 when none runs.",
		}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_updater_notifications_total", Help: "Notifications by result: sent, failed, dropped.",
		}, []string{"result"}),
		releaseTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_newest_release_timestamp_seconds", Help: "When the newest release of the env was published (Unix time), as the leader last saw it.",
		}),
		rolloutStart: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_rollout_start_timestamp_seconds", Help: "When the running rollout started (Unix time); 0 when none runs.",
		}),
		lastCheck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_last_check_timestamp_seconds", Help: "When this leader last checked GitHub for a release (Unix time); 0 before its first check.",
		}),
		lastCheckOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_last_check_success", Help: "1 when this leader's last release check got an answer (a release or none), 0 when it failed.",
		}),
		servers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_updater_servers", Help: "Registered servers by state (idle, not-alive, upgrading, waiting, running, retrying, repairing, paused, completed, aborted, stopped, failed), as the leader sees them; 0 on an updater that does not lead.",
		}, []string{"state"}),
		releaseStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_updater_newest_release_stale", Help: "1 when the newest release of the env is older than release-max-age.",
		}),
	}
	m.Registry.MustRegister(m.leader, m.checks, m.githubRequests, m.rollouts, m.rolloutDuration, m.rolloutStart, m.lastCheck, m.lastCheckOK, m.servers, m.notifications, m.releaseTime, m.releaseStale,
		build.BuildInfo("ferry-updater"), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every counter exists from the start, at 0, so that rate() and
	// alerts see its first increase.
	for _, r := range []string{"found", "none", "error", "rate_limited"} {
		m.checks.WithLabelValues(r)
	}
	for _, r := range []string{fleet.ResultCompleted, fleet.ResultAborted, fleet.ResultTimeout, fleet.ResultDead, fleet.ResultCleared, fleet.ResultFailed} {
		m.rollouts.WithLabelValues(r)
	}
	for _, r := range []string{"sent", "failed", "dropped"} {
		m.notifications.WithLabelValues(r)
	}
	for _, code := range []string{"200", "304"} {
		m.githubRequests.WithLabelValues(code)
	}
	m.observeFleet(nil)
	return m
}

func (m *Metrics) observeGitHub(code int) {
	m.githubRequests.WithLabelValues(strconv.Itoa(code)).Inc()
}

// observeFleet sets the fleet gauge from a snapshot; nil (not leading)
// sets every state to 0.
func (m *Metrics) observeFleet(snap *fleet.Snapshot) {
	counts := map[fleet.State]int{}
	if snap != nil {
		for id := range snap.Servers {
			counts[snap.State(id)]++
		}
	}
	for _, state := range fleet.ServerStates {
		m.servers.WithLabelValues(string(state)).Set(float64(counts[state]))
	}
}
