// Package ops holds what ferry ships for operations: Prometheus alert rules
// (prometheus/) and a Grafana dashboard (grafana/). Its tests check them
// with promtool and against the daemons' metrics.
package ops

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ferry-cd/ferry/pkg/updater"
	"github.com/ferry-cd/ferry/pkg/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is missing: run `make deps` as root, or apt-get install prometheus")
	cmd := exec.Command(bin, args...)
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool %v:\n%s", args, out)
	return string(out)
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	require.Contains(t, promtool(t, "check", "rules", "ferry-alerts.yml"), "SUCCESS")
	require.Contains(t, promtool(t, "test", "rules", "ferry-alerts_test.yml"), "SUCCESS")
}

// metricNames are the names every daemon's registry serves, with the
// series names of histograms.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	// The descriptions, not the gathered series: a metric with labels
	// (the step of a duration) has no series before its first event.
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, reg := range []*prometheus.Registry{updater.NewMetrics().Registry, worker.NewMetrics().Registry} {
		ch := make(chan *prometheus.Desc)
		go func() { reg.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			require.NotNil(t, m, d.String())
			names[m[1]] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

var ferryMetric = regexp.MustCompile(`\bferry_[a-z0-9_]+`)

// TestDashboardAndRulesUseRealMetrics: every ferry_ metric the dashboard
// and the alert rules query is one the daemons serve, so that a renamed
// metric cannot leave an empty panel or an alert that never fires.
func TestDashboardAndRulesUseRealMetrics(t *testing.T) {
	t.Parallel()
	names := metricNames(t)
	data, err := os.ReadFile("grafana/ferry.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			used := ferryMetric.FindAllString(target.Expr, -1)
			require.NotEmpty(t, used, "panel %q queries no ferry metric", p.Title)
			for _, m := range used {
				require.True(t, names[m], "panel %q uses %s, which no daemon serves", p.Title, m)
			}
		}
	}
	rules, err := os.ReadFile("prometheus/ferry-alerts.yml")
	require.NoError(t, err)
	for _, line := range strings.Split(string(rules), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			for _, m := range ferryMetric.FindAllString(expr, -1) {
				require.True(t, names[m], "rule %q uses %s, which no daemon serves", expr, m)
			}
		}
	}
}

// TestOperatorGuideNamesWhatOpsUses: every metric that a shipped alert
// rule or dashboard panel uses is in the operator's guide's metric tables,
// and every shipped alert is in its list, so that an operator paged by one
// can look it up.
func TestOperatorGuideNamesWhatOpsUses(t *testing.T) {
	t.Parallel()
	guide, err := os.ReadFile("../docs/operator-guide.md")
	require.NoError(t, err)
	dash, err := os.ReadFile("grafana/ferry.json")
	require.NoError(t, err)
	rules, err := os.ReadFile("prometheus/ferry-alerts.yml")
	require.NoError(t, err)
	series := regexp.MustCompile(`_(bucket|sum|count)$`)
	for _, m := range ferryMetric.FindAllString(string(dash)+string(rules), -1) {
		m = series.ReplaceAllString(m, "")
		require.True(t, strings.Contains(string(guide), "`"+m), "docs/operator-guide.md does not describe %s, which the shipped rules or dashboard use", m)
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1)
	require.NotEmpty(t, alerts)
	for _, a := range alerts {
		require.True(t, strings.Contains(string(guide), "`"+a[1]+"`"), "docs/operator-guide.md does not list the alert %s", a[1])
	}
}
