// Package artifacts holds a release's artifact set and its rollout plan.
package artifacts

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Strategies of a step.
const (
	// Lockstep: every server runs the step at once.
	Lockstep = "lockstep"
	// Rolling: at most Parallel servers run the step at a time.
	Rolling = "rolling"
	// Leader: one server runs the step once for the fleet and records it in
	// contents/<target>; the others wait for that record.
	Leader = "leader"
)

// Plan is the ordered list of steps a worker runs for a rollout. Every
// server finishes step k before any server starts step k+1, whatever the
// strategy: the strategy only says how many servers run one step at once.
type Plan struct {
	// OnFailure is what a failed step does to the rollout, unless the step
	// says otherwise: "stop" (the default: the fleet stops and waits for
	// ferry recover) or "rollback" (the fleet goes back to the version it
	// ran before, and this version is refused).
	OnFailure string `yaml:"on-failure,omitempty" json:"on-failure,omitempty"`
	Steps     []Step `yaml:"steps" json:"steps"`
}

// Failure policies.
const (
	OnFailureStop     = "stop"
	OnFailureRollback = "rollback"
)

// OnFailureOf is step k's (1-based) failure policy: its own, else the
// plan's, else stop.
func (p *Plan) OnFailureOf(k int) string {
	if k >= 1 && k <= len(p.Steps) && p.Steps[k-1].OnFailure != "" {
		return p.Steps[k-1].OnFailure
	}
	if p.OnFailure != "" {
		return p.OnFailure
	}
	return OnFailureStop
}

// Step is one step of a plan.
type Step struct {
	Name     string `yaml:"name" json:"name"`
	Strategy string `yaml:"strategy" json:"strategy"`
	// Parallel is the N of a rolling step (default 1).
	Parallel int `yaml:"parallel,omitempty" json:"parallel,omitempty"`
	// Target names the contents/ record of a leader step (default: Name).
	Target string `yaml:"target,omitempty" json:"target,omitempty"`
	// Timeout bounds one attempt of the step's actions on a server (a Go
	// duration); empty: no bound. An attempt that runs out fails.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitzero"`
	// Retries is how many more attempts a server makes after a failed one
	// before the step fails there (default 0). A transient error (the
	// network, a registry's 5xx) is retried anyway and costs no attempt.
	Retries int `yaml:"retries,omitempty" json:"retries,omitempty"`
	// RetryBackoff is the wait before the first retry, doubled for each
	// later one up to 8 times it (a Go duration; default 10s).
	RetryBackoff Duration `yaml:"retry-backoff,omitempty" json:"retry-backoff,omitzero"`
	// MaxFailures is how many servers may fail a rolling step (after its
	// retries, or by dying in it) before the fleet stops; the rollout goes
	// on without them (default 0: the first failure stops the fleet).
	MaxFailures int `yaml:"max-failures,omitempty" json:"max-failures,omitempty"`
	// Canary is how many servers take a rolling step first: a count ("1")
	// or a share of the rollout's servers ("10%", at least one). The rest
	// wait, paused, until the rollout is resumed (Pause).
	Canary string `yaml:"canary,omitempty" json:"canary,omitempty"`
	// Pause is how the rest go on once the canary finished the step:
	// "manual" (`ferry rollout resume`, the default) or a Go duration (by
	// itself that long after; `ferry rollout resume` goes on sooner).
	Pause   Duration `yaml:"pause,omitempty" json:"pause,omitzero"`
	Actions []Action `yaml:"actions" json:"actions"`
	// Health are checks that must pass on a server after the step's
	// actions, and stay passing for Soak, before the server passes the
	// step. A failed check fails the attempt (see Retries).
	Health []HealthCheck `yaml:"health,omitempty" json:"health,omitempty"`
	// Soak is how long the health checks must stay green (a Go duration;
	// default: one pass).
	Soak Duration `yaml:"soak,omitempty" json:"soak,omitzero"`
	// OnFailure overrides the plan's on-failure for this step.
	OnFailure string `yaml:"on-failure,omitempty" json:"on-failure,omitempty"`
	// Selector runs the step only on servers whose labels have every one
	// of these values; the others pass through it at once, so its
	// barrier waits for the matching servers alone.
	Selector map[string]string `yaml:"selector,omitempty" json:"selector,omitempty"`
	// Spread names a label (e.g. rack): a rolling step never has two
	// servers with the same value of it inside the step at once.
	Spread string `yaml:"spread,omitempty" json:"spread,omitempty"`
}

