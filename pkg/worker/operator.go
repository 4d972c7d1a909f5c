package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/bootcontents"
	"github.com/ferry-cd/ferry/pkg/command"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/images"
	"github.com/ferry-cd/ferry/pkg/peer"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/google/go-containerregistry/pkg/name"
)

// Ops is the Operator of a real boot server.
type Ops struct {
	DataDir   string
	Installer *deb.Installer
	Log       *slog.Logger
	Metrics   *Metrics
	Download  release.DownloadOptions

	// Set is the release's artifact set, for the debs, images and
	// boot-contents actions.
	Set *artifacts.Set
	// Storage keeps install records.
	Storage *storage.Storage
	// Images is the container runtime images go to.
	Images images.Runtime
	// Boot publishes boot contents.
	Boot *bootcontents.Publisher
	// RestartCommand restarts systemd units; the units are appended.
	RestartCommand []string
	// Package is the name of ferry's own package; default "ferry".
	Package string
	// TrustedKeys is the directory (or file) of the release public keys.
	TrustedKeys string
	// AllowUnsigned is the lab switch of the bootstrap config.
	AllowUnsigned bool
	// Channels are the release channels this server takes (bootstrap
	// channels); the fleet's env narrows them, never widens them.
	Channels []string
	// NewSource builds the release source; default release.NewSource.
	NewSource func(release.Options) (*release.Source, error)
	// Peers fetches packages and images from the other boot servers
	// before upstream, and keeps what it fetched for them; nil fetches
	// every asset upstream.
	Peers *peer.Fetcher
}

// source reads releases of repo with the fleet's GitHub settings.
func (o *Ops) source(cfg *fleet.Config, repo string) (*release.Source, error) {
	newSource := o.NewSource
	if newSource == nil {
		newSource = release.NewSource
	}
	return newSource(release.Options{APIURL: cfg.GitHubAPIURL, Repo: repo, Token: cfg.GitHubToken, Proxy: cfg.Proxy})
}

// FetchUpgrade downloads the ferry package of the request's version after
// verifying the release's signed manifest against this server's trusted
// keys (for a channel this server takes under the fleet's env, unexpired),
// and checks the package against the manifest's size and SHA-256. A file
// that fails a check is removed.
//
// The release is the one the updater resolved into the request, when it
// did: the worker then makes no GitHub API request at all.
func (o *Ops) FetchUpgrade(ctx context.Context, cfg *fleet.Config, req *fleet.UpdateRequest) (Fetched, error) {
	began := time.Now()
	version := req.Version
	if err := o.applyKeyStatement(ctx); err != nil {
		return Fetched{}, err
	}
	keys, err := trust.LoadKeys(o.TrustedKeys)
	if err != nil && !o.AllowUnsigned {
		return Fetched{}, err
	}
	if err := o.checkWithdrawn(ctx, keys, version); err != nil {
		return Fetched{}, err
	}
	channels := release.Accepted(cfg.Env, o.Channels)
	if len(channels) == 0 {
		return Fetched{}, fmt.Errorf("env %s takes none of the channels this server takes (%v, bootstrap channels): refusing %s", cfg.Env, o.Channels, version)
	}
	src, err := o.source(cfg, cfg.GitHubRepo)
	if err != nil {
		return Fetched{}, err
	}
	rel, err := o.findRelease(ctx, src, cfg, req)
	if err != nil {
		return Fetched{}, err
	}
	downloads := filepath.Join(o.DataDir, "downloads")
	if err := trust.EnsurePrivateDir(downloads); err != nil {
		return Fetched{}, err
	}
	tr := release.Trust{Keys: keys, Channels: channels, AllowUnsigned: o.AllowUnsigned}
	p, err := src.SignedPackage(ctx, rel, version, tr)
	if err != nil {
		return Fetched{}, err
	}
	download := func(ctx context.Context, dir string, progress func(int64)) (string, error) {
		dl := o.Download
		dl.Progress = func(n int64) { o.Metrics.addDownload(n); progress(n) }
		return src.DownloadPackage(ctx, p, dir, dl)
	}
	f := Fetched{SHA256: p.Want.SHA256, Version: version}
	if f.Cached = o.Peers != nil; f.Cached {
		f.Path, err = o.viaPeers(ctx, version, p.Want.Name, p.Want.SHA256, p.Want.Size, download)
	} else {
		f.Path, err = download(ctx, downloads, func(int64) {})
	}
	if err != nil {
		return Fetched{}, err
	}
	if err := p.CheckVersion(ctx, f.Path); err != nil {
		o.Discard(f)
		return Fetched{}, err
	}
	f.Took = time.Since(began)
	o.Metrics.downloadSeconds.Observe(f.Took.Seconds())
	return f, nil
}

