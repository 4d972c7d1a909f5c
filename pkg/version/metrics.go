package version

import "github.com/prometheus/client_golang/prometheus"

// BuildInfo is the ferry_build_info gauge: always 1, labelled with the
// version of the program that serves it, so that a dashboard shows which
// version every server runs.
func BuildInfo(program string) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ferry_build_info", Help: "Always 1; its labels say which ferry program and version serve these metrics.",
	}, []string{"program", "version"})
	g.WithLabelValues(program, Version).Set(1)
	return g
}
