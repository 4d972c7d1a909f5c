package peer

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the peer layer's metrics, in the worker's registry.
type Metrics struct {
	bytes    *prometheus.CounterVec
	upstream prometheus.Counter
	dropped  prometheus.Counter
	busy     prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_worker_peer_bytes_total",
			Help: "Bytes of verified release content moved between boot servers: in (fetched from peers), out (served to peers).",
		}, []string{"direction"}),
		upstream: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_worker_upstream_bytes_total",
			Help: "Bytes of release content this server fetched upstream (GitHub, the registry) over the site's uplink.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_worker_peers_dropped_total",
			Help: "Peers dropped for the rest of a rollout because they served content that failed its digest or size.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_worker_peer_busy_total",
			Help: "Peer requests this server turned away (503) because it already served its most at once.",
		}),
	}
	m.bytes.WithLabelValues("in")
	m.bytes.WithLabelValues("out")
	if reg != nil {
		reg.MustRegister(m.bytes, m.upstream, m.dropped, m.busy)
	}
	return m
}

func (m *Metrics) in(n int64)           { m.bytes.WithLabelValues("in").Add(float64(n)) }
func (m *Metrics) out(n int64)          { m.bytes.WithLabelValues("out").Add(float64(n)) }
func (m *Metrics) fromUpstream(n int64) { m.upstream.Add(float64(n)) }
