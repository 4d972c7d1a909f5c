// Package worker runs ferry-worker, the daemon that changes a boot server.
//
// The worker is a state machine driven by etcd. On every change it reads a
// snapshot, and a pure function, fleet.NextMove, decides from it and from
// what the worker knows of itself (its binary, its own record of the steps
// done, its version floor, dpkg's database):
//
//	no request, not a member of it,    -> idle (wait for the next request)
//	finished, or aborted or completed
//	request stopped                    -> record the stop at a safe point
//	own version differs from request   -> self-upgrade: download, verify,
//	                                      install the .deb, exit ErrUpgraded
//	                                      (systemd starts the new binary);
//	                                      or refuse it (below the floor, or
//	                                      installed twice already)
//	dpkg says an install is unfinished -> repair; reinstall ferry if that
//	                                      does not bring it back
//	otherwise                          -> run the plan's steps, resuming
//	                                      after the last step this server's
//	                                      own record (in its data-dir) says
//	                                      it finished
//
// The worker carries the move out through an Operator.
//
// Each step starts at a barrier: no server starts step k until every server
// of the request has finished step k-1. Within a step the strategy decides
// how many servers run at once: all (lockstep), at most N (rolling), or one
// for the whole fleet (leader), recorded in contents/<target> so that it is
// never run twice. Before each step, and while waiting, the worker checks
// for stop: true and stops there; a running action is never interrupted by
// a stop.
package worker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/trust"
	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ExitRestart is the exit status of a worker that installed a new version
// of itself; systemd (Restart=always) then starts the new binary.
const ExitRestart = 75

// ErrUpgraded is returned by Run after a successful self-upgrade.
var ErrUpgraded = errors.New("installed a new version of ferry; exit so that it starts")

// errStopped means the request was stopped, finished or replaced while this
// worker waited: it stops at this safe point.
var errStopped = errors.New("the rollout was stopped")

// errRetry wraps a transient error: the worker reported phase retrying and
// tries again after a backoff. It never aborts the server.
type errRetry struct{ err error }

func (e *errRetry) Error() string { return e.err.Error() }
func (e *errRetry) Unwrap() error { return e.err }

// retryLater reports that step k meets a transient error and will be tried
// again; the fleet goes on waiting, and worker-timeout still bounds it.
// Past worker-retry-budget the worker still retries, but says so loudly:
// in its status message, at error level, and in
// ferry_worker_retry_budget_exceeded.
func (w *Worker) retryLater(ctx context.Context, cfg *fleet.Config, req *fleet.UpdateRequest, k int, name string, cause error, log *slog.Logger) error {
	w.metrics.transientErrors.Inc()
	now := time.Now()
	if w.retryingSince.IsZero() {
		w.retryingSince = now
		w.metrics.retryingSince.Set(float64(now.Unix()))
	}
	msg := "retrying: " + cause.Error()
	if spent := now.Sub(w.retryingSince); cfg.WorkerRetryBudget > 0 && spent > cfg.WorkerRetryBudget {
		w.metrics.overBudget.Set(1)
		msg = fmt.Sprintf("retrying for %s, past worker-retry-budget %s: %v", spent.Truncate(time.Second), cfg.WorkerRetryBudget, cause)
		log.Error("transient errors for longer than worker-retry-budget; still retrying", "error", cause,
			"retrying_seconds", spent.Seconds(), "budget_seconds", cfg.WorkerRetryBudget.Seconds())
	} else {
		log.Warn("transient error; retrying", "error", cause)
	}
	if err := w.report(ctx, req, k, name, fleet.PhaseRetrying, fleet.CondRunning, msg); err != nil {
		return err
	}
	return &errRetry{cause}
}

// retried ends a run of transient errors.
func (w *Worker) retried() {
	w.retryingSince = time.Time{}
	w.metrics.retrying.Set(0)
	w.metrics.retryingSince.Set(0)
	w.metrics.overBudget.Set(0)
}

// Operator carries out the worker's side effects.
type Operator interface {
	// FetchUpgrade downloads and verifies the ferry package of the
	// request's version. Its context ends when the rollout is stopped or
	// replaced.
	FetchUpgrade(ctx context.Context, cfg *fleet.Config, req *fleet.UpdateRequest) (Fetched, error)
	// InstallUpgrade installs a fetched package, hashing it once more
	// first; the file is removed either way. A stop does not interrupt it.
	InstallUpgrade(ctx context.Context, f Fetched) error
	// Discard removes a fetched package that will not be installed.
	Discard(f Fetched)
	// RunAction runs one action of a step.
	RunAction(ctx context.Context, rc RunContext, a *artifacts.Action) error
	// Verify asks dpkg whether the ferry package is installed ok at
	// version, and every package that the steps install at theirs. A
	// package in any other state is a *deb.NotInstalledError.
	Verify(ctx context.Context, version string, steps []artifacts.Step) error
	// Repair finishes interrupted dpkg runs, waiting for one that still
	// runs, and returns what it found ("" when nothing was wrong).
	Repair(ctx context.Context) (string, error)
	// CheckHealth runs one health check of a step: a GET that must
	// answer 2xx in time, or a command that must exit 0.
	CheckHealth(ctx context.Context, rc RunContext, c *artifacts.HealthCheck) error
	// Prefetch fetches ahead what the steps' actions will need (packages,
	// images), while earlier steps run, so that the uplink and the peers
	// are never idle between steps. It installs nothing and reports
	// nothing: each action fetches what it needs as if nothing had been
	// fetched ahead. It returns when done or when ctx ends.
	Prefetch(ctx context.Context, rc RunContext, steps []artifacts.Step)
	// Announce tells the other servers what this one holds for them,
	// once the worker registered as alive (its lease binds it).
	Announce(ctx context.Context)
}

// Fetched is a verified package, ready to install.
type Fetched struct {
	Path, SHA256, Version string
	// Cached is set when the file is in the peer cache, which keeps it
	// for the other servers after the install.
	Cached bool
	// Took is how long it took to download and verify.
	Took time.Duration
}

// RunContext tells an action where it runs.
type RunContext struct {
	// Config is the fleet's configuration when the rollout step started.
	Config   *fleet.Config
	Server   string
	Version  string
	Step     int
	StepName string
	Log      *slog.Logger
}

