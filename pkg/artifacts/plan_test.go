package artifacts

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestParsePlan(t *testing.T) {
	t.Parallel()
	p, err := parsePlan([]byte(`
steps:
  - name: prepare
    strategy: lockstep
    actions:
      - run: {command: /bin/true, env: {A: b}, timeout: 1m}
  - name: restart
    strategy: rolling
    actions:
      - run: {command: /bin/true}
  - name: boot
    strategy: leader
    target: boot-contents
    actions:
      - run: {command: /bin/true}
`))
	require.NoError(t, err)
	require.Len(t, p.Steps, 3)
	require.Equal(t, 1, p.Steps[1].Parallel, "rolling defaults to one at a time")
	require.Equal(t, "boot-contents", p.Steps[2].ContentsTarget())
	require.Equal(t, "prepare", p.Steps[0].ContentsTarget())
	require.Equal(t, "run", p.Steps[0].Actions[0].Type())

	retried, err := parsePlan([]byte("steps:\n  - {name: a, strategy: lockstep, timeout: 2m, retries: 3, retry-backoff: 5s, actions: [{run: {command: x}}]}\n"))
	require.NoError(t, err)
	s := retried.Steps[0]
	require.Equal(t, 2*time.Minute, s.TimeoutDuration())
	require.Equal(t, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second},
		[]time.Duration{s.RetryWait(1), s.RetryWait(2), s.RetryWait(3), s.RetryWait(4), s.RetryWait(9)}, "doubling, at most 8 times the first")
	require.Equal(t, DefaultRetryBackoff, p.Steps[0].RetryWait(1))

	canary, err := parsePlan([]byte("steps:\n  - {name: a, strategy: rolling, canary: 10%, pause: 15m, actions: [{run: {command: x}}]}\n  - {name: b, strategy: rolling, canary: 2, actions: [{run: {command: x}}]}\n"))
	require.NoError(t, err)
	require.Equal(t, []int{1, 1, 3}, []int{canary.Steps[0].CanaryCount(3), canary.Steps[0].CanaryCount(10), canary.Steps[0].CanaryCount(30)}, "a share, at least one")
	require.Equal(t, []int{1, 2}, []int{canary.Steps[1].CanaryCount(1), canary.Steps[1].CanaryCount(5)})
	d, manual := canary.Steps[0].PauseFor()
	require.Equal(t, 15*time.Minute, d)
	require.False(t, manual)
	_, manual = canary.Steps[1].PauseFor()
	require.True(t, manual, "manual by default")

	policy, err := parsePlan([]byte("on-failure: rollback\nsteps:\n  - {name: a, strategy: lockstep, actions: [{run: {command: x}}]}\n  - {name: b, strategy: lockstep, on-failure: stop, actions: [{run: {command: x}}]}\n"))
	require.NoError(t, err)
	require.Equal(t, []string{OnFailureRollback, OnFailureStop, OnFailureRollback}, []string{policy.OnFailureOf(1), policy.OnFailureOf(2), policy.OnFailureOf(0)})
	require.Equal(t, OnFailureStop, p.OnFailureOf(1), "stop by default")

	sel, err := parsePlan([]byte("steps:\n  - {name: a, strategy: rolling, spread: rack, selector: {role: tftp}, actions: [{run: {command: x}}]}\n"))
	require.NoError(t, err)
	require.True(t, sel.Steps[0].Selects(map[string]string{"role": "tftp", "rack": "r1"}))
	require.False(t, sel.Steps[0].Selects(map[string]string{"role": "dns"}))
	require.False(t, sel.Steps[0].Selects(nil))
	require.True(t, p.Steps[0].Selects(nil), "no selector: every server")

	empty, err := parsePlan(nil)
	require.NoError(t, err)
	require.Empty(t, empty.Steps)
}

