package ci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/trust"
)

// Nightly is one run of the nightly job in a git working copy.
type Nightly struct {
	Dir           string
	Remote        string
	MainBranch    string
	ReleaseBranch string
	Date          time.Time
	// ArtifactsFile is the artifact set, relative to Dir.
	ArtifactsFile string
	// BuildCommand builds DIST/ferry_VERSION_amd64.deb; it gets VERSION
	// and DIST in its environment.
	BuildCommand []string
	// DctestCommand gates the release; it gets FERRY_DCTEST_TO_DEB,
	// FERRY_DCTEST_TO_VERSION and, when a release exists,
	// FERRY_DCTEST_FROM_DEB and FERRY_DCTEST_FROM_VERSION.
	DctestCommand []string
	Key           minisign.PrivateKey
	// Trusted verifies the starting release that dctest upgrades from;
	// empty: the signing key alone, which is enough when the nightly signs
	// with the release key. With a CI key of its own, give the release
	// key here (--trusted-keys).
	Trusted  trust.KeyRing
	GitHub   *release.Source
	Generate artifacts.Sources
	DryRun   bool
	Out      io.Writer

	// afterPush, in tests, runs between pushing the tag and creating the
	// GitHub release, to interrupt a run there.
	afterPush func() error
}

func (n *Nightly) say(format string, args ...any) {
	prefix := "nightly: "
	if n.DryRun {
		prefix = "nightly (dry run): "
	}
	fmt.Fprintf(n.Out, prefix+format+"\n", args...)
}