// Options configure a Worker.
type Options struct {
	Storage *storage.Storage
	ID      string
	// Version is this binary's version; default version.Version.
	Version  string
	Plan     *artifacts.Plan
	Operator Operator
	// DataDir keeps downloads and the self-upgrade record.
	DataDir string
	Logger  *slog.Logger
	Metrics *Metrics
	// LeaseTTL is the lease of alive/<id>; default 10s.
	LeaseTTL time.Duration
	// Etcd, if set, names the cause when /healthz finds etcd unreachable.
	Etcd *storage.Monitor
	// Package is the name of ferry's own package; default "ferry".
	Package string
	// Labels are announced as this server's labels when the worker starts
	// (bootstrap labels:).
	Labels map[string]string
	// TimelineQuiet is how long no step record must change before the
	// worker writes the changed ones on their own (it looks once a
	// TimelineQuiet); default 1s.
	TimelineQuiet time.Duration
}

// Worker is one ferry-worker.
type Worker struct {
	o       Options
	st      *storage.Storage
	log     *slog.Logger
	metrics *Metrics
	// stepSeconds are the plan's steps' series of
	// ferry_worker_step_duration_seconds, in the plan's order.
	stepSeconds []prometheus.Observer
	// lease is the alive lease; replaced if etcd loses it.
	lease atomic.Int64
	// requestSeen is the revision up to which the rollout just run saw
	// the request unchanged, 0 when it did not: Run's goroutine waits for
	// the next request from there.
	requestSeen int64
	// floor is this server's version floor, read at start.
	floor *trust.Floor
	// retryingSince is when the current run of transient errors began;
	// zero when the last try did not meet one. Run's goroutine alone uses it.
	retryingSince time.Time
	// tl is the timeline of the rollout this worker runs; Run's goroutine
	// alone uses it.
	tl timeline
	// stepsFile is the record of the steps done (see saveSteps), open
	// while Run runs; Run's goroutine alone uses it.
	stepsFile *os.File
}

func (w *Worker) leaseID() clientv3.LeaseID { return clientv3.LeaseID(w.lease.Load()) }

// Lease is the lease of alive/<id>, which what the worker announces to
// its peers lives with; 0 before Run registered the worker.
func (w *Worker) Lease() clientv3.LeaseID { return w.leaseID() }

// New builds a Worker; Run starts it.
func New(o Options) *Worker {
	if o.Version == "" {
		o.Version = version.Version
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Plan == nil {
		o.Plan = &artifacts.Plan{}
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.Package == "" {
		o.Package = "ferry"
	}
	var stepSeconds []prometheus.Observer
	for _, s := range o.Plan.Steps {
		o.Metrics.stepRetries.WithLabelValues(s.Name) // 0 from the start
		stepSeconds = append(stepSeconds, o.Metrics.stepSeconds.WithLabelValues(s.Name))
	}
	// The daemon's logger names the server already; one key per line.
	if o.TimelineQuiet <= 0 {
		o.TimelineQuiet = time.Second
	}
	return &Worker{o: o, st: o.Storage, log: o.Logger, metrics: o.Metrics, stepSeconds: stepSeconds}
}

// Run registers the worker as alive and follows requests until ctx ends
// (nil) or the worker upgraded itself (ErrUpgraded).
func (w *Worker) Run(ctx context.Context) (err error) {
	if err := w.observeFloor(); err != nil {
		return err
	}
	defer func() {
		if w.stepsFile != nil {
			w.stepsFile.Close()
			w.stepsFile = nil
		}
	}()
	w.countUpgrade()
	if err := w.openSteps(); err != nil {
		// Said again, and fatal to the rollout, at the first step done.
		w.log.Warn("cannot open the record of the steps done", "error", err)
	}
	lctx, stopLiveness := context.WithCancel(ctx)
	defer stopLiveness()
	w.announceLabels(ctx)
	if err := w.startLiveness(lctx); err != nil {
		return err
	}
	go w.o.Operator.Announce(lctx)
	defer func() {
		// A worker that upgraded itself is back within seconds, under
		// a new lease: the old one runs out meanwhile, so that its peers
		// wait for it rather than fetch upstream what it holds.
		if errors.Is(err, ErrUpgraded) {
			return
		}
		// Revoke even when ctx has ended, so that the alive key goes now.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		w.st.Client().Revoke(rctx, w.leaseID())
	}()

	// The wait between tries of a step that met transient errors: from
	// 1s, doubling, up to 30s, for as long as it takes.
	backoff := retry.Policy{Base: time.Second, Max: 30 * time.Second}.BackOff()
	// change is the change of the request that woke the worker, if any:
	// the snapshot is read at it, without reading the request again.
	var change *storage.RequestChange
	for {
		var snap *fleet.Snapshot
		var err error
		if change != nil {
			snap, err = w.st.WorkerSnapshotAt(ctx, w.o.ID, change)
			change = nil
		} else {
			snap, err = w.st.WorkerSnapshot(ctx, w.o.ID)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.log.Warn("cannot read etcd", "error", err)
			retry.Sleep(ctx, time.Second)
			continue
		}
		w.requestSeen = 0
		err = w.step(ctx, snap)
		var again *errRetry
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrUpgraded):
			return err
		case errors.As(err, &again):
			w.metrics.retrying.Set(1)
			retry.Sleep(ctx, retry.Delay(backoff, again.err, time.Now()))
			continue
		case err != nil && !errors.Is(err, errStopped):
			w.log.Error("worker error", "error", err)
			retry.Sleep(ctx, time.Second)
		}
		w.retried()
		backoff.Reset()
		if err == nil || errors.Is(err, errStopped) {
			change = w.wait(ctx, max(snap.Revision, w.requestSeen))
		}
	}
}

// wait returns when the request changes after rev, with the change:
// nothing else tells an idle worker to act. nil when the watch failed.
func (w *Worker) wait(ctx context.Context, rev int64) *storage.RequestChange {
	ch, err := w.st.WaitRequest(ctx, rev)
	if err != nil && ctx.Err() == nil && !errors.Is(err, storage.ErrCompacted) {
		w.log.Warn("watch failed", "error", err)
		retry.Sleep(ctx, time.Second)
	}
	return ch
}

