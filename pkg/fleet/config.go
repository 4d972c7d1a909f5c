package fleet

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Env selects which releases the fleet follows.
type Env string

// Environments.
const (
	EnvNone    Env = "none"    // never update
	EnvDev     Env = "dev"     // follow test- tags
	EnvStaging Env = "staging" // latest release-, pre-releases included
	EnvProd    Env = "prod"    // latest release- that is not a pre-release
)

// Names of the config/ keys.
const (
	ConfigEnv                 = "env"
	ConfigGitHubRepo          = "github-repo"
	ConfigGitHubAPIURL        = "github-api-url"
	ConfigGitHubToken         = "github-token"
	ConfigCheckUpdateInterval = "check-update-interval"
	ConfigWorkerTimeout       = "worker-timeout"
	ConfigDeadServerGrace     = "dead-server-grace"
	ConfigWorkerRetryBudget   = "worker-retry-budget"
	ConfigReleaseTime         = "release-time"
	ConfigReleaseTimezone     = "release-timezone"
	ConfigProxy               = "proxy"
	ConfigNotifyURL           = "notify-url"
	ConfigWebhookSecret       = "webhook-secret"
	ConfigReleaseMaxAge       = "release-max-age"
	ConfigStatusURL           = "status-url"
)

// retiredKeys are former config/ keys that decide what a server trusts, or
// where it sends its GitHub token.
// They left etcd, whose every writer could otherwise make the fleet install
// their package, for files on each server.
var retiredKeys = map[string]string{
	"signing-keys":     "put the release public keys on every server as /etc/ferry/trusted-keys/NAME.pub (bootstrap setting trusted-keys); see /usr/share/doc/ferry/security.md",
	"allow-unsigned":   "it is a lab switch in each server's /etc/ferry/config.yml now (allow-unsigned: true), never for production; see /usr/share/doc/ferry/security.md",
	ConfigGitHubAPIURL: "set it in each server's /etc/ferry/config.yml (github-api-url: https://HOST/api/v3/), and in the admin's: the GitHub token goes only to the host a server's own config names; see /usr/share/doc/ferry/security.md",
}

// RetiredConfigKey reports whether name is a former config/ key that left
// etcd, and says where its setting lives now.
func RetiredConfigKey(name string) (where string, ok bool) {
	where, ok = retiredKeys[name]
	return where, ok
}

// DefaultGitHubAPIURL is GitHub's REST API, used unless a server's own
// config names another (bootstrap github-api-url).
const DefaultGitHubAPIURL = "https://api.github.com/"

// ConfigKey describes one config/ key: its default, how it is shown, and how
// a value is checked.
type ConfigKey struct {
	Name    string
	Default string
	// Secret values are never printed and never echoed in errors.
	Secret bool
	// Multi values hold one item a line (release-time).
	Multi bool
	Help  string
	// normalize checks a value and returns the form that is stored.
	normalize func(key, value string) (string, error)
	// display, if set, is how a value that is not wholly secret is shown.
	display func(string) string
}

