package worker

import (
	"sync"
	"sync/atomic"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/peer"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the worker's Prometheus metrics, in a registry of their own.
type Metrics struct {
	Registry        *prometheus.Registry
	step            prometheus.Gauge
	stepSeconds     *prometheus.HistogramVec
	downloadBytes   prometheus.Counter
	downloadSeconds prometheus.Histogram
	installs        *prometheus.CounterVec
	actions         *prometheus.CounterVec
	repairs         prometheus.Counter
	transientErrors prometheus.Counter
	stepRetries     *prometheus.CounterVec
	retrying        prometheus.Gauge
	retryingSince   prometheus.Gauge
	overBudget      prometheus.Gauge
	state           *prometheus.GaugeVec
	// states are ferry_worker_state's series, one per state, resolved
	// once (a step sets the state twice); stateMu guards lit, the series
	// that is 1 (nil when none is).
	states  map[fleet.State]prometheus.Gauge
	stateMu sync.Mutex
	lit     prometheus.Gauge
	// Peer are the peer layer's metrics, in the same registry.
	Peer *peer.Metrics
	// downloaded is downloadBytes as a number, for the record a
	// self-upgrade leaves to the next process.
	downloaded atomic.Int64
}

// addDownload counts n downloaded bytes.
func (m *Metrics) addDownload(n int64) {
	m.downloaded.Add(n)
	m.downloadBytes.Add(float64(n))
}

// setState makes state the worker's one state in ferry_worker_state.
func (m *Metrics) setState(state fleet.State) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	g := m.states[state]
	if g == m.lit {
		return
	}
	if m.lit != nil {
		m.lit.Set(0)
	}
	if m.lit = g; g != nil {
		g.Set(1)
	}
}

// NewMetrics creates the metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		step: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_worker_step", Help: "1-based index of the step this worker is on; 0 when idle.",
		}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ferry_worker_step_duration_seconds", Help: "Time to run a step on this server, barrier wait excluded.",
			Buckets: prometheus.ExponentialBuckets(0.1, 3, 10),
		}, []string{"step"}),
		downloadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_worker_download_bytes_total", Help: "Bytes of release assets downloaded.",
		}),
		downloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ferry_worker_download_duration_seconds", Help: "Time to download and verify a package.",
			Buckets: prometheus.ExponentialBuckets(0.1, 3, 10),
		}),
		installs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_worker_self_upgrades_total", Help: "Self-upgrades by result: ok, failed.",
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_worker_actions_total", Help: "Actions run, by type and result.",
		}, []string{"type", "result"}),
		transientErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_worker_transient_errors_total", Help: "Transient errors (network, GitHub 5xx/429/rate limit, etcd) that a step or self-upgrade met and retried.",
		}),
		stepRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_worker_step_retries_total", Help: "Failed attempts of a step's actions that the step's retries tried again, by step.",
		}, []string{"step"}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_worker_retrying", Help: "1 while this worker retries a step after a transient error.",
		}),
		retryingSince: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_worker_retrying_since_timestamp_seconds", Help: "Unix time of the first transient error of the current run of retries; 0 when not retrying.",
		}),
		overBudget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_worker_retry_budget_exceeded", Help: "1 while this worker has retried transient errors for longer than worker-retry-budget.",
		}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_worker_state", Help: "1 for this worker's state (idle, upgrading, waiting, running, retrying, repairing, paused, completed, aborted, stopped), 0 for the others.",
		}, []string{"state"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_worker_dpkg_repairs_total", Help: "Times dpkg's database showed an unfinished install that the worker had to repair.",
		}),
	}
	m.Registry.MustRegister(m.step, m.stepSeconds, m.downloadBytes, m.downloadSeconds, m.installs, m.actions, m.repairs, m.transientErrors, m.stepRetries, m.retrying, m.retryingSince, m.overBudget, m.state,
		version.BuildInfo("ferry-worker"), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Peer = peer.NewMetrics(m.Registry)
	m.states = map[fleet.State]prometheus.Gauge{}
	for _, st := range fleet.ServerStates {
		m.states[st] = m.state.WithLabelValues(string(st)) // 0 from the start
	}
	m.setState(fleet.StateIdle)
	// Every counter exists from the start, at 0, so that rate() and
	// alerts see its first increase.
	for _, r := range []string{"ok", "failed"} {
		m.installs.WithLabelValues(r)
		for _, t := range []string{"run", "debs", "images", "restart-units", "boot-contents"} {
			m.actions.WithLabelValues(t, r)
		}
	}
	return m
}