// step decides on one snapshot (fleet.NextMove) and carries the move out.
// nil means "wait for a change".
func (w *Worker) step(ctx context.Context, snap *fleet.Snapshot) error {
	req := snap.Request
	l := w.local(req)
	var dpkgErr error
	warned := ""
	for {
		mv := fleet.NextMove(l, snap)
		if mv.Kind == fleet.MoveIdle {
			return nil
		}
		log := w.log.With("version", req.Version)
		if mv.Warning != "" && mv.Warning != warned {
			log.Warn(mv.Warning)
			warned = mv.Warning
		}
		switch mv.Kind {
		case fleet.MoveStopped:
			return w.stopped(ctx, req, mv.Step, stepName(w.o.Plan.Steps, mv.Step), errStopped, log)
		case fleet.MoveRefuse:
			log.Error(mv.Reason)
			return w.report(ctx, req, 0, "self-upgrade", fleet.PhaseUpgrading, fleet.CondAborted, mv.Reason)
		case fleet.MoveSelfUpgrade:
			if dpkgErr != nil {
				log.Warn("reinstalling this server's ferry package", "dpkg", dpkgErr.Error())
			}
			return w.selfUpgrade(ctx, snap.Config, req, log)
		case fleet.MoveWait:
			if dpkgErr != nil {
				return fmt.Errorf("%s: %w", mv.Reason, dpkgErr)
			}
			return errors.New(mv.Reason)
		case fleet.MoveCheckDpkg:
			if l.Dpkg, dpkgErr = w.checkDpkg(ctx, req.Version, mv.Step-1); l.Dpkg == fleet.DpkgUnknown {
				return dpkgErr
			}
		case fleet.MoveRepair:
			if err := w.repair(ctx, req, mv.Step, dpkgErr, log); err != nil {
				return err
			}
			l.Repaired = true
			if l.Dpkg, dpkgErr = w.checkDpkg(ctx, req.Version, mv.Step-1); l.Dpkg == fleet.DpkgUnknown {
				return dpkgErr
			}
		case fleet.MoveRunFrom:
			if mv.Step > 1 {
				log.Info("resuming the rollout", "step", mv.Step)
			}
			if err := w.takeUpTimeline(ctx, req, snap.Statuses[w.o.ID]); err != nil {
				return err
			}
			return w.runSteps(ctx, snap, mv.Step, log)
		default:
			return fmt.Errorf("no way to carry out the move %s", mv)
		}
	}
}

// takeUpTimeline makes the worker's timeline that of req. A worker that
// restarted in the middle of req (its status is about req) takes up the
// records it wrote; one that starts req reads nothing, so that a fleet that
// wakes on a new request costs etcd no read for it.
func (w *Worker) takeUpTimeline(ctx context.Context, req *fleet.UpdateRequest, own *fleet.UpdateStatus) error {
	if w.tl.isFor(req) {
		return nil
	}
	var saved []fleet.StepRecord
	// A forged "completed" does not start the timeline.
	if own.For(req) && !own.Rollout.IsZero() && own.Cond != fleet.CondCompleted {
		var err error
		if saved, err = w.st.ServerTimeline(ctx, req.StartedAt, w.o.ID); err != nil {
			return err
		}
	}
	w.tl.forRollout(req, saved)
	return nil
}

// local is what the worker knows of itself about req, apart from etcd.
func (w *Worker) local(req *fleet.UpdateRequest) fleet.Local {
	l := fleet.Local{ID: w.o.ID, Version: w.o.Version}
	if req == nil {
		return l
	}
	rec := w.loadSteps(req)
	l.Done, l.Completed = rec.Done, rec.Completed
	l.Installs = w.installsFor(req)
	if req.Version != w.o.Version {
		l.Floor = w.floor.Allows(req.Version, release.CompareStrings)
	}
	return l
}

// checkDpkg asks dpkg's database about the ferry package at version and
// the packages of the first done steps. An error that is not dpkg's
// verdict comes with fleet.DpkgUnknown.
func (w *Worker) checkDpkg(ctx context.Context, version string, done int) (fleet.Dpkg, error) {
	err := w.o.Operator.Verify(ctx, version, w.o.Plan.Steps[:min(max(done, 0), len(w.o.Plan.Steps))])
	var bad *deb.NotInstalledError
	switch {
	case err == nil:
		return fleet.DpkgOK, nil
	case !errors.As(err, &bad):
		return fleet.DpkgUnknown, err
	case bad.State.Package == w.o.Package:
		return fleet.DpkgFerryBroken, err
	}
	return fleet.DpkgOtherBroken, err
}

// repair finishes interrupted dpkg runs that dpkg's verdict bad showed,
// reporting phase repairing at step k meanwhile.
func (w *Worker) repair(ctx context.Context, req *fleet.UpdateRequest, k int, bad error, log *slog.Logger) error {
	w.metrics.repairs.Inc()
	log.Warn("dpkg's database disagrees; repairing", "step", k, "dpkg", bad.Error())
	if err := w.report(ctx, req, k, stepName(w.o.Plan.Steps, k), fleet.PhaseRepairing, fleet.CondRunning, bad.Error()+"; repairing"); err != nil {
		return err
	}
	_, err := w.o.Operator.Repair(ctx)
	return err
}

// ensureInstalled checks with dpkg that the ferry package and the packages
// of the done steps are installed ok, and repairs an interrupted install
// first. It returns a *deb.NotInstalledError for a package that a repair
// could not bring back.
func (w *Worker) ensureInstalled(ctx context.Context, req *fleet.UpdateRequest, k int, done []artifacts.Step, log *slog.Logger) error {
	err := w.o.Operator.Verify(ctx, req.Version, done)
	var bad *deb.NotInstalledError
	if !errors.As(err, &bad) {
		return err
	}
	if err := w.repair(ctx, req, k, err, log); err != nil {
		return err
	}
	return w.o.Operator.Verify(ctx, req.Version, done)
}

func stepName(steps []artifacts.Step, k int) string {
	if k < 1 || k > len(steps) {
		return ""
	}
	return steps[k-1].Name
}

func (w *Worker) report(ctx context.Context, req *fleet.UpdateRequest, step int, name string, phase fleet.Phase, cond fleet.Cond, msg string) error {
	st := &fleet.UpdateStatus{Version: req.Version, Rollout: req.StartedAt, Step: step, StepName: name, Phase: phase, Cond: cond, Message: msg, UpdatedAt: time.Now().UTC()}
	if step >= 1 && step <= len(w.o.Plan.Steps) {
		// The updater does not read the plan: the step's tolerance rides
		// on the report.
		s := &w.o.Plan.Steps[step-1]
		st.MaxFailures = s.MaxFailures
		if p := w.o.Plan.OnFailureOf(step); p == artifacts.OnFailureRollback {
			st.OnFailure = p
		}
		if st.Canary = s.CanaryCount(len(req.Active())); st.Canary > 0 {
			st.Pause = cmp.Or(s.Pause.String(), artifacts.PauseManual)
		}
	}
	// An arrival at a barrier is the one write a lockstep step costs: it
	// carries the status alone. Any other report carries the records
	// that changed.
	var recs []fleet.StepRecord
	var upTo int
	if phase != fleet.PhaseWaiting || cond != fleet.CondRunning {
		w.tl.writing.Lock()
		defer w.tl.writing.Unlock()
		recs, upTo = w.tl.unsaved(req)
	}
	var err error
	if recs != nil {
		err = w.st.PutStatusAndRecords(ctx, w.o.ID, st, recs)
	} else {
		err = w.st.PutStatus(ctx, w.o.ID, st)
	}
	if err != nil {
		return fmt.Errorf("report status: %w", err)
	}
	w.tl.markSaved(upTo)
	w.metrics.setState(fleet.StateOf(phase, cond))
	return nil
}

