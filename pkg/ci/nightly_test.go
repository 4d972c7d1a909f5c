package ci

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/stretchr/testify/require"
)

const today = "2026.11.23"

// gitEnv is a bare repository as origin, a working copy with main and
// release, and the GitHub fake.
type gitEnv struct {
	t      *testing.T
	origin string
	work   string
	gh     *githubfake.Server
	key    minisign.PrivateKey
	pub    minisign.PublicKey
	out    bytes.Buffer
}

func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %v: %s", args, out)
	return strings.TrimSpace(string(out))
}

func newGitEnv(t *testing.T) *gitEnv {
	dir := t.TempDir()
	e := &gitEnv{t: t, origin: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work"), gh: githubfake.New()}
	t.Cleanup(e.gh.Close)
	gitIn(t, dir, "init", "-q", "--bare", "-b", "main", e.origin)
	gitIn(t, dir, "clone", "-q", e.origin, e.work)
	set := &artifacts.Set{Plan: artifacts.Plan{Steps: []artifacts.Step{{Name: "s", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "true"}}}}}}}
	data, err := set.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(e.work, "pkg/artifacts"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.work, DefaultArtifactsFile), data, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.work, "README"), []byte("ferry\n"), 0o644))
	gitIn(t, e.work, "checkout", "-q", "-b", "main")
	gitIn(t, e.work, "add", ".")
	gitIn(t, e.work, "commit", "-q", "-m", "start")
	gitIn(t, e.work, "push", "-q", "origin", "main", "main:release")
	e.pub, e.key, err = minisign.GenerateKey(nil)
	require.NoError(t, err)
	return e
}

func (e *gitEnv) nightly() *Nightly {
	src, err := release.NewSource(release.Options{APIURL: e.gh.APIURL(), Repo: "ferry-cd/ferry"})
	require.NoError(e.t, err)
	return &Nightly{
		Dir: e.work, Remote: "origin", MainBranch: "main", ReleaseBranch: "release",
		Date: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC), ArtifactsFile: DefaultArtifactsFile,
		BuildCommand:  []string{"sh", "-c", `printf 'package %s' "$VERSION" > "$DIST/ferry_${VERSION}_amd64.deb"`},
		DctestCommand: []string{"sh", "-c", `test -f "$FERRY_DCTEST_TO_DEB"`},
		Key:           e.key, GitHub: src, Out: &e.out,
		Generate: artifacts.Sources{GitHubAPIURL: e.gh.APIURL(), WorkDir: e.t.TempDir()},
	}
}

func (e *gitEnv) remoteTags() []string {
	out := gitIn(e.t, e.work, "ls-remote", "--tags", "origin")
	var tags []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			tags = append(tags, strings.TrimPrefix(f[1], "refs/tags/"))
		}
	}
	return tags
}

func (e *gitEnv) remoteHead(branch string) string {
	return strings.Fields(gitIn(e.t, e.work, "ls-remote", "origin", "refs/heads/"+branch))[0]
}

func (e *gitEnv) pushToMain(file, content string) {
	other := filepath.Join(e.t.TempDir(), "other")
	gitIn(e.t, filepath.Dir(other), "clone", "-q", "-b", "main", e.origin, other)
	require.NoError(e.t, os.WriteFile(filepath.Join(other, file), []byte(content), 0o644))
	gitIn(e.t, other, "add", ".")
	gitIn(e.t, other, "commit", "-q", "-m", "change "+file)
	gitIn(e.t, other, "push", "-q", "origin", "main")
}

func (e *gitEnv) requireRelease(version string) {
	e.t.Helper()
	src, err := release.NewSource(release.Options{APIURL: e.gh.APIURL(), Repo: "ferry-cd/ferry"})
	require.NoError(e.t, err)
	rel, err := src.ByTag(context.Background(), release.PrefixTest+version)
	require.NoError(e.t, err)
	require.True(e.t, rel.Prerelease)
	require.NoError(e.t, src.VerifyRelease(context.Background(), rel, version, release.Trust{Keys: trust.Keys(e.pub)}))
	tagCommit := gitIn(e.t, e.work, "rev-parse", "refs/tags/test-"+version+"^{commit}")
	require.Equal(e.t, tagCommit, rel.Commitish)
	var names []string
	for _, r := range e.gh.Releases("ferry-cd/ferry") {
		if r.Tag == "test-"+version {
			names = r.Assets
		}
	}
	require.ElementsMatch(e.t, nightlyAssets(version), names)
}

