package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/command"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
)

// maxSumsSize bounds SHA256SUMS and its signature.
const maxSumsSize = 1 << 20

// Ops is the Operator of a real boot server.
type Ops struct {
	DataDir   string
	Installer *deb.Installer
	Log       *slog.Logger
	Metrics   *Metrics
	Download  release.DownloadOptions
	// NewSource builds the release source; default release.NewSource.
	NewSource func(release.Options) (*release.Source, error)
}

func (o *Ops) source(cfg *storage.Config) (*release.Source, error) {
	newSource := o.NewSource
	if newSource == nil {
		newSource = release.NewSource
	}
	return newSource(release.Options{APIURL: cfg.GitHubAPIURL, Repo: cfg.GitHubRepo, Token: cfg.GitHubToken, Proxy: cfg.Proxy})
}

// findRelease looks the version up under the tag its env uses first.
func findRelease(ctx context.Context, src *release.Source, env storage.Env, v string) (*release.Release, error) {
	prefixes := []string{release.PrefixRelease, release.PrefixTest}
	if env == storage.EnvDev {
		prefixes = []string{release.PrefixTest, release.PrefixRelease}
	}
	var err error
	for _, p := range prefixes {
		var r *release.Release
		r, err = src.ByTag(ctx, p+v)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, release.ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no release tagged %s%s or %s%s: %w", prefixes[0], v, prefixes[1], v, err)
}

// SelfUpgrade downloads the ferry package of version with SHA256SUMS and its
// signature, checks the signature against signing-keys and the package
// against SHA256SUMS, and installs it. A file that fails a check is never
// installed, and no downloaded file is left behind.
func (o *Ops) SelfUpgrade(ctx context.Context, cfg *storage.Config, version string) error {
	began := time.Now()
	src, err := o.source(cfg)
	if err != nil {
		return err
	}
	rel, err := findRelease(ctx, src, cfg.Env, version)
	if err != nil {
		return err
	}
	name := release.DebAsset(version)
	debAsset, ok := rel.Asset(name)
	if !ok {
		return fmt.Errorf("release %s has no asset %s", rel.Tag, name)
	}
	sumsAsset, ok := rel.Asset(release.SumsAsset)
	if !ok {
		return fmt.Errorf("release %s has no %s: refusing to install an unverifiable package", rel.Tag, release.SumsAsset)
	}
	sums, err := src.Fetch(ctx, sumsAsset, maxSumsSize)
	if err != nil {
		return err
	}
	var sig []byte
	if sigAsset, ok := rel.Asset(release.SigAsset); ok {
		if sig, err = src.Fetch(ctx, sigAsset, maxSumsSize); err != nil {
			return err
		}
	}
	if err := release.VerifySums(sums, sig, cfg.SigningKeys, cfg.AllowUnsigned); err != nil {
		return fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	table, err := release.ParseSums(sums)
	if err != nil {
		return fmt.Errorf("release %s: %w", rel.Tag, err)
	}
	want, ok := table[name]
	if !ok {
		return fmt.Errorf("release %s: %s has no line for %s", rel.Tag, release.SumsAsset, name)
	}

	dl := o.Download
	dl.Progress = func(n int64) { o.Metrics.downloadBytes.Add(float64(n)) }
	path, err := src.DownloadFile(ctx, debAsset, filepath.Join(o.DataDir, "downloads"), want, dl)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	o.Metrics.downloadSeconds.Observe(time.Since(began).Seconds())

	if got, err := deb.Field(ctx, path, "Version"); err != nil {
		return err
	} else if got != version {
		return fmt.Errorf("%s holds version %s, not %s", name, got, version)
	}
	o.Log.Info("installing", "file", name, "version", version)
	return o.Installer.Install(ctx, path)
}

// RunAction runs an action.
func (o *Ops) RunAction(ctx context.Context, rc RunContext, a *artifacts.Action) error {
	var err error
	switch {
	case a.Run != nil:
		err = o.run(ctx, rc, a.Run)
	default:
		err = fmt.Errorf("unknown action %q", a.Type())
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	o.Metrics.actions.WithLabelValues(a.Type(), result).Inc()
	return err
}

func (o *Ops) run(ctx context.Context, rc RunContext, r *artifacts.RunAction) error {
	if d := r.TimeoutDuration(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	env := map[string]string{
		"FERRY_SERVER":    rc.Server,
		"FERRY_VERSION":   rc.Version,
		"FERRY_STEP":      strconv.Itoa(rc.Step),
		"FERRY_STEP_NAME": rc.StepName,
	}
	for k, v := range r.Env {
		env[k] = v
	}
	return command.Run(ctx, command.Spec{Argv: append([]string{r.Command}, r.Args...), Env: env}, rc.Log)
}