// --- self-upgrade ---

// observeFloor reads the version floor and records the version this binary
// is.
func (w *Worker) observeFloor() error {
	if err := os.MkdirAll(w.o.DataDir, 0o700); err != nil {
		return err
	}
	path := trust.FloorFile(w.o.DataDir)
	f, err := trust.LoadFloor(path)
	if err != nil {
		return err
	}
	before := *f
	if err := f.Observe(path, w.o.Version, time.Now()); err != nil {
		return err
	}
	if before.Current != f.Current {
		w.log.Info("version floor", "runs", f.Current, "ran_before", f.Previous)
	}
	w.floor = f
	return nil
}

// upgradeRecord counts the installs of one rollout attempt's version, so
// that an install that does not change the running binary is not repeated
// for ever. It is per attempt: the same version may well be installed again
// by a later rollout (after a rollback, say).
type upgradeRecord struct {
	Version  string    `json:"version"`
	Request  time.Time `json:"request"`
	Installs int       `json:"installs"`
	// Bytes were downloaded by the process that installed it; Counted is
	// set once the next process (the new version) has added the install
	// and the bytes to its metrics, which start from zero.
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	Counted bool    `json:"counted,omitempty"`
}

// countUpgrade adds the self-upgrade that installed this binary to its
// metrics, once: the counters of the process that did it ended with it.
func (w *Worker) countUpgrade() {
	var rec upgradeRecord
	data, err := os.ReadFile(w.upgradeRecordPath())
	if err != nil || json.Unmarshal(data, &rec) != nil || rec.Version != w.o.Version || rec.Counted {
		return
	}
	w.metrics.installs.WithLabelValues("ok").Inc()
	w.metrics.addDownload(rec.Bytes)
	if rec.Seconds > 0 {
		w.metrics.downloadSeconds.Observe(rec.Seconds)
	}
	rec.Counted = true
	if data, err := json.Marshal(rec); err == nil {
		if err := os.WriteFile(w.upgradeRecordPath(), data, 0o600); err != nil {
			w.log.Warn("cannot record the self-upgrade", "error", err)
		}
	}
}

func (w *Worker) upgradeRecordPath() string { return filepath.Join(w.o.DataDir, "self-upgrade.json") }

// installsFor returns how many times this attempt installed its version.
func (w *Worker) installsFor(req *fleet.UpdateRequest) int {
	var rec upgradeRecord
	data, err := os.ReadFile(w.upgradeRecordPath())
	if err != nil || json.Unmarshal(data, &rec) != nil {
		return 0
	}
	if rec.Version != req.Version || !rec.Request.Equal(req.StartedAt) {
		return 0
	}
	return rec.Installs
}

func (w *Worker) selfUpgrade(ctx context.Context, cfg *fleet.Config, req *fleet.UpdateRequest, log *slog.Logger) error {
	log.Info("self-upgrade", "from", w.o.Version)
	if err := w.report(ctx, req, 0, "self-upgrade", fleet.PhaseUpgrading, fleet.CondRunning, "upgrading from "+w.o.Version); err != nil {
		return err
	}
	// A stop, or a new request, ends the download, however long it waits
	// for a silent server; nothing interrupts the install.
	fctx, done := w.whileCurrent(ctx, req)
	pkg, err := w.o.Operator.FetchUpgrade(fctx, cfg, req)
	abandoned := errors.Is(context.Cause(fctx), errStopped)
	done()
	if abandoned && ctx.Err() == nil {
		w.o.Operator.Discard(pkg)
		log.Warn("the rollout was stopped or replaced while the package downloaded; the download is abandoned")
		return w.stopped(ctx, req, 0, "self-upgrade", errStopped, log)
	}
	if err == nil {
		err = w.o.Operator.InstallUpgrade(ctx, pkg)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.metrics.installs.WithLabelValues("failed").Inc()
		if retry.Transient(err) {
			return w.retryLater(ctx, cfg, req, 0, "self-upgrade", fmt.Errorf("self-upgrade to %s: %w", req.Version, err), log)
		}
		log.Error("self-upgrade failed", "error", err)
		return w.report(ctx, req, 0, "self-upgrade", fleet.PhaseUpgrading, fleet.CondAborted, "self-upgrade to "+req.Version+" failed: "+err.Error())
	}
	w.metrics.installs.WithLabelValues("ok").Inc()
	rec := upgradeRecord{Version: req.Version, Request: req.StartedAt, Installs: w.installsFor(req) + 1, Bytes: w.metrics.downloaded.Load(), Seconds: pkg.Took.Seconds()}
	if data, err := json.Marshal(rec); err == nil {
		os.MkdirAll(w.o.DataDir, 0o700)
		if err := os.WriteFile(w.upgradeRecordPath(), data, 0o600); err != nil {
			log.Warn("cannot record the self-upgrade", "error", err)
		}
	}
	log.Info("self-upgrade installed; exiting so that the new version starts")
	return ErrUpgraded
}

// --- steps ---

// stepRecord is this server's own record of the rollout it runs, kept in
// its data-dir: the last step it finished, and whether it completed the
// rollout. A worker resumes from it, never from its status in etcd.
type stepRecord struct {
	Version   string    `json:"version"`
	Rollout   time.Time `json:"rollout"`
	Done      int       `json:"done"`
	Completed bool      `json:"completed,omitempty"`
}

func (w *Worker) stepsPath() string { return filepath.Join(w.o.DataDir, "rollout-steps.json") }

// loadSteps is the record of req's rollout; an empty one when the record
// is of another rollout, missing or unreadable (the steps run again).
func (w *Worker) loadSteps(req *fleet.UpdateRequest) stepRecord {
	var rec stepRecord
	data, err := os.ReadFile(w.stepsPath())
	if err != nil || json.Unmarshal(data, &rec) != nil || rec.Version != req.Version || !rec.Rollout.Equal(req.StartedAt) {
		return stepRecord{}
	}
	return rec
}

// stepsRecordSize is the fixed size of the steps record: one disk sector,
// rewritten in place.
const stepsRecordSize = 512

// spaces pad the steps record to its size.
var spaces = bytes.Repeat([]byte{' '}, stepsRecordSize)

// openSteps opens the record of the steps done for writing, once per Run:
// the worker opens it when it starts, so that the first step of a rollout
// does not pay for creating it.
func (w *Worker) openSteps() error {
	if w.stepsFile != nil {
		return nil
	}
	f, err := os.OpenFile(w.stepsPath(), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record the steps done in %s: %w", w.o.DataDir, err)
	}
	w.stepsFile = f
	return nil
}

