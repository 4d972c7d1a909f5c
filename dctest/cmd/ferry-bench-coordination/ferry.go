package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/worker"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// keepaliveWindow is how long the lease keepalives of idle workers are
// counted; leaseTTL is the workers' alive lease, ferry-worker's default.
const (
	keepaliveWindow = 10 * time.Second
	leaseTTL        = 10 * time.Second
)

// noop is an Operator whose actions take no time.
type noop struct{}

func (noop) FetchUpgrade(context.Context, *fleet.Config, *fleet.UpdateRequest) (worker.Fetched, error) {
	return worker.Fetched{}, nil
}
func (noop) InstallUpgrade(context.Context, worker.Fetched) error                         { return nil }
func (noop) Discard(worker.Fetched)                                                       {}
func (noop) RunAction(context.Context, worker.RunContext, *artifacts.Action) error        { return nil }
func (noop) Verify(context.Context, string, []artifacts.Step) error                       { return nil }
func (noop) Repair(context.Context) (string, error)                                       { return "", nil }
func (noop) CheckHealth(context.Context, worker.RunContext, *artifacts.HealthCheck) error { return nil }
func (noop) Prefetch(context.Context, worker.RunContext, []artifacts.Step)                {}
func (noop) Announce(context.Context)                                                     {}

// ferryRun is what one rollout through the real worker code cost.
type ferryRun struct {
	perStep, rollout   time.Duration
	writes             int64 // etcd revisions in the steady state
	puts, txns, events float64
	renewals           float64 // lease keepalives a second, when counted
	fsyncs             float64 // WAL syncs of etcd's members per step
	wrote              writeStats
	// phases are, from a barrier's passing as the spectator saw it, when
	// the first and the last arrival at the next were sent, when the last
	// was answered, and when that barrier passed: medians over the steps.
	phases [4]time.Duration
	// start is the same for barrier 1, from the request's write.
	start [4]time.Duration
	// cpu is what the rollout cost in CPU, from the request to the
	// completion.
	cpu cpuUse
	// step is the median step, lastStep the last: from barrier S to the
	// completion, whose reports carry every step record.
	step, lastStep time.Duration
}