// viaPeers fetches a file of the release being rolled out through the
// peer layer: from this server's cache, a peer, or (download) upstream.
// The file stays in the cache for the peers.
func (o *Ops) viaPeers(ctx context.Context, rel, name, sum string, size int64, download func(context.Context, string, func(int64)) (string, error)) (string, error) {
	if err := o.Peers.Begin(ctx, rel); err != nil {
		return "", err
	}
	if size <= 0 {
		size = -1
	}
	return o.Peers.File(ctx, peer.Asset{Release: rel, Name: name, Digest: peer.DigestOf(sum), Size: size}, download)
}

// InstallUpgrade hashes the fetched package once more, right before dpkg
// reads it, and installs it. The file is removed either way.
func (o *Ops) InstallUpgrade(ctx context.Context, f Fetched) error {
	defer o.Discard(f)
	// The file waited on disk since it was checked: check it again.
	if err := release.CheckFile(f.Path, f.SHA256); err != nil {
		return err
	}
	o.Log.Info("installing", "file", filepath.Base(f.Path), "version", f.Version)
	return o.Installer.Install(ctx, f.Path)
}

// Discard removes a fetched package that will not be installed.
func (o *Ops) Discard(f Fetched) {
	if f.Path != "" && !f.Cached {
		os.Remove(f.Path)
	}
}

// applyKeyStatement applies the keys statement that etcd carries, when a
// key this server trusts for every channel signed it and its serial is new
// here (see trust.ApplyKeys). One that does not verify is logged and left
// alone: a release signed only by the keys it names is then refused.
func (o *Ops) applyKeyStatement(ctx context.Context) error {
	sd, err := o.Storage.GetKeyStatement(ctx)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	applied, err := trust.ApplyKeys(o.TrustedKeys, sd, time.Now())
	switch {
	case err != nil:
		o.Log.Error("the keys statement in etcd is not applied", "error", err, "trusted_keys", o.TrustedKeys)
	case applied:
		s, _ := trust.DecodeStatement(sd.Data)
		o.Log.Warn("applied a keys statement: trusted release keys changed", "serial", s.Serial, "added", len(s.Add), "retired", strings.Join(s.Retire, ","))
	}
	return nil
}

// checkWithdrawn refuses a version that a withdrawals statement, signed by
// a key this server trusts for every channel, withdrew. The statement with
// the highest serial verified so far is kept in the data-dir, so that etcd
// losing it, or an older one replayed, withdraws nothing less.
func (o *Ops) checkWithdrawn(ctx context.Context, keys trust.KeyRing, version string) error {
	sd, err := o.Storage.GetWithdrawals(ctx)
	if errors.Is(err, storage.ErrNotFound) {
		sd, err = nil, nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return err
	}
	withdrawn, err := trust.Withdrawals{Path: filepath.Join(o.DataDir, "withdrawals.json")}.Update(sd, keys.Any)
	if errors.Is(err, trust.ErrStatement) {
		o.Log.Error("the withdrawals statement in etcd is not trusted; keeping the last one verified", "error", err)
	} else if err != nil {
		return err
	}
	if slices.Contains(withdrawn, version) {
		return fmt.Errorf("%s is withdrawn by a signed withdrawals statement (`ferry release withdraw`): %w", version, trust.ErrStatement)
	}
	return nil
}