// saveSteps records rec for req's rollout before the report that says the
// same in etcd. The record is one sector, overwritten in place and not
// synced: a write that a power loss takes away leaves the older record, or
// an unreadable one, and either makes the worker run a step again, never
// skip one. (A rename, or a sync, per step and server would cost every
// barrier: ext4 flushes a file replaced by a rename.)
func (w *Worker) saveSteps(req *fleet.UpdateRequest, rec stepRecord) error {
	rec.Version, rec.Rollout = req.Version, req.StartedAt
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if len(data) > stepsRecordSize {
		return fmt.Errorf("the record of the steps done is %d bytes, more than %d: version %q is too long", len(data), stepsRecordSize, req.Version)
	}
	if err := w.openSteps(); err != nil {
		return err
	}
	if _, err := w.stepsFile.WriteAt(append(data, spaces[:stepsRecordSize-len(data)]...), 0); err != nil {
		w.stepsFile.Close()
		w.stepsFile = nil
		return fmt.Errorf("record the steps done in %s: %w", w.o.DataDir, err)
	}
	return nil
}

// runSteps runs the plan from step start. Each step costs one status write
// at its barrier: "waiting at step k", which also says "done with step
// k-1"; the updater leader writes status/passed when every server has
// written it, and one watch, open for the whole rollout, brings that here.
func (w *Worker) runSteps(ctx context.Context, snap *fleet.Snapshot, start int, log *slog.Logger) error {
	cfg, req := snap.Config, snap.Request
	steps := w.o.Plan.Steps
	var rw *storage.RolloutWatch
	if start <= len(steps) {
		var err error
		if rw, err = w.st.WatchRolloutAt(ctx, snap); err != nil {
			return err
		}
		defer rw.Close()
		defer func() { w.requestSeen = rw.RequestUnchangedUntil(snap.RequestRev) }()
		w.recordPlan(ctx, req, log)
	}
	if start <= len(steps) {
		tctx, stopWriting := context.WithCancel(ctx)
		defer stopWriting()
		go w.tl.writeBehind(tctx, req, w.o.TimelineQuiet, func(ctx context.Context, recs []fleet.StepRecord) error {
			return w.st.PutStepRecords(ctx, w.o.ID, req.StartedAt, recs)
		})
		pctx, stopPrefetch := context.WithCancel(ctx)
		defer stopPrefetch()
		ahead := w.ownSteps(ctx, steps[start-1:])
		go w.o.Operator.Prefetch(pctx, RunContext{Config: cfg, Server: w.o.ID, Version: req.Version, Log: log}, ahead)
	}
	for k := start; k <= len(steps); k++ {
		s := &steps[k-1]
		stepLog := log.With("step", s.Name)
		// A safe point: nothing runs between the report and the barrier.
		if err := w.report(ctx, req, k, s.Name, fleet.PhaseWaiting, fleet.CondRunning, ""); err != nil {
			return err
		}
		if err := w.barrier(ctx, rw, k); err != nil {
			return w.stopped(ctx, req, k, s.Name, err, stepLog)
		}
		if err := w.holdWhilePaused(ctx, rw, req, k, s.Name, stepLog); err != nil {
			return w.stopped(ctx, req, k, s.Name, err, stepLog)
		}
		w.tl.begin(k, s.Name, time.Now())
		w.metrics.setState(fleet.StateRunning)
		w.metrics.step.Set(float64(k))
		began := time.Now()
		err := w.runStep(ctx, cfg, req, rw, k, s, stepLog)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStopped) {
			return w.stopped(ctx, req, k, s.Name, err, stepLog)
		}
		if err != nil && retry.Transient(err) {
			return w.retryLater(ctx, cfg, req, k, s.Name, fmt.Errorf("step %d (%s): %w", k, s.Name, err), stepLog)
		}
		if err != nil {
			msg := fmt.Sprintf("step %d (%s) failed: %v", k, s.Name, err)
			stepLog.Error("step failed", "error", err)
			w.tl.end(k, time.Now(), fleet.StepFailed, err.Error())
			return w.report(ctx, req, k, s.Name, fleet.PhaseRunning, fleet.CondAborted, msg)
		}
		// Never report a step done over a package that dpkg has not
		// finished installing.
		if err := w.ensureInstalled(ctx, req, k, steps[:k], stepLog); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var bad *deb.NotInstalledError
			if !errors.As(err, &bad) {
				return err
			}
			msg := fmt.Sprintf("step %d (%s): %v", k, s.Name, err)
			stepLog.Error("a package is not installed after the step", "error", err)
			w.tl.end(k, time.Now(), fleet.StepFailed, err.Error())
			return w.report(ctx, req, k, s.Name, fleet.PhaseRunning, fleet.CondAborted, msg)
		}
		w.tl.end(k, time.Now(), fleet.StepOK, "") // a skipped step keeps its result
		// The step went through: a run of transient errors is over before
		// the next report says so.
		w.retried()
		if err := w.saveSteps(req, stepRecord{Done: k}); err != nil {
			return w.cannotRecord(ctx, req, k, s.Name, err, stepLog)
		}
		took := time.Since(began).Seconds()
		w.stepSeconds[k-1].Observe(took)
		stepLog.Info("step done", "seconds", took)
		// The next step's "waiting" report says this one is done.
	}
	w.metrics.step.Set(0)
	if len(steps) == 0 {
		if err := w.ensureInstalled(ctx, req, 0, nil, log); err != nil {
			return err
		}
	}
	if err := w.saveSteps(req, stepRecord{Done: len(steps), Completed: true}); err != nil {
		return w.cannotRecord(ctx, req, len(steps), lastName(steps), err, log)
	}
	log.Info("rollout completed on this server")
	return w.report(ctx, req, len(steps), lastName(steps), fleet.PhaseDone, fleet.CondCompleted, "")
}

// ownSteps are the steps of steps that this server runs itself: those
// whose selector takes it, and no leader step (one server runs it for
// the fleet). Without its labels, it counts the steps with a selector out.
func (w *Worker) ownSteps(ctx context.Context, steps []artifacts.Step) []artifacts.Step {
	var labels map[string]string
	if slices.ContainsFunc(steps, func(s artifacts.Step) bool { return len(s.Selector) > 0 }) {
		if info, err := w.st.GetServer(ctx, w.o.ID); err == nil {
			labels = info.Labels
		}
	}
	var own []artifacts.Step
	for _, s := range steps {
		if s.Strategy != artifacts.Leader && (len(s.Selector) == 0 || labels != nil) && s.Selects(labels) {
			own = append(own, s)
		}
	}
	return own
}