func TestParsePlanRefuses(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"unknown field":         "steps:\n  - name: a\n    strategy: lockstep\n    colour: red\n    actions: [{run: {command: x}}]\n",
		"unknown action":        "steps:\n  - name: a\n    strategy: lockstep\n    actions: [{reboot: {}}]\n",
		"empty action":          "steps:\n  - name: a\n    strategy: lockstep\n    actions: [{}]\n",
		"no actions":            "steps:\n  - name: a\n    strategy: lockstep\n",
		"bad strategy":          "steps:\n  - name: a\n    strategy: sometimes\n    actions: [{run: {command: x}}]\n",
		"duplicate name":        "steps:\n  - {name: a, strategy: lockstep, actions: [{run: {command: x}}]}\n  - {name: a, strategy: lockstep, actions: [{run: {command: x}}]}\n",
		"bad name":              "steps:\n  - {name: A B, strategy: lockstep, actions: [{run: {command: x}}]}\n",
		"empty command":         "steps:\n  - {name: a, strategy: lockstep, actions: [{run: {command: ''}}]}\n",
		"bad timeout":           "steps:\n  - {name: a, strategy: lockstep, actions: [{run: {command: x, timeout: soon}}]}\n",
		"parallel on lock":      "steps:\n  - {name: a, strategy: lockstep, parallel: 2, actions: [{run: {command: x}}]}\n",
		"target on lock":        "steps:\n  - {name: a, strategy: lockstep, target: t, actions: [{run: {command: x}}]}\n",
		"shared target":         "steps:\n  - {name: a, strategy: leader, target: t, actions: [{run: {command: x}}]}\n  - {name: b, strategy: leader, target: t, actions: [{run: {command: x}}]}\n",
		"step timeout":          "steps:\n  - {name: a, strategy: lockstep, timeout: -1m, actions: [{run: {command: x}}]}\n",
		"negative retries":      "steps:\n  - {name: a, strategy: lockstep, retries: -1, actions: [{run: {command: x}}]}\n",
		"many retries":          "steps:\n  - {name: a, strategy: lockstep, retries: 1000, actions: [{run: {command: x}}]}\n",
		"bad backoff":           "steps:\n  - {name: a, strategy: lockstep, retries: 2, retry-backoff: 2d, actions: [{run: {command: x}}]}\n",
		"lockstep max-failures": "steps:\n  - {name: a, strategy: lockstep, max-failures: 1, actions: [{run: {command: x}}]}\n",
		"negative max-failures": "steps:\n  - {name: a, strategy: rolling, max-failures: -1, actions: [{run: {command: x}}]}\n",
		"lockstep canary":       "steps:\n  - {name: a, strategy: lockstep, canary: 1, actions: [{run: {command: x}}]}\n",
		"zero canary":           "steps:\n  - {name: a, strategy: rolling, canary: 0, actions: [{run: {command: x}}]}\n",
		"canary share":          "steps:\n  - {name: a, strategy: rolling, canary: 120%, actions: [{run: {command: x}}]}\n",
		"lone pause":            "steps:\n  - {name: a, strategy: rolling, pause: 10m, actions: [{run: {command: x}}]}\n",
		"bad pause":             "steps:\n  - {name: a, strategy: rolling, canary: 1, pause: later, actions: [{run: {command: x}}]}\n",
		"empty health":          "steps:\n  - {name: a, strategy: lockstep, health: [{}], actions: [{run: {command: x}}]}\n",
		"health url":            "steps:\n  - {name: a, strategy: lockstep, health: [{http: {url: 'ftp://x'}}], actions: [{run: {command: x}}]}\n",
		"health both":           "steps:\n  - {name: a, strategy: lockstep, health: [{http: {url: 'http://x'}, command: {command: y}}], actions: [{run: {command: x}}]}\n",
		"lone soak":             "steps:\n  - {name: a, strategy: lockstep, soak: 30s, actions: [{run: {command: x}}]}\n",
		"bad soak":              "steps:\n  - {name: a, strategy: lockstep, soak: long, health: [{http: {url: 'http://x'}}], actions: [{run: {command: x}}]}\n",
		"bad on-failure":        "on-failure: retry\nsteps:\n  - {name: a, strategy: lockstep, actions: [{run: {command: x}}]}\n",
		"bad step on-failure":   "steps:\n  - {name: a, strategy: lockstep, on-failure: ignore, actions: [{run: {command: x}}]}\n",
		"lockstep spread":       "steps:\n  - {name: a, strategy: lockstep, spread: rack, actions: [{run: {command: x}}]}\n",
		"bad selector":          "steps:\n  - {name: a, strategy: lockstep, selector: {'a b': x}, actions: [{run: {command: x}}]}\n",
		"lone backoff":          "steps:\n  - {name: a, strategy: lockstep, retry-backoff: 5s, actions: [{run: {command: x}}]}\n",
	}
	for name, text := range cases {
		_, err := parsePlan([]byte(text))
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "plan", name)
	}
}

// parsePlan reads a plan strictly: unknown fields are errors.
func parsePlan(data []byte) (*Plan, error) {
	var p Plan
	if err := decodeStrict(data, &p); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	p.defaults()
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return &p, nil
}

// TestDurationsAsWritten: a plan's durations are parsed once, when it is
// read, and written back as they were written, in YAML and in JSON.
func TestDurationsAsWritten(t *testing.T) {
	t.Parallel()
	p, err := parsePlan([]byte(`steps:
  - name: a
    strategy: rolling
    timeout: 10m
    retries: 1
    retry-backoff: 1m30s
    canary: "1"
    pause: manual
    soak: 30s
    health: [{http: {url: "http://localhost/", timeout: 2s}}]
    actions: [{run: {command: x, timeout: 90s}}]
  - {name: b, strategy: rolling, canary: "1", pause: 15m, actions: [{run: {command: y}}]}
`))
	require.NoError(t, err)
	a := p.Steps[0]
	require.Equal(t, 10*time.Minute, a.TimeoutDuration())
	require.Equal(t, 90*time.Second, a.RetryWait(1))
	require.Equal(t, 30*time.Second, a.SoakDuration())
	require.Equal(t, 2*time.Second, a.Health[0].HTTP.TimeoutDuration())
	require.Equal(t, 90*time.Second, a.Actions[0].Run.TimeoutDuration())
	_, manual := a.PauseFor()
	require.True(t, manual)
	d, manual := p.Steps[1].PauseFor()
	require.False(t, manual)
	require.Equal(t, 15*time.Minute, d)
	require.Zero(t, p.Steps[1].TimeoutDuration(), "unset")

	out, err := yaml.Marshal(p)
	require.NoError(t, err)
	for _, w := range []string{"timeout: 10m\n", "retry-backoff: 1m30s\n", "pause: manual\n", "soak: 30s\n", "timeout: 2s\n", "timeout: 90s\n", "pause: 15m\n"} {
		require.Contains(t, string(out), w)
	}
	require.NotContains(t, string(out[strings.Index(string(out), "name: b"):]), "timeout", "an unset duration is left out")
	js, err := json.Marshal(p.Steps[1])
	require.NoError(t, err)
	require.Equal(t, `{"name":"b","strategy":"rolling","parallel":1,"canary":"1","pause":"15m","actions":[{"run":{"command":"y"}}]}`, string(js))

	bad, err := parsePlan([]byte("steps:\n  - {name: a, strategy: lockstep, timeout: soon, actions: [{run: {command: x}}]}\n"))
	require.Nil(t, bad)
	require.ErrorContains(t, err, `timeout "soon" is not a positive duration`)
}