func (n *Nightly) git(ctx context.Context, args ...string) (string, error) {
	all := append([]string{"-c", "user.name=ferry-ci", "-c", "user.email=ferry-ci@ferry-cd.invalid", "-C", n.Dir}, args...)
	cmd := exec.CommandContext(ctx, "git", all...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Run carries out the job and returns the version it released.
func (n *Nightly) Run(ctx context.Context) (string, error) {
	date := n.Date.UTC().Format("2006.01.02")
	n.say("fetching %s", n.Remote)
	if _, err := n.git(ctx, "fetch", "--tags", "--prune", "--force", n.Remote); err != nil {
		return "", err
	}

	// A run interrupted after pushing its tag is finished, not repeated.
	if v, err := n.unfinished(ctx, date); err != nil {
		return "", err
	} else if v != "" {
		return v, n.finish(ctx, v)
	}

	remoteRelease := n.Remote + "/" + n.ReleaseBranch
	base := remoteRelease
	if _, err := n.git(ctx, "rev-parse", "--verify", "--quiet", remoteRelease); err != nil {
		base = n.Remote + "/" + n.MainBranch
		n.say("%s does not exist yet: it starts from %s", remoteRelease, base)
	}
	version, err := n.nextVersion(ctx, date)
	if err != nil {
		return "", err
	}
	if n.DryRun {
		n.say("would check out %s from %s and merge %s/%s into it", n.ReleaseBranch, base, n.Remote, n.MainBranch)
		n.say("would run generate-artifacts --release on %s and commit it if it changed", n.ArtifactsFile)
		n.say("would build %s with %q, write SHA256SUMS and sign it", release.DebAsset(version), strings.Join(n.BuildCommand, " "))
		n.say("would run dctest with %q", strings.Join(n.DctestCommand, " "))
		n.say("would push %s and the tag %s%s to %s", n.ReleaseBranch, release.PrefixTest, version, n.Remote)
		n.say("would create the pre-release %s%s with %s", release.PrefixTest, version, strings.Join(release.Assets(version), ", "))
		return version, nil
	}

	if _, err := n.git(ctx, "checkout", "-B", n.ReleaseBranch, base); err != nil {
		return "", err
	}
	n.say("merging %s/%s into %s", n.Remote, n.MainBranch, n.ReleaseBranch)
	if _, err := n.git(ctx, "merge", "--no-edit", n.Remote+"/"+n.MainBranch); err != nil {
		where := n.conflicts(ctx)
		n.git(ctx, "merge", "--abort")
		return "", fmt.Errorf("merge conflict between %s and %s in %s; resolve it on %s by hand, nothing was pushed: %w", n.MainBranch, n.ReleaseBranch, where, n.ReleaseBranch, err)
	}
	if err := n.generate(ctx); err != nil {
		return "", err
	}

	dist, err := os.MkdirTemp("", "ferry-nightly-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dist)
	if err := n.buildAndSign(ctx, version, dist); err != nil {
		return "", err
	}
	if err := n.dctest(ctx, version, dist); err != nil {
		return "", fmt.Errorf("dctest failed, so %s is not released (no tag, no release): %w", version, err)
	}

	tag := release.PrefixTest + version
	n.say("dctest passed; pushing %s and %s", n.ReleaseBranch, tag)
	if _, err := n.git(ctx, "tag", tag); err != nil {
		return "", err
	}
	if _, err := n.git(ctx, "push", n.Remote, n.ReleaseBranch); err != nil {
		n.git(ctx, "tag", "-d", tag)
		return "", err
	}
	if _, err := n.git(ctx, "push", n.Remote, "refs/tags/"+tag); err != nil {
		n.git(ctx, "tag", "-d", tag)
		return "", err
	}
	if n.afterPush != nil {
		if err := n.afterPush(); err != nil {
			return "", err
		}
	}
	if err := n.publish(ctx, version, dist); err != nil {
		return "", fmt.Errorf("%s is pushed but its release is not complete; run the job again to finish it: %w", tag, err)
	}
	n.say("released %s: a pre-release with %s", tag, strings.Join(nightlyAssets(version), ", "))
	return version, nil
}

// nextVersion is DATE-N with N one more than any test- or release- tag of
// that date.
func (n *Nightly) nextVersion(ctx context.Context, date string) (string, error) {
	return date + "-" + strconv.Itoa(n.highest(ctx, date)+1), nil
}

func (n *Nightly) highest(ctx context.Context, date string) int {
	high := 0
	for _, prefix := range []string{release.PrefixTest, release.PrefixRelease} {
		out, err := n.git(ctx, "tag", "--list", prefix+date+"-*")
		if err != nil {
			continue
		}
		for _, t := range strings.Fields(out) {
			if v, err := strconv.Atoi(strings.TrimPrefix(t, prefix+date+"-")); err == nil && v > high {
				high = v
			}
		}
	}
	return high
}

// unfinished finds the newest test- tag of the date whose GitHub release is
// missing or lacks assets.
func (n *Nightly) unfinished(ctx context.Context, date string) (string, error) {
	high := n.highest(ctx, date)
	if high == 0 {
		return "", nil
	}
	version := date + "-" + strconv.Itoa(high)
	tag := release.PrefixTest + version
	if _, err := n.git(ctx, "rev-parse", "--verify", "--quiet", "refs/tags/"+tag); err != nil {
		return "", nil
	}
	rel, err := n.GitHub.ByTag(ctx, tag)
	if errors.Is(err, release.ErrNotFound) {
		return version, nil
	}
	if err != nil {
		return "", err
	}
	for _, a := range release.Assets(version) {
		if _, ok := rel.Asset(a); !ok {
			return version, nil
		}
	}
	return "", nil
}

// finish completes the release of a pushed tag: it builds the package at
// the tagged commit and creates or completes the GitHub release.
func (n *Nightly) finish(ctx context.Context, version string) error {
	tag := release.PrefixTest + version
	if n.DryRun {
		n.say("would finish %s: its tag is pushed but its release is not complete", tag)
		return nil
	}
	n.say("finishing %s: its tag is pushed but its release is not complete", tag)
	if _, err := n.git(ctx, "checkout", "--detach", "refs/tags/"+tag); err != nil {
		return err
	}
	dist, err := os.MkdirTemp("", "ferry-nightly-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dist)
	if err := n.buildAndSign(ctx, version, dist); err != nil {
		return err
	}
	if err := n.publish(ctx, version, dist); err != nil {
		return err
	}
	n.say("released %s: a pre-release with %s", tag, strings.Join(nightlyAssets(version), ", "))
	return nil
}

func (n *Nightly) generate(ctx context.Context) error {
	src := n.Generate
	src.Release = true
	changes, err := regenerate(ctx, filepath.Join(n.Dir, n.ArtifactsFile), "", src)
	if err != nil {
		return fmt.Errorf("generate-artifacts: %w", err)
	}
	if changes == nil {
		n.say("the artifact set is up to date")
		return nil
	}
	for _, line := range changes {
		n.say("  %s", line)
	}
	if _, err := n.git(ctx, "add", n.ArtifactsFile); err != nil {
		return err
	}
	_, err = n.git(ctx, "commit", "-m", "Update the artifact set\n\nWritten by ferry-ci generate-artifacts --release.")
	if err == nil {
		n.say("committed the new artifact set")
	}
	return err
}

func (n *Nightly) run(ctx context.Context, argv []string, env ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = n.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = n.Out, n.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return nil
}

func (n *Nightly) buildAndSign(ctx context.Context, version, dist string) error {
	n.say("building %s", release.DebAsset(version))
	if err := n.run(ctx, n.BuildCommand, "VERSION="+version, "DIST="+dist); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	debPath := filepath.Join(dist, release.DebAsset(version))
	f, err := os.Open(debPath)
	if err != nil {
		return fmt.Errorf("the build made no %s: %w", release.DebAsset(version), err)
	}
	sums, err := release.MakeSums(map[string]io.Reader{release.DebAsset(version): f})
	f.Close()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dist, release.SumsAsset), sums, 0o644); err != nil {
		return err
	}
	n.say("signing %s and the test channel's manifest with key %X", release.SumsAsset, n.Key.ID())
	if err := os.WriteFile(filepath.Join(dist, release.SigAsset), release.SignSums(n.Key, sums), 0o644); err != nil {
		return err
	}
	m, err := release.NewManifest(version, trust.ChannelTest, debPath, time.Now(), 0)
	if err != nil {
		return err
	}
	files, err := release.ManifestFiles(m, n.Key)
	if err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dist, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// nightlyAssets are the files a test- release carries.
func nightlyAssets(version string) []string {
	m := trust.ManifestAsset(trust.ChannelTest)
	return append(release.Assets(version), m, m+".minisig")
}

// dctest runs the gate: upgrade from the newest existing release (when
// there is one) to the new package.
func (n *Nightly) dctest(ctx context.Context, version, dist string) error {
	env := []string{"FERRY_DCTEST_TO_DEB=" + filepath.Join(dist, release.DebAsset(version)), "FERRY_DCTEST_TO_VERSION=" + version}
	from, err := n.latestRelease(ctx)
	if err != nil {
		return err
	}
	if from != nil {
		keys := n.Trusted
		if keys.Len() == 0 {
			keys = trust.Keys(n.Key.Public().(minisign.PublicKey))
		}
		path, _, err := n.GitHub.FetchPackage(ctx, from, from.Version.String(), release.Trust{Keys: keys, Channels: release.Channels(fleet.EnvDev)}, filepath.Join(dist, "from"), release.DownloadOptions{})
		if err != nil {
			return fmt.Errorf("the starting release %s: %w", from.Tag, err)
		}
		env = append(env, "FERRY_DCTEST_FROM_DEB="+path, "FERRY_DCTEST_FROM_VERSION="+from.Version.String())
		n.say("running dctest: %s -> %s", from.Version, version)
	} else {
		n.say("running dctest: no %s release exists yet (a nightly's %s build is never the starting point), dctest picks its own starting version", release.PrefixRelease, release.PrefixTest)
	}
	return n.run(ctx, n.DctestCommand, env...)
}

// latestRelease is the newest release- release, or nil.
func (n *Nightly) latestRelease(ctx context.Context) (*release.Release, error) {
	rels, err := n.GitHub.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []*release.Release
	for _, r := range rels {
		if r.Prefix == release.PrefixRelease && !r.Draft {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version.Newer(out[j].Version) })
	return out[0], nil
}

// publish creates (or completes) the pre-release of the tag with the three
// assets. Assets of an earlier, interrupted attempt are replaced, so the
// three always belong together.
func (n *Nightly) publish(ctx context.Context, version, dist string) error {
	tag := release.PrefixTest + version
	commit, err := n.git(ctx, "rev-parse", "refs/tags/"+tag+"^{commit}")
	if err != nil {
		return err
	}
	rel, err := n.GitHub.ByTag(ctx, tag)
	if errors.Is(err, release.ErrNotFound) {
		rel, err = n.GitHub.CreateRelease(ctx, tag, commit, true, "Built and gated on dctest by the ferry nightly job.")
	}
	if err != nil {
		return err
	}
	for _, a := range rel.Assets {
		if err := n.GitHub.DeleteAsset(ctx, a); err != nil {
			return err
		}
	}
	for _, name := range nightlyAssets(version) {
		f, err := os.Open(filepath.Join(dist, name))
		if err != nil {
			return err
		}
		err = n.GitHub.UploadFile(ctx, rel, name, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// conflicts names the files a failed merge left in conflict, each with
// the lines of its conflict markers ("README (lines 1-5)").
func (n *Nightly) conflicts(ctx context.Context) string {
	out, err := n.git(ctx, "diff", "--name-only", "--diff-filter=U")
	if err != nil || strings.TrimSpace(out) == "" {
		return "files git did not name"
	}
	var where []string
	for _, file := range strings.Fields(out) {
		data, err := os.ReadFile(filepath.Join(n.Dir, file))
		if err != nil {
			where = append(where, file)
			continue
		}
		var spans []string
		start := 0
		for i, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.HasPrefix(line, "<<<<<<< "):
				start = i + 1
			case strings.HasPrefix(line, ">>>>>>> ") && start > 0:
				spans = append(spans, fmt.Sprintf("%d-%d", start, i+1))
				start = 0
			}
		}
		if len(spans) == 0 {
			where = append(where, file)
			continue
		}
		where = append(where, fmt.Sprintf("%s (lines %s)", file, strings.Join(spans, ", ")))
	}
	return strings.Join(where, ", ")
}