var configKeys = []ConfigKey{
	{
		Name: ConfigEnv, Default: string(EnvNone),
		Help:      "which releases the fleet follows: none (never update), dev (test- tags), staging (release- tags, pre-releases included), prod (release- tags, full releases only)",
		normalize: normalizeEnv,
	},
	{
		Name:      ConfigGitHubRepo,
		Help:      "the GitHub repository that publishes ferry releases, as owner/name",
		normalize: normalizeRepo,
	},
	{
		Name: ConfigGitHubToken, Secret: true,
		Help:      "token for the GitHub API (raises the rate limit; needed for private repositories)",
		normalize: normalizeSecret,
	},
	{
		Name: ConfigCheckUpdateInterval, Default: "10m",
		Help:      "how often the updater leader checks for a new release",
		normalize: normalizeDuration,
	},
	{
		Name: ConfigWorkerTimeout, Default: "60m",
		Help:      "how long a rollout may run before the fleet is stopped",
		normalize: normalizeDuration,
	},
	{
		Name: ConfigDeadServerGrace, Default: "2m",
		Help:      "how long a server of a rollout may have no live worker before the fleet is stopped; longer than a worker restart",
		normalize: normalizeDuration,
	},
	{
		Name: ConfigWorkerRetryBudget, Default: "15m",
		Help:      "how long a worker retries transient errors (network, GitHub, etcd) quietly; past it, it keeps retrying but shows RETRYING loudly in status, logs and metrics. The fleet stops only at worker-timeout",
		normalize: normalizeDuration,
	},
	{
		Name: ConfigReleaseTime, Multi: true,
		Help:      "cron lines (minute hour day-of-month month day-of-week); a rollout may start only in a minute that one line matches. Empty: any time",
		normalize: normalizeReleaseTime,
	},
	{
		Name: ConfigReleaseTimezone, Default: "UTC",
		Help:      "IANA time zone in which release-time is read",
		normalize: normalizeTimezone,
	},
	{
		Name:      ConfigProxy,
		Help:      "HTTP proxy for GitHub and registry traffic; its password is never shown. Empty: none",
		normalize: normalizeProxy,
		display:   redactURL,
	},
	{
		Name: ConfigNotifyURL, Secret: true,
		Help:      "URL that receives Slack-compatible JSON notifications (a secret: shown masked). Empty: none",
		normalize: normalizeHTTPURL,
	},
	{
		Name:      ConfigStatusURL,
		Help:      "URL at which operators reach the updaters' status page (often a reverse proxy); notifications link to it. Empty: no link",
		normalize: normalizeHTTPURL,
	},
	{
		Name: ConfigWebhookSecret, Secret: true,
		Help:      "secret of the GitHub release webhook (X-Hub-Signature-256). Empty: webhook refused",
		normalize: normalizeSecret,
	},
	{
		Name:      ConfigReleaseMaxAge,
		Help:      "alert (metric and notification) when the newest release of the env is older than this: a frozen mirror, or a broken nightly. Empty: no alert",
		normalize: normalizeDuration,
	},
}

// ConfigKeys returns every config/ key in a stable order.
func ConfigKeys() []ConfigKey {
	out := make([]ConfigKey, len(configKeys))
	copy(out, configKeys)
	return out
}

// LookupConfigKey returns the description of a config/ key.
func LookupConfigKey(name string) (ConfigKey, error) {
	for _, k := range configKeys {
		if k.Name == name {
			return k, nil
		}
	}
	if hint, ok := retiredKeys[name]; ok {
		return ConfigKey{}, &ValidationError{Key: name, Reason: "no longer lives in etcd: whoever can write etcd must not decide what servers trust, or where they send their token", Hint: hint}
	}
	return ConfigKey{}, &ValidationError{
		Key:    name,
		Reason: "is not a config key",
		Hint:   "known keys: " + strings.Join(configKeyNames(), ", "),
	}
}

func configKeyNames() []string {
	names := make([]string, len(configKeys))
	for i, k := range configKeys {
		names[i] = k.Name
	}
	return names
}

// Normalize checks a value for the key and returns the form that is stored.
// An empty value is allowed for keys without a default and means "unset".
func (k ConfigKey) Normalize(value string) (string, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		if k.Default != "" {
			return "", k.invalid(value, "must not be empty", "unset the key to go back to the default "+quote(k.Default))
		}
		return "", nil
	}
	v, err := k.normalize(k.Name, value)
	var ve *ValidationError
	if k.Secret && errors.As(err, &ve) {
		// A secret is never echoed, whichever check refused it.
		masked := *ve
		masked.Value = ""
		return "", &masked
	}
	return v, err
}

// Display returns the value as it may be shown to an operator.
func (k ConfigKey) Display(value string) string {
	if k.Secret && value != "" {
		return "********"
	}
	if k.display != nil {
		return k.display(value)
	}
	return value
}

// RedactURL shows of a secret URL (a Slack webhook, say) only its scheme and
// host: never its user info, path or query, whatever the scheme's case.
func RedactURL(v string) string {
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil || u.Host == "" {
		return "********"
	}
	return u.Scheme + "://" + u.Hostname() + portOf(u) + "/********"
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return ":" + p
	}
	return ""
}