// findRelease is the request's resolved release when it is one of this
// version in the configured repository, or else what the API says.
func (o *Ops) findRelease(ctx context.Context, src *release.Source, cfg *fleet.Config, req *fleet.UpdateRequest) (*release.Release, error) {
	if ref := req.Release; ref != nil {
		if _, v, ok := release.SplitTag(ref.Tag); ok && ref.Repo == src.Repo() && v.String() == req.Version {
			return release.FromRef(ref), nil
		}
		o.Log.Warn("the request's release does not match it; asking GitHub", "tag", ref.Tag, "repo", ref.Repo, "version", req.Version)
	}
	return src.FindVersion(ctx, cfg.Env, req.Version)
}

// Verify asks dpkg whether the ferry package is installed ok at version and
// every package that the steps' debs actions install at its version. With
// no Installer (tests of the state machine alone) there is nothing to ask.
func (o *Ops) Verify(ctx context.Context, version string, steps []artifacts.Step) error {
	if o.Installer == nil {
		return nil
	}
	want := map[string]string{o.pkg(): version}
	if o.Set != nil {
		for _, s := range steps {
			for _, a := range s.Actions {
				if a.Debs == nil {
					continue
				}
				for _, d := range o.Set.SelectDebs(a.Debs.Names) {
					want[d.Name] = d.Version
				}
			}
		}
	}
	for name, v := range want {
		st, err := o.Installer.Query(ctx, name)
		if err != nil {
			return err
		}
		if err := st.Expect(v); err != nil {
			return err
		}
	}
	return nil
}

// Repair finishes interrupted dpkg runs.
func (o *Ops) Repair(ctx context.Context) (string, error) {
	if o.Installer == nil {
		return "", nil
	}
	return o.Installer.Repair(ctx)
}

func (o *Ops) pkg() string {
	if o.Package == "" {
		return "ferry"
	}
	return o.Package
}

// actionEnv tells a command where in the rollout it runs.
func actionEnv(rc RunContext) map[string]string {
	return map[string]string{
		"FERRY_SERVER":    rc.Server,
		"FERRY_VERSION":   rc.Version,
		"FERRY_STEP":      strconv.Itoa(rc.Step),
		"FERRY_STEP_NAME": rc.StepName,
	}
}