// recordPlan writes the names of the plan's steps for the operator's view
// (status/plan), once per rollout: the first server of the request does,
// as it runs the plan at the request's version.
func (w *Worker) recordPlan(ctx context.Context, req *fleet.UpdateRequest, log *slog.Logger) {
	if active := req.Active(); len(active) == 0 || active[0] != w.o.ID {
		return
	}
	p := &fleet.PlanSteps{Rollout: req.StartedAt}
	for _, s := range w.o.Plan.Steps {
		p.Steps = append(p.Steps, s.Name)
	}
	if err := w.st.PutPlan(ctx, p); err != nil {
		log.Warn("cannot record the plan's steps for ferry status and the page", "error", err)
	}
}

// cannotRecord aborts this server when it cannot record that it finished
// step k: going on would leave it no way to resume without running the
// step again, and trying again would run it again at once.
func (w *Worker) cannotRecord(ctx context.Context, req *fleet.UpdateRequest, k int, name string, err error, log *slog.Logger) error {
	log.Error("cannot record the steps done; stopping here", "error", err)
	return w.report(ctx, req, k, name, fleet.PhaseDone, fleet.CondAborted, fmt.Sprintf("step %d (%s) is done, but %v; fix the data-dir, then `ferry recover`", k, name, err))
}

func lastName(steps []artifacts.Step) string {
	if len(steps) == 0 {
		return ""
	}
	return steps[len(steps)-1].Name
}

// stopped records that this worker stopped at a safe point before step k.
func (w *Worker) stopped(ctx context.Context, req *fleet.UpdateRequest, k int, name string, cause error, log *slog.Logger) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !errors.Is(cause, errStopped) {
		return cause
	}
	snap, err := w.st.WorkerSnapshot(ctx, w.o.ID)
	if err != nil {
		return err
	}
	cur := snap.Request
	if cur == nil || !cur.StartedAt.Equal(req.StartedAt) {
		// Recovered or replaced: nothing to record for the old request.
		return errStopped
	}
	if cur.IsFailed(w.o.ID) {
		log.Warn("the rollout goes on without this server; it waits for the next one")
		return errStopped
	}
	if own := snap.Statuses[w.o.ID]; own != nil && own.Cond == fleet.CondAborted {
		return errStopped
	}
	reason := cur.StopReason
	if reason == "" {
		reason = "another server aborted"
	}
	log.Warn("stopped at a safe point", "reason", reason)
	if err := w.report(ctx, req, k, name, fleet.PhaseWaiting, fleet.CondAborted, "stopped before this step: "+reason); err != nil {
		return err
	}
	return errStopped
}

// barrier waits until every server of the request has reached step k, that
// is, finished step k-1. A member that aborted makes the updater stop the
// request, which ends the wait.
func (w *Worker) barrier(ctx context.Context, rw *storage.RolloutWatch, k int) error {
	res, err := rw.Wait(ctx, k)
	if err != nil {
		return err
	}
	if res == storage.BarrierGone || rw.Request().IsFailed(w.o.ID) {
		return errStopped
	}
	return nil
}

// spreadLock waits until no other server with the same value of the
// spread label is inside step k, and holds that place until unlock. The
// lock is bound to the worker's alive lease: a dead worker frees it.
func (w *Worker) spreadLock(ctx context.Context, req *fleet.UpdateRequest, k int, key, value string) (func(), error) {
	sess, err := concurrency.NewSession(w.st.Client(), concurrency.WithLease(w.leaseID()))
	if err != nil {
		return nil, fmt.Errorf("spread session: %w", err)
	}
	m := concurrency.NewMutex(sess, w.st.SpreadLock(req.StartedAt, k, key, value))
	wctx, done := w.whileCurrent(ctx, req)
	err = m.Lock(wctx)
	stoppedWaiting := errors.Is(context.Cause(wctx), errStopped)
	done()
	if err != nil {
		sess.Orphan()
		if stoppedWaiting {
			return nil, errStopped
		}
		return nil, fmt.Errorf("wait for the other servers of %s=%s to leave the step: %w", key, value, err)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := m.Unlock(uctx); err != nil {
			w.log.Warn("cannot free the spread lock; it is freed when this worker stops", "error", err)
		}
		sess.Orphan() // the lease is the worker's alive lease: keep it
	}, nil
}

// holdWhilePaused waits at the start of step k while `ferry rollout pause`
// holds the rollout.
func (w *Worker) holdWhilePaused(ctx context.Context, rw *storage.RolloutWatch, req *fleet.UpdateRequest, k int, name string, log *slog.Logger) error {
	if !rw.Paused() {
		return nil
	}
	log.Info("the rollout is paused; waiting for ferry rollout resume")
	if err := w.report(ctx, req, k, name, fleet.PhasePaused, fleet.CondRunning, "paused by `ferry rollout pause`; `ferry rollout resume` goes on"); err != nil {
		return err
	}
	res, err := rw.WaitFor(ctx, func() bool { return !rw.Paused() })
	if err != nil {
		return err
	}
	if res == storage.BarrierGone {
		return errStopped
	}
	return nil
}

// behindCanary lets the first servers of a rolling step with a canary take
// it, and holds the others, paused, until the rollout is resumed after it.
func (w *Worker) behindCanary(ctx context.Context, rw *storage.RolloutWatch, req *fleet.UpdateRequest, k int, s *artifacts.Step, log *slog.Logger) error {
	n := s.CanaryCount(len(req.Active()))
	if n == 0 || rw.Resumed() >= k {
		return nil
	}
	first, err := w.st.ClaimCanary(ctx, req.StartedAt, k, n, w.o.ID)
	if err != nil || first {
		if first {
			log.Info("taking the step first, as its canary", "canary", n)
		}
		return err
	}
	how := "after `ferry rollout resume`"
	switch d, manual := s.PauseFor(); {
	case !manual:
		how = fmt.Sprintf("by itself %s after the canary finished it, or sooner after `ferry rollout resume`", d)
	case req.Reason == fleet.ReasonRollback:
		how = "as soon as the canary finished it: a rollback skips manual pauses"
	}
	msg := fmt.Sprintf("behind the canary: %d server(s) take step %d (%s) first; the rest go on %s", n, k, s.Name, how)
	log.Info("waiting behind the canary", "canary", n)
	if err := w.report(ctx, req, k, s.Name, fleet.PhasePaused, fleet.CondRunning, msg); err != nil {
		return err
	}
	res, err := rw.WaitFor(ctx, func() bool { return rw.Resumed() >= k || rw.Request().IsFailed(w.o.ID) })
	if err != nil {
		return err
	}
	if res == storage.BarrierGone || rw.Request().IsFailed(w.o.ID) {
		return errStopped
	}
	return nil
}