func TestNightlyReleasesOncePerRunAndCountsUp(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	v, err := e.nightly().Run(context.Background())
	require.NoError(t, err, e.out.String())
	require.Equal(t, today+"-1", v)
	require.Equal(t, []string{"test-" + today + "-1"}, e.remoteTags())
	e.requireRelease(v)

	// A second run the same day: N=2. It merges what main got meanwhile,
	// and upgrades from the newest release in its dctest.
	e.pushToMain("NEWS", "news\n")
	const from = "2026.11.20-1"
	deb := debtest.Build(t, t.TempDir(), debtest.Package{Name: "ferry", Version: from})
	assets, err := release.SignedAssets(from, trust.ChannelProduction, deb, e.key, time.Now(), 0)
	require.NoError(t, err)
	e.gh.AddRelease("ferry-cd/ferry", githubfake.ReleaseSpec{Tag: "release-" + from, Assets: assets})
	n := e.nightly()
	n.DctestCommand = []string{"sh", "-c", `test "$FERRY_DCTEST_FROM_VERSION" = ` + from + ` && test -f "$FERRY_DCTEST_FROM_DEB" && test "$FERRY_DCTEST_TO_VERSION" = ` + today + `-2`}
	v, err = n.Run(context.Background())
	require.NoError(t, err, e.out.String())
	require.Equal(t, today+"-2", v)
	require.ElementsMatch(t, []string{"test-" + today + "-1", "test-" + today + "-2"}, e.remoteTags())
	e.requireRelease(v)
	require.Contains(t, gitIn(t, e.work, "show", "origin/release:NEWS"), "news", "main was merged into release")
}

func TestNightlyFailingDctestReleasesNothing(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	before := e.remoteHead("release")
	n := e.nightly()
	n.DctestCommand = []string{"false"}
	_, err := n.Run(context.Background())
	require.ErrorContains(t, err, "dctest failed")
	require.ErrorContains(t, err, "no tag, no release")
	require.Empty(t, e.remoteTags())
	require.Empty(t, e.gh.Releases("ferry-cd/ferry"))
	require.Equal(t, before, e.remoteHead("release"), "nothing was pushed")
}

func TestNightlyMergeConflictStops(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	e.pushToMain("README", "main's readme\n")
	gitIn(t, e.work, "fetch", "-q", "origin")
	gitIn(t, e.work, "checkout", "-q", "-B", "release", "origin/release")
	require.NoError(t, os.WriteFile(filepath.Join(e.work, "README"), []byte("release's readme\n"), 0o644))
	gitIn(t, e.work, "commit", "-q", "-am", "hotfix on release")
	gitIn(t, e.work, "push", "-q", "origin", "release")
	before := e.remoteHead("release")

	_, err := e.nightly().Run(context.Background())
	require.ErrorContains(t, err, "merge conflict")
	require.ErrorContains(t, err, "in README (lines 1-5)")
	require.ErrorContains(t, err, "nothing was pushed")
	require.Empty(t, e.remoteTags())
	require.Equal(t, before, e.remoteHead("release"))
	require.Empty(t, e.gh.Releases("ferry-cd/ferry"))
}

func TestNightlyInterruptedRunIsFinishedByTheNext(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	n := e.nightly()
	n.afterPush = func() error { return errors.New("the machine went down") }
	_, err := n.Run(context.Background())
	require.ErrorContains(t, err, "went down")
	require.Equal(t, []string{"test-" + today + "-1"}, e.remoteTags(), "the tag was pushed")
	require.Empty(t, e.gh.Releases("ferry-cd/ferry"), "but no release was made")

	v, err := e.nightly().Run(context.Background())
	require.NoError(t, err, e.out.String())
	require.Equal(t, today+"-1", v, "the next run finishes the same version")
	require.Equal(t, []string{"test-" + today + "-1"}, e.remoteTags(), "no second tag")
	e.requireRelease(v)
	require.Contains(t, e.out.String(), "finishing test-"+today+"-1")
}