// RunAction runs an action.
func (o *Ops) RunAction(ctx context.Context, rc RunContext, a *artifacts.Action) error {
	var err error
	switch {
	case a.Run != nil:
		err = o.run(ctx, rc, a.Run)
	case a.Debs != nil:
		err = o.debs(ctx, rc, a.Debs)
	case a.Images != nil:
		err = o.images(ctx, rc, a.Images)
	case a.RestartUnits != nil:
		err = o.restart(ctx, rc, a.RestartUnits.Units)
	case a.BootContents != nil:
		err = o.bootContents(ctx, rc, a.BootContents)
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
	env := actionEnv(rc)
	for k, v := range r.Env {
		env[k] = v
	}
	return command.Run(ctx, command.Spec{Argv: append([]string{r.Command}, r.Args...), Env: env}, rc.Log)
}

// debs installs the set's extra packages, each from its GitHub release,
// checked against the sha256 in the set. A package recorded as installed at
// that version and digest is skipped.
func (o *Ops) debs(ctx context.Context, rc RunContext, a *artifacts.DebsAction) error {
	if o.Set == nil || rc.Config == nil {
		return fmt.Errorf("debs: no artifact set or configuration")
	}
	for _, d := range o.Set.SelectDebs(a.Names) {
		log := rc.Log.With("deb", d.Name, "deb_version", d.Version)
		rec, err := o.Storage.GetInstalled(ctx, rc.Server, "debs", d.Name)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if err == nil && rec.Version == d.Version && rec.Digest == d.SHA256 {
			// The record says so; dpkg's database must agree.
			st, err := o.Installer.Query(ctx, d.Name)
			if err != nil {
				return err
			}
			if st.Expect(d.Version) == nil {
				log.Info("deb already installed")
				continue
			}
			log.Warn("recorded as installed, but dpkg disagrees; installing again", "dpkg", st.String())
		}
		if err := o.installDeb(ctx, rc, d, log); err != nil {
			return fmt.Errorf("deb %s %s: %w", d.Name, d.Version, err)
		}
		if err := o.Storage.PutInstalled(ctx, rc.Server, "debs", d.Name, &fleet.Installed{Version: d.Version, Digest: d.SHA256, InstalledAt: time.Now().UTC()}); err != nil {
			return err
		}
	}
	return nil
}

// fetchDeb downloads an extra package, checked against the set's size and
// SHA-256: through the peer layer (then it stays in the cache, and cached
// is set), or from its GitHub release into the downloads directory.
func (o *Ops) fetchDeb(ctx context.Context, rc RunContext, d *artifacts.Deb) (path string, cached bool, err error) {
	download := func(ctx context.Context, dir string, progress func(int64)) (string, error) {
		src, err := o.source(rc.Config, d.Repository)
		if err != nil {
			return "", err
		}
		asset, err := src.WebAsset(ctx, d.Release, d.Asset)
		if err != nil {
			return "", err
		}
		if asset.Size > 0 && asset.Size != d.Size {
			return "", fmt.Errorf("GitHub announces %s as %d bytes, the artifact set says %d", d.Asset, asset.Size, d.Size)
		}
		dl := o.Download
		dl.Progress = func(n int64) { o.Metrics.addDownload(n); progress(n) }
		dl.MaxSize = d.Size
		return src.DownloadFile(ctx, asset, dir, d.SHA256, dl)
	}
	began := time.Now()
	if cached = o.Peers != nil; cached {
		path, err = o.viaPeers(ctx, rc.Version, d.Asset, d.SHA256, d.Size, download)
	} else {
		path, err = download(ctx, filepath.Join(o.DataDir, "downloads"), func(int64) {})
	}
	if err == nil {
		o.Metrics.downloadSeconds.Observe(time.Since(began).Seconds())
	}
	return path, cached, err
}

// Announce tells the other servers what this one's peer cache holds, so
// that a worker that restarted serves them again at once. A failure is
// only logged: the next fetch announces again.
func (o *Ops) Announce(ctx context.Context) {
	if o.Peers == nil {
		return
	}
	if err := o.Peers.Announce(ctx); err != nil && ctx.Err() == nil {
		o.Log.Warn("cannot announce what this server holds for its peers", "error", err)
	}
}

// Prefetch fetches into the peer cache the packages and images that the
// steps' debs and images actions need, in the steps' order, while earlier
// steps run. Without the peer layer there is no cache to fill, and it
// does nothing. A failure is only logged: the action itself fetches again,
// and reports.
func (o *Ops) Prefetch(ctx context.Context, rc RunContext, steps []artifacts.Step) {
	if o.Peers == nil || o.Set == nil {
		return
	}
	proxy := ""
	if rc.Config != nil {
		proxy = rc.Config.Proxy
	}
	puller := &images.Puller{Proxy: proxy}
	for _, s := range steps {
		for _, a := range s.Actions {
			if a.Debs != nil {
				for _, d := range o.Set.SelectDebs(a.Debs.Names) {
					if rec, err := o.Storage.GetInstalled(ctx, rc.Server, "debs", d.Name); err == nil && rec.Version == d.Version && rec.Digest == d.SHA256 {
						continue
					}
					if _, _, err := o.fetchDeb(ctx, rc, d); err != nil && ctx.Err() == nil {
						rc.Log.Debug("could not fetch ahead; the step will", "deb", d.Name, "error", err)
					}
				}
			}
			if a.Images != nil {
				for _, im := range o.Set.SelectImages(a.Images.Names) {
					if present, err := o.Images.Present(ctx, im); err != nil || present {
						continue
					}
					if _, err := o.pull(ctx, rc, puller, im); err != nil && ctx.Err() == nil {
						rc.Log.Debug("could not fetch ahead; the step will", "image", im.Name, "error", err)
					}
				}
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

func (o *Ops) installDeb(ctx context.Context, rc RunContext, d *artifacts.Deb, log *slog.Logger) error {
	path, cached, err := o.fetchDeb(ctx, rc, d)
	if err != nil {
		return err
	}
	if !cached {
		defer os.Remove(path)
	}
	if v, err := deb.Field(ctx, path, "Version"); err != nil {
		return err
	} else if v != d.Version {
		return fmt.Errorf("%s holds version %s, the artifact set says %s", d.Asset, v, d.Version)
	}
	log.Info("installing deb")
	return o.Installer.Install(ctx, path)
}

// images pulls the set's images by digest into the runtime, then restarts
// the units of the images that changed.
func (o *Ops) images(ctx context.Context, rc RunContext, a *artifacts.ImagesAction) error {
	if o.Set == nil || o.Images == nil {
		return fmt.Errorf("images: no artifact set or container runtime")
	}
	proxy := ""
	if rc.Config != nil {
		proxy = rc.Config.Proxy
	}
	puller := &images.Puller{Proxy: proxy}
	var units []string
	for _, im := range o.Set.SelectImages(a.Names) {
		log := rc.Log.With("image", im.Name, "ref", im.Ref(), "digest", im.Digest)
		present, err := o.Images.Present(ctx, im)
		if err != nil {
			return fmt.Errorf("image %s: %w", im.Name, err)
		}
		if present {
			log.Info("image already present")
			continue
		}
		pulled, err := o.pull(ctx, rc, puller, im)
		if err != nil {
			return err
		}
		if err := o.Images.Import(ctx, im, pulled); err != nil {
			return fmt.Errorf("import %s: %w", im.Name, err)
		}
		log.Info("image imported")
		units = append(units, im.Units...)
	}
	if len(units) == 0 {
		return nil
	}
	return o.restart(ctx, rc, units)
}

// pull fetches an image through the peer layer (then it stays in the
// cache, for the peers), or straight from its registry.
func (o *Ops) pull(ctx context.Context, rc RunContext, puller *images.Puller, im *artifacts.Image) (images.Pulled, error) {
	if o.Peers == nil {
		return puller.Pull(ctx, im)
	}
	if err := o.Peers.Begin(ctx, rc.Version); err != nil {
		return images.Pulled{}, err
	}
	ref, err := name.NewDigest(im.DigestRef())
	if err != nil {
		return images.Pulled{}, fmt.Errorf("image %s: %w", im.Name, err)
	}
	opts, err := puller.Options()
	if err != nil {
		return images.Pulled{}, err
	}
	img, err := o.Peers.Image(ctx, peer.Asset{Release: rc.Version, Name: im.DigestRef(), Digest: im.Digest, Size: -1}, ref.Context(), opts...)
	if err != nil {
		return images.Pulled{}, fmt.Errorf("pull %s: %w", im.DigestRef(), err)
	}
	return images.Pulled{Image: img.Image, Index: img.Index}, nil
}

func (o *Ops) restart(ctx context.Context, rc RunContext, units []string) error {
	if len(o.RestartCommand) == 0 {
		return fmt.Errorf("restart-command is empty")
	}
	rc.Log.Info("restarting units", "units", units)
	argv := append(append([]string(nil), o.RestartCommand...), units...)
	return command.Run(ctx, command.Spec{Argv: argv, Env: actionEnv(rc)}, rc.Log)
}

func (o *Ops) bootContents(ctx context.Context, rc RunContext, a *artifacts.BootContentsAction) error {
	if o.Set == nil || o.Boot == nil {
		return fmt.Errorf("boot-contents: no artifact set or content directory")
	}
	p := *o.Boot
	if a.Keep > 0 {
		p.Keep = a.Keep
	}
	p.Log = rc.Log
	if p.Client == nil {
		proxy := ""
		if rc.Config != nil {
			proxy = rc.Config.Proxy
		}
		t, err := release.NewTransport(proxy)
		if err != nil {
			return err
		}
		p.Client = &http.Client{Transport: t}
	}
	_, err := p.Publish(ctx, o.Set)
	return err
}

// CheckHealth runs one check: a GET that must answer 2xx in time, or a
// command that must exit 0.
func (o *Ops) CheckHealth(ctx context.Context, rc RunContext, c *artifacts.HealthCheck) error {
	if c.Command != nil {
		return o.RunAction(ctx, rc, &artifacts.Action{Run: c.Command})
	}
	hctx, cancel := context.WithTimeout(ctx, c.HTTP.TimeoutDuration())
	defer cancel()
	r, err := http.NewRequestWithContext(hctx, http.MethodGet, c.HTTP.URL, nil)
	if err != nil {
		return err
	}
	// A health check asks this server's own services: never a proxy.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(r)
	if err != nil {
		// Not transient: a service that does not answer is what the
		// check is for.
		return errors.New(err.Error())
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}