// releaseSlot frees a rolling slot, retrying for a while: the slot is bound
// to this worker's lease, which lives on, so a release lost to an etcd blip
// would hold the slot, and stall the step, for the rest of the rollout.
func (w *Worker) releaseSlot(ctx context.Context, step string, release func(context.Context) error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	_, err := retry.Do(rctx, retry.Policy{Base: 500 * time.Millisecond, Max: 5 * time.Second, Notify: func(err error, _ time.Duration) {
		w.log.Warn("cannot free a rolling slot; retrying", "step", step, "error", err)
	}}, func() (struct{}, error) { return struct{}{}, release(rctx) })
	if err != nil {
		w.log.Error("cannot free a rolling slot; it is freed when this worker stops", "step", step, "error", err)
	}
}

// whileCurrent returns a context that ends when the request is stopped or
// replaced, for waits that etcd does not wake (slots, elections).
func (w *Worker) whileCurrent(ctx context.Context, req *fleet.UpdateRequest) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		// Until the context ends, or the rollout is gone.
		retry.Do(wctx, retry.Policy{Base: time.Second, Max: time.Second}, func() (struct{}, error) {
			rw, err := w.st.WatchRollout(wctx, req)
			if err != nil {
				return struct{}{}, err
			}
			defer rw.Close()
			if res, err := rw.Wait(wctx, math.MaxInt); err != nil || res != storage.BarrierGone {
				return struct{}{}, fmt.Errorf("the watch of the rollout ended: %v", err)
			}
			cancel(errStopped)
			return struct{}{}, nil
		})
	}()
	return wctx, func() { cancel(nil) }
}

func (w *Worker) runStep(ctx context.Context, cfg *fleet.Config, req *fleet.UpdateRequest, rw *storage.RolloutWatch, k int, s *artifacts.Step, log *slog.Logger) error {
	rc := RunContext{Config: cfg, Server: w.o.ID, Version: req.Version, Step: k, StepName: s.Name, Log: log}
	var labels map[string]string
	if len(s.Selector) > 0 || s.Spread != "" {
		info, err := w.st.GetServer(ctx, w.o.ID)
		if err != nil {
			return fmt.Errorf("read this server's labels: %w", err)
		}
		labels = info.Labels
	}
	if !s.Selects(labels) {
		log.Info("the step's selector does not match this server; passing through it", "selector", s.Selector)
		w.tl.skip(k)
		return nil
	}
	switch s.Strategy {
	case artifacts.Rolling:
		if err := w.behindCanary(ctx, rw, req, k, s, log); err != nil {
			return err
		}
		if s.Spread != "" {
			unlock, err := w.spreadLock(ctx, req, k, s.Spread, labels[s.Spread])
			if err != nil {
				return err
			}
			defer unlock()
		}
		wctx, done := w.whileCurrent(ctx, req)
		release, err := w.st.AcquireSlot(wctx, req.StartedAt, s.Name, max(s.Parallel, 1), w.o.ID, w.leaseID())
		stoppedWaiting := errors.Is(context.Cause(wctx), errStopped)
		done()
		if err != nil {
			if stoppedWaiting {
				return errStopped
			}
			return err
		}
		defer w.releaseSlot(ctx, s.Name, release)
		if err := w.report(ctx, req, k, s.Name, fleet.PhaseRunning, fleet.CondRunning, ""); err != nil {
			return err
		}
		return w.runAttempts(ctx, req, rc, s)
	case artifacts.Leader:
		return w.runLeaderStep(ctx, rc, req, s, log)
	}
	// A lockstep step runs on every server once the barrier passed: its
	// "waiting" report and status/passed say so without another write.
	return w.runAttempts(ctx, req, rc, s)
}

// runAttempts runs the step's actions, each attempt bounded by the step's
// timeout, and after a failure tries again up to the step's retries, with
// backoff, reporting each failed attempt. A transient error is returned at
// once, to be retried as every transient error is, at no cost in attempts.
func (w *Worker) runAttempts(ctx context.Context, req *fleet.UpdateRequest, rc RunContext, s *artifacts.Step) error {
	k, n := rc.Step, 0
	_, err := retry.Do(ctx, retry.Policy{Tries: uint(s.Retries + 1), Waits: s.RetryWait}, func() (struct{}, error) {
		if n++; n > 1 {
			if err := w.report(ctx, req, k, s.Name, fleet.PhaseRunning, fleet.CondRunning, fmt.Sprintf("attempt %d of %d", n, s.Retries+1)); err != nil {
				return struct{}{}, retry.Permanent(err)
			}
		}
		timedOut, err := w.attempt(ctx, req, rc, s)
		switch {
		case err == nil:
			return struct{}{}, nil
		case ctx.Err() != nil, retry.Transient(err) && !timedOut:
			return struct{}{}, retry.Permanent(err)
		case n > s.Retries && s.Retries > 0:
			return struct{}{}, fmt.Errorf("all %d attempts failed; the last: %w", n, err)
		case n > s.Retries:
			return struct{}{}, err
		}
		wait := s.RetryWait(n)
		w.metrics.stepRetries.WithLabelValues(s.Name).Inc()
		rc.Log.Warn("step attempt failed; trying again", "attempt", n, "attempts", s.Retries+1, "error", err, "retry_in_seconds", wait.Seconds())
		msg := fmt.Sprintf("attempt %d of %d failed: %v; next attempt in %s", n, s.Retries+1, err, wait)
		if err := w.report(ctx, req, k, s.Name, fleet.PhaseRetrying, fleet.CondRunning, msg); err != nil {
			return struct{}{}, retry.Permanent(err)
		}
		return struct{}{}, err
	})
	return err
}

// attempt runs the step's actions and health checks once, within the
// step's timeout, and records the attempt in the timeline. timedOut says
// the timeout ended it: a failure of the attempt, not a transient error
// to retry for ever (the context's error is not kept).
func (w *Worker) attempt(ctx context.Context, req *fleet.UpdateRequest, rc RunContext, s *artifacts.Step) (timedOut bool, err error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if d := s.TimeoutDuration(); d > 0 {
		actx, cancel = context.WithTimeout(ctx, d)
	}
	defer cancel()
	w.tl.attempt(rc.Step, time.Now())
	err = w.runActions(actx, rc, s)
	if err == nil {
		err = w.checkHealth(actx, req, rc, s)
	}
	if timedOut = err != nil && actx.Err() != nil && ctx.Err() == nil; timedOut {
		err = fmt.Errorf("timed out after %s (the step's timeout): %v", s.Timeout, err)
	}
	w.tl.attemptEnded(rc.Step, time.Now(), err)
	return timedOut, err
}

