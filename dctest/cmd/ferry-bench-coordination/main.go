// Command ferry-bench-coordination measures what a rollout's coordination
// costs: it starts a three-member etcd cluster on loopback (fsync on, as in
// production), runs N workers through the real worker code with steps that
// do nothing, coordinated by the updater's barrier coordinator, and prints,
// for each N, the time per step, the whole rollout's time per step, and the
// writes per server per step in the steady state (etcd revisions from the
// first barrier's passing to the fleet's completion, the arrival at the
// barrier after the last step), and the puts, transactions and watch events
// of the whole rollout from etcd's /metrics. In the
// same run it measures the limit: each server doing one plain put per step
// and nothing else. `make bench-coordination` runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/ferry-cd/ferry/pkg/worker"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// perClient is how many workers share an etcd client, as if they ran on
// hosts of that many.
const perClient = 25

func main() {
	etcdBin := flag.String("etcd", "", "the ferry-dctest-etcd binary (make bench-coordination builds it)")
	sizes := flag.String("servers", "5,100,1000", "fleet sizes, comma-separated")
	steps := flag.Int("steps", 10, "lockstep steps per rollout")
	flag.Parse()
	if *etcdBin == "" {
		fail(fmt.Errorf("--etcd is required"))
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("--servers: %q is not a size", f))
		}
		ns = append(ns, n)
	}
	dir, err := os.MkdirTemp("", "ferry-bench-coordination-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	members, err := harness.StartEtcdCluster(harness.EtcdOptions{Dir: dir, Bin: *etcdBin, Members: 3, Fsync: true})
	if err != nil {
		fail(err)
	}
	defer func() {
		for _, m := range members {
			m.Kill()
		}
	}()
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, m.ClientURL)
	}
	fmt.Printf("3-member etcd cluster on loopback, fsync on; %d lockstep steps that do nothing; %d workers per etcd client; alive lease %s, keepalives counted over %s idle\n\n", *steps, perClient, leaseTTL, keepaliveWindow)
	fmt.Println("| servers | ferry ms/step | rollout/steps | limit ms/step | ratio | writes/server/step | puts/server/step, whole rollout | txns/server/step | watch events/step | events/server/step | lease keepalives/s |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, n := range ns {
		limit, err := runLimit(endpoints, n, *steps)
		if err != nil {
			fail(err)
		}
		r, err := runFerry(endpoints, members, n, *steps)
		if err != nil {
			fail(err)
		}
		fmt.Printf("| %d | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.0f | %.2f | %.0f |\n", n, ms(r.perStep), ms(r.rollout), ms(limit), float64(r.perStep)/float64(limit),
			r.writes/float64(n**steps), r.puts/float64(n**steps), r.txns/float64(n**steps), r.events/float64(*steps), r.events/float64(n**steps), r.renewals)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ferry-bench-coordination:", err)
	os.Exit(1)
}

func clients(endpoints []string, n int) ([]*clientv3.Client, error) {
	var out []*clientv3.Client
	for i := 0; i < (n+perClient-1)/perClient; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func closeAll(cs []*clientv3.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// runLimit is the reference: each of n servers puts one key per step, all
// at once, and the step ends when every put returned.
func runLimit(endpoints []string, n, steps int) (time.Duration, error) {
	cs, err := clients(endpoints, n)
	if err != nil {
		return 0, err
	}
	defer closeAll(cs)
	ctx := context.Background()
	prefix := fmt.Sprintf("/limit/%d/%d/", n, time.Now().UnixNano())
	began := time.Now()
	for s := 0; s < steps; s++ {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := cs[i/perClient].Put(ctx, fmt.Sprintf("%s%04d", prefix, i), strconv.Itoa(s)); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return time.Since(began) / time.Duration(steps), nil
}

type result struct {
	perStep, rollout                     time.Duration
	writes, puts, txns, events, renewals float64
}

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

func runFerry(endpoints []string, members []*harness.EtcdMember, n, steps int) (*result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := clients(endpoints, n+1)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	prefix := fmt.Sprintf("/bench/%d/%d/", n, time.Now().UnixNano())
	admin, err := storage.New(cs[len(cs)-1], prefix)
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
	after, err := scrape(members)
	if err != nil {
		return nil, err
	}
	// The keepalives of N idle workers, one lease each, over a while.
	time.Sleep(keepaliveWindow)
	later, err := scrape(members)
	if err != nil {
		return nil, err
	}
	renewals := (later.renewed - after.renewed) / keepaliveWindow.Seconds()
	return &result{
		perStep: passedAt[steps+1].Sub(passedAt[1]) / time.Duration(steps),
		rollout: done.Sub(began) / time.Duration(steps),
		// Every write is a revision of its own: from the first barrier's
		// passing to the completion, the writes of the steady state.
		writes:   float64(passedRev[steps+1] - passedRev[1]),
		puts:     after.puts - before.puts,
		txns:     after.txns - before.txns,
		events:   after.events - before.events - float64(rw.Events()),
		renewals: renewals,
	}, nil
}

type counts struct{ puts, txns, events, renewed float64 }

// scrape reads the counters of every member: puts and transactions are
// applied by every member, so the largest count is the cluster's; watch
// events are sent by the member each watcher is connected to, so they add
// up.
func scrape(members []*harness.EtcdMember) (counts, error) {
	var c counts
	for _, m := range members {
		resp, err := http.Get(m.ClientURL + "/metrics")
		if err != nil {
			return c, err
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			name, value, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			switch name {
			case "etcd_mvcc_put_total":
				c.puts = max(c.puts, v)
			case "etcd_mvcc_txn_total":
				c.txns = max(c.txns, v)
			case "etcd_debugging_mvcc_events_total":
				c.events += v
			case "etcd_debugging_lease_renewed_total":
				// Counted by the raft leader alone.
				c.renewed += v
			}
		}
		resp.Body.Close()
	}
	return c, nil
}
