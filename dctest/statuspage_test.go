package dctest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/stretchr/testify/require"
)

// browser is a headless Chromium (Debian's chromium) on one page.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// screenshotEnv names a file that receives a screenshot of the page while
// the rollout runs (`make screenshot` writes the README's with it).
const screenshotEnv = "FERRY_STATUS_SCREENSHOT"

func newBrowser(t *testing.T, parent context.Context) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	require.NoError(t, err, "the browser test needs Debian's chromium: run `make deps` as root, or apt-get install chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
		chromedp.DisableGPU,
		// The test runs as root in a container: Chromium's sandbox needs
		// user namespaces it may not have.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancelAlloc)
	t.Cleanup(cancel)
	b := &browser{t: t, ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	// On failure, the page as it was, for the person who reads the log.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := filepath.Join("..", "build")
		if err := os.MkdirAll(dir, 0o755); err == nil {
			name := filepath.Join(dir, "status-page-failure.png")
			if err := b.screenshot(name); err == nil {
				t.Logf("the page when the test failed: %s", name)
			}
		}
		for _, m := range b.messages() {
			t.Logf("browser console: %s (%s:%d)", m, m.URL, m.Line)
		}
	})
	return b
}

func (b *browser) messages() []chromedp.ConsoleMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), b.console...)
}

func (b *browser) screenshot(name string) error {
	ctx, cancel := context.WithTimeout(b.ctx, within(20*time.Second))
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return err
	}
	return os.WriteFile(name, png, 0o644)
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, within(10*time.Second))
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// text is the text of the first element sel matches, "" when none does.
func (b *browser) text(sel string) string {
	q, _ := json.Marshal(sel)
	s, err := eval[string](b, `(document.querySelector(`+string(q)+`) || {}).textContent || ""`)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

// waitText waits until the text of sel contains every want.
func (b *browser) waitText(sel string, limit time.Duration, want ...string) {
	b.t.Helper()
	waitFor(b.t, limit, fmt.Sprintf("the page's %s to show %q", sel, want), func() (bool, string) {
		got := b.text(sel)
		for _, w := range want {
			if !strings.Contains(got, w) {
				return false, fmt.Sprintf("%q", got)
			}
		}
		return true, ""
	})
}

// TestStatusPageInBrowser: a headless Chromium opens boot-0's status page
// on a live 3-server fleet and, without a reload, sees the servers; the
// whole plan of N1, its canary marked, while the rest wait behind it, and
// what lets them go on; a step advance; the rollback to N after a failed
// health gate, from N1 to N; the stop of the fleet when a worker dies; and
// "etcd unreachable" when the etcd cluster is gone.
func TestStatusPageInBrowser(t *testing.T) {
	d := start(t)
	d.bootstrap("staging", three...)
	s0, err := d.Server("boot-0")
	require.NoError(t, err)
	b := newBrowser(t, d.ctx)

	ctx, cancel := context.WithTimeout(b.ctx, within(30*time.Second))
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s0.StatusURL())))
	cancel()
	// A reload would clear this: the page must follow the fleet by itself.
	_, err = eval[chromedp.Void](b, `window.ferryTestMarker = "still the same page"`)
	require.NoError(t, err)

	// It lists the servers, alive, at N, and the completed bootstrap.
	for _, id := range three {
		b.waitText(`tr[data-server="`+id+`"]`, 30*time.Second, id, "yes", N)
	}
	b.waitText("#rollout-state", 10*time.Second, "completed")
	b.waitText("#history tbody", 10*time.Second, N, "completed", "timeline", "4 services", "1 attempt")
	b.waitText("#leader", 10*time.Second, "boot-")
	b.waitText(`#config tr[data-key="env"]`, 10*time.Second, "staging")

	// N1's plan has a canary first, and rolls back when boot-2's health
	// gate at its last step fails.
	require.NoError(t, d.EditArtifactSet(func(s *artifacts.Set) {
		s.Plan.OnFailure = artifacts.OnFailureRollback
		restart := artifacts.Step{Name: "restart", Strategy: artifacts.Rolling, Parallel: 2, Canary: "1", Pause: artifacts.ParseDuration(artifacts.PauseManual),
			Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "true"}}}}
		s.Plan.Steps = append([]artifacts.Step{restart}, s.Plan.Steps...)
		check := fmt.Sprintf(`[ "$FERRY_VERSION" != %s ] || [ "$FERRY_SERVER" != boot-2 ] || { echo "E: dns answers SERVFAIL" >&2; exit 1; }`, N1)
		last := &s.Plan.Steps[len(s.Plan.Steps)-1]
		last.Health = []artifacts.HealthCheck{{Command: &artifacts.RunAction{Command: "sh", Args: []string{"-c", check}}}}
	}))

	// N1: the page shows the rollout and every step of its plan while the
	// rest wait behind the canary of the first, the canary marked.
	require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
	b.waitText("#rollout-versions", time.Minute, N+" → "+N1)
	b.waitText("#rollout-state", time.Minute, "paused")
	b.waitText("#steps", 10*time.Second, "restart", "packages", "images", "boot", "services")
	b.waitText("#rollout-pause", 10*time.Second, "canary of step 1", "ferry rollout resume")
	b.waitText("#servers tbody", 10*time.Second, "canary")
	d.ferry("rollout", "resume")
	d.waitStep("boot-2", "services")
	b.waitText(`tr[data-server="boot-2"] td.step`, 30*time.Second, "services")
	if name := os.Getenv(screenshotEnv); name != "" {
		require.NoError(t, b.screenshot(name))
		t.Logf("screenshot of the running rollout: %s", name)
	}

	// boot-2's health gate fails: the fleet rolls back, from N1 to N.
	b.waitText("#rollout-versions", 2*time.Minute, N1+" → "+N, "rollback")

	// boot-2's worker dies in the rollback: the fleet stops, and the page
	// says why.
	d.waitStep("boot-2", "images")
	s2, err := d.Server("boot-2")
	require.NoError(t, err)
	s2.StopWorker()
	b.waitText("#rollout-state", time.Minute, "stopped")
	b.waitText("#rollout-stop", 10*time.Second, "boot-2", "ferry recover")
	b.waitText(`tr[data-server="boot-2"] td.alive`, 10*time.Second, "no")

	// The etcd cluster goes away: the page keeps the last view and says so.
	for _, m := range d.Etcd {
		m.Kill()
	}
	b.waitText("#etcd-banner", time.Minute, "etcd unreachable")
	hidden, err := eval[bool](b, `document.getElementById("etcd-banner").hidden`)
	require.NoError(t, err)
	require.False(t, hidden, "the banner is shown")
	require.Contains(t, b.text(`tr[data-server="boot-0"]`), "boot-0", "the last view stays on the page")

	marker, err := eval[string](b, `window.ferryTestMarker`)
	require.NoError(t, err, "the page was reloaded")
	require.Equal(t, "still the same page", marker)
	for _, m := range b.messages() {
		require.False(t, m.IsException(), "a script error in the page: %s (%s:%d)", m, m.URL, m.Line)
		require.NotEqual(t, "security", m.Source, "the page broke its own content security policy: %s", m)
	}
}