// Selects reports whether a server with these labels runs the step.
func (s *Step) Selects(labels map[string]string) bool {
	for k, v := range s.Selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// HealthCheck is one check of a step's health gate. Exactly one kind is set.
type HealthCheck struct {
	// HTTP GETs a URL and expects a 2xx answer.
	HTTP *HTTPCheck `yaml:"http,omitempty" json:"http,omitempty"`
	// Command runs a command and expects exit status 0.
	Command *RunAction `yaml:"command,omitempty" json:"command,omitempty"`
}

// HTTPCheck is an HTTP health check.
type HTTPCheck struct {
	URL string `yaml:"url" json:"url"`
	// Timeout bounds the request (a Go duration; default 5s).
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitzero"`
}

// TimeoutDuration is the check's timeout, 5s by default.
func (h *HTTPCheck) TimeoutDuration() time.Duration {
	if h.Timeout.positive() {
		return h.Timeout.Std()
	}
	return 5 * time.Second
}

// String names the check in messages.
func (c *HealthCheck) String() string {
	if c.HTTP != nil {
		return "GET " + c.HTTP.URL
	}
	if c.Command != nil {
		return strings.Join(append([]string{c.Command.Command}, c.Command.Args...), " ")
	}
	return "empty check"
}

// SoakDuration is Soak; 0 when unset.
func (s *Step) SoakDuration() time.Duration { return s.Soak.Std() }

// PauseManual waits for `ferry rollout resume`.
const PauseManual = "manual"

// CanaryCount is how many of n servers take the step first; 0 when the
// step has no canary.
func (s *Step) CanaryCount(n int) int {
	c := strings.TrimSpace(s.Canary)
	if c == "" {
		return 0
	}
	if pct, ok := strings.CutSuffix(c, "%"); ok {
		p, _ := strconv.Atoi(pct)
		return min(max(n*p/100, 1), n)
	}
	k, _ := strconv.Atoi(c)
	return min(k, n)
}

// PauseFor is how long the rest wait after the canary; manual is false
// when they wait for `ferry rollout resume` alone.
func (s *Step) PauseFor() (d time.Duration, manual bool) {
	if s.Pause.IsZero() || s.Pause.String() == PauseManual {
		return 0, true
	}
	return s.Pause.Std(), false
}

// MaxRetries bounds a step's retries.
const MaxRetries = 100

// DefaultRetryBackoff is the wait before a step's first retry.
const DefaultRetryBackoff = 10 * time.Second

// TimeoutDuration is Timeout; 0 when unset.
func (s *Step) TimeoutDuration() time.Duration { return s.Timeout.Std() }

// RetryWait is the wait before retry n (1-based): RetryBackoff doubled for
// each earlier retry, at most 8 times RetryBackoff.
func (s *Step) RetryWait(n int) time.Duration {
	base := DefaultRetryBackoff
	if s.RetryBackoff.positive() {
		base = s.RetryBackoff.Std()
	}
	return base << min(max(n-1, 0), 3)
}

// ContentsTarget is the contents/ key of a leader step.
func (s *Step) ContentsTarget() string {
	if s.Target != "" {
		return s.Target
	}
	return s.Name
}

// Action is one thing a step does. Exactly one field is set.
type Action struct {
	Run          *RunAction          `yaml:"run,omitempty" json:"run,omitempty"`
	Debs         *DebsAction         `yaml:"debs,omitempty" json:"debs,omitempty"`
	Images       *ImagesAction       `yaml:"images,omitempty" json:"images,omitempty"`
	RestartUnits *RestartUnitsAction `yaml:"restart-units,omitempty" json:"restart-units,omitempty"`
	BootContents *BootContentsAction `yaml:"boot-contents,omitempty" json:"boot-contents,omitempty"`
}

// ActionTypes are the kinds of action a plan may use.
var ActionTypes = []string{"run", "debs", "images", "restart-units", "boot-contents"}

// Type names the action's kind.
func (a *Action) Type() string {
	switch {
	case a.Run != nil:
		return "run"
	case a.Debs != nil:
		return "debs"
	case a.Images != nil:
		return "images"
	case a.RestartUnits != nil:
		return "restart-units"
	case a.BootContents != nil:
		return "boot-contents"
	}
	return ""
}

func (a *Action) kinds() int {
	n := 0
	for _, set := range []bool{a.Run != nil, a.Debs != nil, a.Images != nil, a.RestartUnits != nil, a.BootContents != nil} {
		if set {
			n++
		}
	}
	return n
}

// DebsAction installs the set's extra packages (all, or those named).
type DebsAction struct {
	Names []string `yaml:"names,omitempty" json:"names,omitempty"`
}

// ImagesAction pulls the set's images (all, or those named) by digest into
// the container runtime, then restarts the units of the images that changed.
type ImagesAction struct {
	Names []string `yaml:"names,omitempty" json:"names,omitempty"`
}

// RestartUnitsAction restarts systemd units.
type RestartUnitsAction struct {
	Units []string `yaml:"units" json:"units"`
}

// BootContentsAction publishes the OS image and rendered ignitions to the
// netboot content directory. It belongs in a leader step.
type BootContentsAction struct {
	// Keep is how many versions to keep (default 3).
	Keep int `yaml:"keep,omitempty" json:"keep,omitempty"`
}

// RunAction runs a command. A non-zero exit fails the step.
type RunAction struct {
	Command string            `yaml:"command" json:"command"`
	Args    []string          `yaml:"args,omitempty" json:"args,omitempty"`
	Env     map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Timeout bounds the command (a Go duration); empty means no bound.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitzero"`
}

// TimeoutDuration is Timeout; 0 when unset.
func (r *RunAction) TimeoutDuration() time.Duration { return r.Timeout.Std() }

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

var labelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)