// urlPattern finds URLs in text, in any case, with or without user info.
var urlPattern = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s"'<>]+`)

// RedactURLs replaces every URL in text (an error that quotes one, in
// whatever form the HTTP client wrote it) with RedactURL's form.
func RedactURLs(text string) string {
	return urlPattern.ReplaceAllStringFunc(text, RedactURL)
}

// redactURL shows a URL with its password hidden; a value that does not
// parse is not shown at all, for its password may be what broke it.
func redactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		return "********"
	}
	if u.User == nil {
		return v
	}
	return u.Redacted()
}

func (k ConfigKey) invalid(value, reason, hint string) error {
	if k.Secret {
		value = ""
	}
	return &ValidationError{Key: k.Name, Value: value, Reason: reason, Hint: hint}
}

func quote(s string) string { return strconv.Quote(s) }

func invalid(key, value, reason, hint string) error {
	return &ValidationError{Key: key, Value: value, Reason: reason, Hint: hint}
}

func normalizeEnv(key, v string) (string, error) {
	switch Env(v) {
	case EnvNone, EnvDev, EnvStaging, EnvProd:
		return v, nil
	}
	return "", invalid(key, v, "is not an environment", "one of none, dev, staging, prod")
}

var repoPattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$`)

func normalizeRepo(key, v string) (string, error) {
	if !repoPattern.MatchString(v) || strings.HasSuffix(v, "/.") || strings.HasSuffix(v, "/..") {
		return "", invalid(key, v, "is not a repository", "owner/name, e.g. ferry-cd/ferry")
	}
	return v, nil
}

func normalizeHTTPURL(key, v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", invalid(key, v, "is not an http(s) URL", "e.g. https://host.example:8080/path")
	}
	return v, nil
}

// normalizeProxy is normalizeHTTPURL for a value that may hold a password:
// a refused value is shown with its password hidden, or not at all.
func normalizeProxy(key, v string) (string, error) {
	n, err := normalizeHTTPURL(key, v)
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.Value = redactURL(v)
		ve.Hint = "e.g. http://user:password@proxy.example:3128 (write a % in the password as %25)"
	}
	return n, err
}

func normalizeSecret(key, v string) (string, error) {
	if strings.ContainsAny(v, " \t\r\n") {
		return "", invalid(key, "", "must not contain white space", "paste the value without spaces or line breaks")
	}
	return v, nil
}

func normalizeDuration(key, v string) (string, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return "", invalid(key, v, "is not a duration", "e.g. 90m, 1h30m, 45s")
	}
	if d <= 0 {
		return "", invalid(key, v, "must be greater than zero", "e.g. 90m")
	}
	return v, nil
}

func normalizeTimezone(key, v string) (string, error) {
	if _, err := time.LoadLocation(v); err != nil {
		return "", invalid(key, v, "is not a time zone", "an IANA name, e.g. Asia/Tokyo or UTC")
	}
	return v, nil
}

// splitLines splits a multi-line value and drops blank lines.
func splitLines(v string) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		line = strings.TrimSpace(line)
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// ParseReleaseTime parses release-time lines into schedules.
func ParseReleaseTime(lines []string) ([]cron.Schedule, error) {
	scheds := make([]cron.Schedule, 0, len(lines))
	for _, line := range lines {
		if strings.HasPrefix(line, "@") || strings.Contains(line, "TZ=") {
			return nil, invalid(ConfigReleaseTime, line, "is not a plain cron line", "five fields, e.g. \"* 9-16 * * 1-5\" for weekdays 09:00-16:59; set release-timezone for the zone")
		}
		s, err := cronParser.Parse(line)
		if err != nil {
			return nil, invalid(ConfigReleaseTime, line, "is not a cron line: "+err.Error(), "five fields, e.g. \"* 9-16 * * 1-5\" for weekdays 09:00-16:59")
		}
		scheds = append(scheds, s)
	}
	return scheds, nil
}

func normalizeReleaseTime(_, v string) (string, error) {
	lines := splitLines(v)
	if _, err := ParseReleaseTime(lines); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// Config is the typed view of every config/ key, defaults applied.
type Config struct {
	Env        Env
	GitHubRepo string
	// GitHubAPIURL never comes from etcd: it is the server's own
	// (bootstrap github-api-url, see Storage.UseLocal), so that whoever
	// writes etcd cannot have the token sent to their host.
	GitHubAPIURL        string
	GitHubToken         string
	CheckUpdateInterval time.Duration
	WorkerTimeout       time.Duration
	DeadServerGrace     time.Duration
	WorkerRetryBudget   time.Duration
	ReleaseTime         []string
	ReleaseSchedules    []cron.Schedule
	ReleaseTimezone     *time.Location
	Proxy               string
	NotifyURL           string
	StatusURL           string
	WebhookSecret       string
	// ReleaseMaxAge is 0 when unset.
	ReleaseMaxAge time.Duration
}

// ParseConfig builds a Config from raw config/ values (key name to value).
// Missing keys take their default. A stored value that does not validate is
// an error naming the key, so that a daemon never acts on a value that
// `ferry config set` would have refused.
func ParseConfig(values map[string]string) (*Config, error) {
	get := func(k ConfigKey) (string, error) {
		raw, ok := values[k.Name]
		if !ok || raw == "" {
			return k.Default, nil
		}
		v, err := k.Normalize(raw)
		if err != nil {
			return "", fmt.Errorf("stored %w; fix it with `ferry config set %s VALUE`", err, k.Name)
		}
		return v, nil
	}
	raw := make(map[string]string, len(configKeys))
	for _, k := range configKeys {
		v, err := get(k)
		if err != nil {
			return nil, err
		}
		raw[k.Name] = v
	}

	c := &Config{
		Env:           Env(raw[ConfigEnv]),
		GitHubRepo:    raw[ConfigGitHubRepo],
		GitHubAPIURL:  DefaultGitHubAPIURL,
		GitHubToken:   raw[ConfigGitHubToken],
		ReleaseTime:   splitLines(raw[ConfigReleaseTime]),
		Proxy:         raw[ConfigProxy],
		NotifyURL:     raw[ConfigNotifyURL],
		StatusURL:     raw[ConfigStatusURL],
		WebhookSecret: raw[ConfigWebhookSecret],
	}
	// The values were normalized above, so these parses cannot fail.
	c.CheckUpdateInterval, _ = time.ParseDuration(raw[ConfigCheckUpdateInterval])
	c.WorkerTimeout, _ = time.ParseDuration(raw[ConfigWorkerTimeout])
	c.DeadServerGrace, _ = time.ParseDuration(raw[ConfigDeadServerGrace])
	c.WorkerRetryBudget, _ = time.ParseDuration(raw[ConfigWorkerRetryBudget])
	c.ReleaseSchedules, _ = ParseReleaseTime(c.ReleaseTime)
	c.ReleaseTimezone, _ = time.LoadLocation(raw[ConfigReleaseTimezone])
	if raw[ConfigReleaseMaxAge] != "" {
		c.ReleaseMaxAge, _ = time.ParseDuration(raw[ConfigReleaseMaxAge])
	}
	return c, nil
}

// InReleaseWindow reports whether t falls in a minute matched by release-time.
// With no release-time every minute is in the window.
func (c *Config) InReleaseWindow(t time.Time) bool {
	if len(c.ReleaseSchedules) == 0 {
		return true
	}
	minute := t.In(c.ReleaseTimezone).Truncate(time.Minute)
	for _, s := range c.ReleaseSchedules {
		if s.Next(minute.Add(-time.Second)).Equal(minute) {
			return true
		}
	}
	return false
}

// NextReleaseWindow returns the start of the next minute after t that
// release-time matches, or t itself when t is already in a window.
func (c *Config) NextReleaseWindow(t time.Time) time.Time {
	if c.InReleaseWindow(t) {
		return t
	}
	var next time.Time
	for _, s := range c.ReleaseSchedules {
		n := s.Next(t.In(c.ReleaseTimezone))
		if next.IsZero() || n.Before(next) {
			next = n
		}
	}
	return next
}