func TestNightlyDryRun(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	before := e.remoteHead("release")
	code, out, errOut := runCI(nil, "nightly", "--dry-run", "--repo-dir", e.work, "--date", "2026-11-23", "--github-api-url", e.gh.APIURL())
	require.Equal(t, ExitOK, code, errOut)
	for _, step := range []string{"would check out release", "generate-artifacts", "would build ferry_" + today + "-1_amd64.deb", "would run dctest", "would push release and the tag test-" + today + "-1", "would create the pre-release"} {
		require.Contains(t, out, step)
	}
	require.Empty(t, e.remoteTags())
	require.Empty(t, e.gh.Releases("ferry-cd/ferry"))
	require.Equal(t, before, e.remoteHead("release"))

	code, _, errOut = runCI(nil, "nightly", "--repo-dir", e.work, "--github-api-url", e.gh.APIURL())
	require.Equal(t, ExitUsage, code)
	require.Contains(t, errOut, "signing key")
}

// TestNightlyKeepsHandEdits: the nightly edits only the versions and
// digests of the artifact set, where they stand; a person's edit of the
// plan on main between two nightlies merges, and both nightlies succeed.
func TestNightlyKeepsHandEdits(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	dir := t.TempDir()
	publish := func(ver string, day int) {
		deb := debtest.Build(t, dir, debtest.Package{Name: "acme-tools", Version: ver})
		data, err := os.ReadFile(deb)
		require.NoError(t, err)
		e.gh.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v" + ver, CreatedAt: time.Date(2026, 11, day, 0, 0, 0, 0, time.UTC),
			Assets: map[string][]byte{"acme-tools_" + ver + "_amd64.deb": data}})
	}
	publish("1.2.0", 1)
	publish("1.3.0", 2)
	const set = `# Our stack; see docs/artifacts.md.
debs:
  - name: acme-tools # our fork
    repository: acme/tools
    release: v1.2.0
    asset: acme-tools_1.2.0_amd64.deb
    assetGlob: acme-tools_*_amd64.deb
    version: 1.2.0
    size: 1
    sha256: 0000000000000000000000000000000000000000000000000000000000000000
plan:
  steps:
    - {name: debs, strategy: rolling, canary: 1, actions: [{debs: {}}]}
`
	e.pushToMain(DefaultArtifactsFile, set)

	v, err := e.nightly().Run(context.Background())
	require.NoError(t, err, e.out.String())
	require.Equal(t, today+"-1", v)
	first := gitIn(t, e.work, "show", "origin/release:"+DefaultArtifactsFile)
	require.Contains(t, first, "release: v1.3.0")
	require.Contains(t, first, "# our fork", "comments stay")
	require.Contains(t, first, "- {name: debs, strategy: rolling, canary: 1, actions: [{debs: {}}]}", "so does the plan as written")

	// A person edits the plan on main; upstream moves on.
	e.pushToMain(DefaultArtifactsFile, strings.Replace(set, "    - {name: debs,", "    # Two at a time since the rack move.\n    - {name: debs, parallel: 2,", 1))
	publish("1.4.0", 3)
	e.out.Reset()
	v, err = e.nightly().Run(context.Background())
	require.NoError(t, err, e.out.String())
	require.Equal(t, today+"-2", v)
	second := gitIn(t, e.work, "show", "origin/release:"+DefaultArtifactsFile)
	require.Contains(t, second, "release: v1.4.0")
	require.Contains(t, second, "# Two at a time since the rack move.\n    - {name: debs, parallel: 2, strategy: rolling, canary: 1, actions: [{debs: {}}]}")
	require.Contains(t, second, "# our fork")
}