// Validate checks a plan and says what is wrong with the first bad step.
func (p *Plan) Validate() error {
	if !validOnFailure(p.OnFailure) {
		return fmt.Errorf("on-failure %q is neither stop nor rollback", p.OnFailure)
	}
	seen := map[string]bool{}
	targets := map[string]bool{}
	for i := range p.Steps {
		s := &p.Steps[i]
		where := fmt.Sprintf("step %d (%s)", i+1, s.Name)
		if !namePattern.MatchString(s.Name) {
			return fmt.Errorf("%s: name must be lower-case letters, digits, '.', '_' or '-'", where)
		}
		if seen[s.Name] {
			return fmt.Errorf("%s: the name is used twice", where)
		}
		seen[s.Name] = true
		switch s.Strategy {
		case Lockstep, Leader:
			if s.Parallel != 0 {
				return fmt.Errorf("%s: parallel applies to rolling steps only", where)
			}
		case Rolling:
			if s.Parallel < 0 {
				return fmt.Errorf("%s: parallel must be 1 or more", where)
			}
		default:
			return fmt.Errorf("%s: strategy %q is not lockstep, rolling or leader", where, s.Strategy)
		}
		if s.Strategy == Leader {
			t := s.ContentsTarget()
			if !namePattern.MatchString(t) {
				return fmt.Errorf("%s: target %q must be lower-case letters, digits, '.', '_' or '-'", where, t)
			}
			if targets[t] {
				return fmt.Errorf("%s: target %q is used by another leader step", where, t)
			}
			targets[t] = true
		} else if s.Target != "" {
			return fmt.Errorf("%s: target applies to leader steps only", where)
		}
		if !s.Timeout.IsZero() {
			if !s.Timeout.positive() {
				return fmt.Errorf("%s: timeout %q is not a positive duration (e.g. 10m)", where, s.Timeout)
			}
		}
		if s.Retries < 0 || s.Retries > MaxRetries {
			return fmt.Errorf("%s: retries must be from 0 to %d, not %d", where, MaxRetries, s.Retries)
		}
		if !s.RetryBackoff.IsZero() {
			if !s.RetryBackoff.positive() || s.RetryBackoff.Std() > time.Hour {
				return fmt.Errorf("%s: retry-backoff %q is not a positive duration of at most 1h (e.g. 30s)", where, s.RetryBackoff)
			}
			if s.Retries == 0 {
				return fmt.Errorf("%s: retry-backoff applies only with retries: set retries: N, or remove retry-backoff", where)
			}
		}
		if s.MaxFailures != 0 {
			if s.Strategy != Rolling {
				return fmt.Errorf("%s: max-failures applies to rolling steps only", where)
			}
			if s.MaxFailures < 0 {
				return fmt.Errorf("%s: max-failures must be 0 or more, not %d", where, s.MaxFailures)
			}
		}
		if s.Canary != "" {
			if s.Strategy != Rolling {
				return fmt.Errorf("%s: canary applies to rolling steps only", where)
			}
			if !validCanary(s.Canary) {
				return fmt.Errorf("%s: canary %q is not a count of servers (1 or more) or a share (1%% to 100%%)", where, s.Canary)
			}
		}
		if !s.Pause.IsZero() {
			if s.Canary == "" {
				return fmt.Errorf("%s: pause applies only with canary: set canary: 1 (or a share such as 10%%)", where)
			}
			if s.Pause.String() != PauseManual && !s.Pause.positive() {
				return fmt.Errorf("%s: pause %q is neither manual nor a positive duration (e.g. 15m)", where, s.Pause)
			}
		}
		for j := range s.Health {
			if err := s.Health[j].validate(); err != nil {
				return fmt.Errorf("%s, health check %d: %w", where, j+1, err)
			}
		}
		if !s.Soak.IsZero() {
			if len(s.Health) == 0 {
				return fmt.Errorf("%s: soak applies only with health checks: add a health list, or remove soak", where)
			}
			if !s.Soak.positive() {
				return fmt.Errorf("%s: soak %q is not a positive duration (e.g. 30s)", where, s.Soak)
			}
		}
		for k := range s.Selector {
			if !labelPattern.MatchString(k) {
				return fmt.Errorf("%s: selector key %q is not a label name (letters, digits, '.', '_', '/', '-')", where, k)
			}
		}
		if s.Spread != "" {
			if s.Strategy != Rolling {
				return fmt.Errorf("%s: spread applies to rolling steps only", where)
			}
			if !labelPattern.MatchString(s.Spread) {
				return fmt.Errorf("%s: spread %q is not a label name (e.g. rack)", where, s.Spread)
			}
		}
		if !validOnFailure(s.OnFailure) {
			return fmt.Errorf("%s: on-failure %q is neither stop nor rollback", where, s.OnFailure)
		}
		if len(s.Actions) == 0 {
			return fmt.Errorf("%s: has no actions", where)
		}
		for j := range s.Actions {
			if err := s.Actions[j].validate(); err != nil {
				return fmt.Errorf("%s, action %d: %w", where, j+1, err)
			}
		}
	}
	return nil
}