// runFerry starts n workers on a plan of steps no-op lockstep steps, waits
// until every one is alive and idle, and then times a rollout: from the
// request's write, and from the first barrier's passing, to the fleet's
// completion. With keepalives, it then counts the idle workers' lease
// keepalives for a while.
func runFerry(endpoints []string, members []*harness.EtcdMember, n, steps int, keepalives bool) (*ferryRun, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Room for every write of the rollout: a few per server and step.
	log := newWriteLog(n * (steps + 10) * 2)
	// The updater's coordinator and the spectator have a client of their
	// own, whose writes are not the workers'.
	cs, own, err := fleetClients(endpoints, n, log)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	defer own.Close()
	prefix := fmt.Sprintf("/bench/%d/%d/", n, time.Now().UnixNano())
	admin, err := storage.New(own, prefix)
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(admin.Client())
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	elec := concurrency.NewElection(sess, admin.UpdaterElectionPrefix())
	if err := elec.Campaign(ctx, "bench"); err != nil {
		return nil, err
	}
	plan := &artifacts.Plan{}
	for i := 1; i <= steps; i++ {
		plan.Steps = append(plan.Steps, artifacts.Step{Name: fmt.Sprintf("s%d", i), Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Run: &artifacts.RunAction{Command: "true"}}}})
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ids := make([]string, n)
	dataDir, err := os.MkdirTemp("", "ferry-bench-workers-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dataDir)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range ids {
		ids[i] = fmt.Sprintf("w%04d", i)
		st, err := storage.New(cs[i/perClient], prefix)
		if err != nil {
			return nil, err
		}
		w := worker.New(worker.Options{Storage: st, ID: ids[i], Version: "1.0.0", Plan: plan, Operator: noop{}, DataDir: fmt.Sprintf("%s/%s", dataDir, ids[i]), Logger: quiet, LeaseTTL: leaseTTL})
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	// Every worker is alive and idle before the rollout starts.
	for {
		alive, err := admin.GetAlive(ctx)
		if err != nil {
			return nil, err
		}
		if len(alive) == n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.reset() // registration
	stopProfile, err := profileRollout(n, steps)
	if err != nil {
		return nil, err
	}
	defer stopProfile()

	// A spectator follows the rollout as a worker does, with the same
	// watch: it sees each barrier pass, and barrier steps+1 is the fleet's
	// completion. Its own events are not counted.
	before, err := scrape(members)
	if err != nil {
		return nil, err
	}
	req := &fleet.UpdateRequest{Version: "1.0.0", Servers: ids, Reason: fleet.ReasonUpdate, StartedAt: time.Now().UTC()}
	began := time.Now()
	if err := admin.AsLeader(elec.Key()).StartRequest(ctx, req); err != nil {
		return nil, err
	}
	go admin.AsLeader(elec.Key()).Coordinate(ctx, req)
	rw, err := admin.WatchRollout(ctx, req)
	if err != nil {
		return nil, err
	}
	defer rw.Close()
	passedAt := make([]time.Time, steps+2)
	passedRev := make([]int64, steps+2)
	wctx, stop := context.WithTimeout(ctx, 10*time.Minute)
	defer stop()
	for k := 1; k <= steps+1; k++ {
		res, err := rw.Wait(wctx, k)
		if err != nil {
			return nil, fmt.Errorf("%d servers, barrier %d: %w", n, k, err)
		}
		if res != storage.BarrierPassed {
			return nil, fmt.Errorf("%d servers: the rollout ended at barrier %d", n, k)
		}
		passedAt[k], passedRev[k] = time.Now(), rw.Revision()
	}
	done := time.Now()
	stopProfile()
	after, err := scrape(members)
	if err != nil {
		return nil, err
	}
	r := &ferryRun{
		perStep: passedAt[steps+1].Sub(passedAt[1]) / time.Duration(steps),
		rollout: done.Sub(began) / time.Duration(steps),
		// Every write is a revision of its own: from the first barrier's
		// passing to the completion, the writes of the steady state.
		writes: passedRev[steps+1] - passedRev[1],
		puts:   after.puts - before.puts,
		txns:   after.txns - before.txns,
		events: after.events - before.events - float64(rw.Events()),
		fsyncs: (after.fsyncs - before.fsyncs) / float64(steps),
		wrote:  log.stats(),
		cpu:    cpuOf(before, after, n*steps),
	}
	if r.wrote.lost > 0 {
		return nil, fmt.Errorf("%d servers: the log of writes had no room for %d", n, r.wrote.lost)
	}
	var ph [4][]float64
	for k := 2; k <= steps+1; k++ {
		sent, done := r.wrote.sent[k], r.wrote.done[k]
		if len(sent) == 0 {
			continue
		}
		base := passedAt[k-1]
		ph[0] = append(ph[0], float64(slices.MinFunc(sent, time.Time.Compare).Sub(base)))
		ph[1] = append(ph[1], float64(slices.MaxFunc(sent, time.Time.Compare).Sub(base)))
		ph[2] = append(ph[2], float64(slices.MaxFunc(done, time.Time.Compare).Sub(base)))
		ph[3] = append(ph[3], float64(passedAt[k].Sub(base)))
	}
	var took []float64
	for k := 2; k <= steps+1; k++ {
		took = append(took, float64(passedAt[k].Sub(passedAt[k-1])))
	}
	r.step, r.lastStep = time.Duration(median(took)), passedAt[steps+1].Sub(passedAt[steps])
	if sent, done := r.wrote.sent[1], r.wrote.done[1]; len(sent) > 0 {
		r.start = [4]time.Duration{slices.MinFunc(sent, time.Time.Compare).Sub(began), slices.MaxFunc(sent, time.Time.Compare).Sub(began),
			slices.MaxFunc(done, time.Time.Compare).Sub(began), passedAt[1].Sub(began)}
	}
	for i := range ph {
		if len(ph[i]) > 0 {
			r.phases[i] = time.Duration(median(ph[i]))
		}
	}
	if keepalives {
		// The keepalives of N idle workers, one lease each, over a while.
		time.Sleep(keepaliveWindow)
		later, err := scrape(members)
		if err != nil {
			return nil, err
		}
		r.renewals = (later.renewed - after.renewed) / keepaliveWindow.Seconds()
	}
	return r, nil
}

// rolloutProfile is where --cpuprofile writes; rollouts counts the
// rollouts profiled.
var (
	rolloutProfile string
	rollouts       int
)

// profileRollout starts a CPU profile of one of ferry's rollouts if
// --cpuprofile asks for it. The function it returns stops it, and does
// nothing the second time.
func profileRollout(n, steps int) (func(), error) {
	if rolloutProfile == "" {
		return func() {}, nil
	}
	rollouts++
	f, err := os.Create(fmt.Sprintf("%s.%dx%d.%d", rolloutProfile, n, steps, rollouts))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		f.Close()
	}), nil
}