// checkHealth runs the step's health checks until every one passed, and
// then again until they stayed green for the step's soak. The first check
// that fails fails the attempt.
func (w *Worker) checkHealth(ctx context.Context, req *fleet.UpdateRequest, rc RunContext, s *artifacts.Step) error {
	if len(s.Health) == 0 {
		return nil
	}
	soak := s.SoakDuration()
	green := time.Now()
	interval := min(max(soak/10, 200*time.Millisecond), 5*time.Second)
	for pass := 1; ; pass++ {
		for i := range s.Health {
			c := &s.Health[i]
			if err := w.o.Operator.CheckHealth(ctx, rc, c); err != nil {
				if soak > 0 && pass > 1 {
					return fmt.Errorf("health check %d (%s) failed after %s of %s soak: %w", i+1, c, time.Since(green).Truncate(time.Second), soak, err)
				}
				return fmt.Errorf("health check %d (%s) failed: %w", i+1, c, err)
			}
		}
		if time.Since(green) >= soak {
			return nil
		}
		if pass == 1 {
			msg := fmt.Sprintf("health checks green; soaking %s", soak)
			if err := w.report(ctx, req, rc.Step, s.Name, fleet.PhaseRunning, fleet.CondRunning, msg); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(interval, soak-time.Since(green))):
		}
	}
}

func (w *Worker) runActions(ctx context.Context, rc RunContext, s *artifacts.Step) error {
	for i := range s.Actions {
		a := &s.Actions[i]
		if err := w.o.Operator.RunAction(ctx, rc, a); err != nil {
			return fmt.Errorf("%s action %d: %w", a.Type(), i+1, err)
		}
	}
	return nil
}

// runLeaderStep lets every worker pass through an election in turn. The
// first one runs the step and records contents/<target>; each later one
// finds the record and goes on.
func (w *Worker) runLeaderStep(ctx context.Context, rc RunContext, req *fleet.UpdateRequest, s *artifacts.Step, log *slog.Logger) error {
	k := rc.Step
	target := s.ContentsTarget()
	done := func() (bool, error) {
		c, err := w.st.GetContents(ctx, target)
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if c.Version != req.Version {
			return false, nil
		}
		if !c.Success {
			// The server that ran it failed and reported it; the updater
			// stops the fleet.
			return false, errStopped
		}
		return true, nil
	}
	if ok, err := done(); ok || err != nil {
		if ok {
			log.Info("once-per-fleet step already done", "target", target)
		}
		return err
	}

	sess, err := concurrency.NewSession(w.st.Client(), concurrency.WithLease(w.leaseID()))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer sess.Orphan() // the lease is the worker's alive lease: keep it
	elec := concurrency.NewElection(sess, w.st.WorkerElection(target))
	wctx, stopWatch := w.whileCurrent(ctx, req)
	err = elec.Campaign(wctx, w.o.ID)
	stoppedWaiting := errors.Is(context.Cause(wctx), errStopped)
	stopWatch()
	if err != nil {
		if stoppedWaiting {
			return errStopped
		}
		return fmt.Errorf("campaign for %s: %w", target, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		elec.Resign(rctx)
	}()

	if ok, err := done(); ok || err != nil {
		return err
	}
	log.Info("running the once-per-fleet step", "target", target)
	if err := w.report(ctx, req, k, s.Name, fleet.PhaseRunning, fleet.CondRunning, "running for the fleet"); err != nil {
		return err
	}
	runErr := w.runAttempts(ctx, req, rc, s)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if retry.Transient(runErr) {
		// Not a failure of the step: the next holder of the election
		// (this worker, again, after a backoff) runs it.
		return runErr
	}
	rec := &fleet.ContentsStatus{Version: req.Version, Success: runErr == nil, UpdatedAt: time.Now().UTC()}
	if err := w.st.PutContents(ctx, target, rec); err != nil {
		return errors.Join(runErr, fmt.Errorf("record contents/%s: %w", target, err))
	}
	return runErr
}

// announceLabels writes the labels of the bootstrap config on this
// server's record, keeping the others (ferry server label).
func (w *Worker) announceLabels(ctx context.Context) {
	if len(w.o.Labels) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := w.st.LabelServer(actx, w.o.ID, w.o.Labels, nil)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		w.log.Info("this server has not joined the fleet; its labels are announced when the worker starts after ferry join", "labels", w.o.Labels)
	case err != nil:
		w.log.Warn("cannot announce this server's labels; they are announced at the next start", "error", err)
	default:
		w.log.Info("announced this server's labels", "labels", info.Labels)
	}
}

// --- liveness ---

// installed is what dpkg says of ferry's own package (see fleet.Alive).
func (w *Worker) installed(ctx context.Context) string {
	verdict, err := w.checkDpkg(ctx, w.o.Version, 0)
	var bad *deb.NotInstalledError
	switch {
	case verdict == fleet.DpkgOK:
		return w.o.Version
	case verdict != fleet.DpkgFerryBroken || !errors.As(err, &bad):
		w.log.Warn("cannot ask dpkg which ferry is installed", "error", err)
		return ""
	case bad.State.Installed():
		return bad.State.Version // installed ok, at another version
	}
	return strings.TrimSpace(bad.State.Version + " " + bad.State.Condition())
}

// startLiveness writes alive/<id> bound to a lease and keeps the lease
// alive until ctx ends. A lease lost to an etcd outage is replaced.
func (w *Worker) startLiveness(ctx context.Context) error {
	ttl := int64(max(w.o.LeaseTTL/time.Second, 1))
	alive := &fleet.Alive{Version: w.o.Version, Installed: w.installed(ctx), PID: os.Getpid(), StartedAt: time.Now().UTC()}
	grant := func() (<-chan *clientv3.LeaseKeepAliveResponse, error) {
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		lease, err := w.st.Client().Grant(gctx, ttl)
		if err != nil {
			return nil, fmt.Errorf("grant a lease: %w", err)
		}
		if err := w.st.PutAlive(gctx, w.o.ID, alive, lease.ID); err != nil {
			return nil, err
		}
		ch, err := w.st.Client().KeepAlive(ctx, lease.ID)
		if err != nil {
			return nil, fmt.Errorf("keep the lease alive: %w", err)
		}
		w.lease.Store(int64(lease.ID))
		return ch, nil
	}
	ch, err := grant()
	if err != nil {
		return err
	}
	go func() {
		for ctx.Err() == nil {
			for range ch {
			}
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("lost the alive lease; registering again")
			for ctx.Err() == nil {
				if ch, err = grant(); err == nil {
					break
				}
				w.log.Warn("cannot register as alive", "error", err)
				retry.Sleep(ctx, time.Second)
			}
		}
	}()
	return nil
}

// Handler serves /metrics and /healthz.
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(w.metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", w.st.HealthHandler(w.o.Etcd, nil))
	return mux
}