func (c *HealthCheck) validate() error {
	switch {
	case c.HTTP != nil && c.Command != nil, c.HTTP == nil && c.Command == nil:
		return errors.New("a health check is either http: {url: ...} or command: {command: ...}")
	case c.HTTP != nil:
		u, err := url.Parse(c.HTTP.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http: url %q is not an http(s) URL", c.HTTP.URL)
		}
		if !c.HTTP.Timeout.IsZero() {
			if !c.HTTP.Timeout.positive() {
				return fmt.Errorf("http: timeout %q is not a positive duration (e.g. 5s)", c.HTTP.Timeout)
			}
		}
	default:
		if err := (&Action{Run: c.Command}).validate(); err != nil {
			return fmt.Errorf("command: %s", strings.TrimPrefix(err.Error(), "run: "))
		}
	}
	return nil
}

func validOnFailure(v string) bool {
	return v == "" || v == OnFailureStop || v == OnFailureRollback
}

func validCanary(c string) bool {
	if pct, ok := strings.CutSuffix(c, "%"); ok {
		p, err := strconv.Atoi(pct)
		return err == nil && p >= 1 && p <= 100
	}
	k, err := strconv.Atoi(c)
	return err == nil && k >= 1
}

func (a *Action) validate() error {
	if a.kinds() != 1 {
		return errors.New("an action must name exactly one kind (known: " + strings.Join(ActionTypes, ", ") + ")")
	}
	if a.RestartUnits != nil && len(a.RestartUnits.Units) == 0 {
		return errors.New("restart-units: units is empty")
	}
	if a.BootContents != nil && a.BootContents.Keep < 0 {
		return errors.New("boot-contents: keep must be 1 or more")
	}
	if a.Run != nil {
		if a.Run.Command == "" {
			return errors.New("run: command is empty")
		}
		if !a.Run.Timeout.IsZero() {
			if !a.Run.Timeout.positive() {
				return fmt.Errorf("run: timeout %q is not a positive duration (e.g. 10m)", a.Run.Timeout)
			}
		}
	}
	return nil
}

func (p *Plan) defaults() {
	for i := range p.Steps {
		if p.Steps[i].Strategy == Rolling && p.Steps[i].Parallel == 0 {
			p.Steps[i].Parallel = 1
		}
	}
}
