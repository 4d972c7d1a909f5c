// Command ferry-bench-coordination measures what a rollout's coordination
// costs. It starts a three-member etcd cluster on loopback (fsync on, as
// in production) and, for each fleet size N and plan length S, runs
// several rounds of, one after another on the same cluster:
//
//   - the limit: each of N servers doing one plain put of one byte per
//     step and nothing else;
//   - ferry: N workers through the real worker code, steps that do
//     nothing, coordinated by the updater's barrier coordinator;
//   - the payload-matched limit: the same puts carrying as many bytes as
//     a status report of ferry's did, on average, in that round;
//   - neco's barrier (neco.go), which the workers of cybozu-go/neco use.
//
// It prints the median and the range of each over the rounds, the ratios
// of each round's pair, the bytes ferry's workers wrote, and etcd's
// counts. `make bench-coordination` runs it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// perClient is how many workers share an etcd client, as if they ran on
// hosts of that many.
const perClient = 25

// shared is how many clients n workers share.
func shared(n int) int { return (n + perClient - 1) / perClient }

func main() {
	etcdBin := flag.String("etcd", "", "the ferry-dctest-etcd binary (make bench-coordination builds it)")
	sizes := flag.String("servers", "5,100,1000", "fleet sizes, comma-separated")
	plans := flag.String("steps", "10,30", "lockstep steps per rollout, comma-separated")
	rounds := flag.Int("rounds", 3, "rounds per size and plan: each runs the limit, ferry, the payload-matched limit, the bare barrier and neco once")
	necoRounds := flag.Int("neco-rounds", -1, "rounds that also run neco's barrier (-1: every round below 1000 servers, the first at 1000 and more, where it takes 3 s a step)")
	flag.StringVar(&rolloutProfile, "cpuprofile", "", "write the benchmark process's CPU profile (workers, coordinator, clients) during each of ferry's rollouts, from the request to the completion, to this file name with .<servers>x<steps>.<n> appended")
	memProfile := flag.String("memprofile", "", "write the benchmark process's allocations to this file at the end")
	flag.Parse()
	if *etcdBin == "" {
		fail(fmt.Errorf("--etcd is required"))
	}
	ns, err := ints("--servers", *sizes)
	if err != nil {
		fail(err)
	}
	ss, err := ints("--steps", *plans)
	if err != nil {
		fail(err)
	}
	if *rounds < 1 {
		fail(fmt.Errorf("--rounds must be at least 1"))
	}
	necoIn := func(n int) int {
		switch {
		case *necoRounds >= 0:
			return min(*necoRounds, *rounds)
		case n >= 1000:
			return 1
		}
		return *rounds
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
	load := loadAverage()
	fmt.Printf("3-member etcd cluster on loopback, fsync on; lockstep steps that do nothing; %d workers per etcd client; %d rounds; load average %s before\n\n", perClient, *rounds, load)

	// The first puts after the cluster starts are slower: one round of
	// the largest limit warms it up, and is not counted.
	if _, err := runLimit(endpoints, members, slices.Max(ns), 3, 1); err != nil {
		fail(err)
	}
	var cells []*cell
	for _, n := range ns {
		for _, s := range ss {
			cells = append(cells, &cell{n: n, steps: s})
		}
	}
	for _, n := range ns {
		for round := range *rounds {
			for _, c := range cells {
				if c.n != n {
					continue
				}
				if err := c.round(endpoints, members, round == 0 && c.steps == ss[0], round < necoIn(c.n)); err != nil {
					fail(err)
				}
				fmt.Fprintf(os.Stderr, "%d servers, %d steps, round %d: ferry %.1f ms/step, limit %.1f, payload-matched limit %.1f, bare barrier %.1f%s\n",
					c.n, c.steps, round+1, ms(last(c.ferry)), ms(last(c.limit)), ms(last(c.payload)), ms(last(c.bare)), c.necoNote())
			}
		}
	}
	printTables(cells, ss)
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			fail(err)
		}
		f.Close()
	}
	fmt.Printf("\nload average %s after\n", loadAverage())
}

// cell is one fleet size and plan length, over the rounds.
type cell struct {
	n, steps                    int
	ferry, limit, payload, neco []time.Duration
	bare                        []time.Duration
	rollout                     []time.Duration
	runs                        []*ferryRun
	limits, bares               []*limitRun
	renewals                    float64
}

func (c *cell) round(endpoints []string, members []*harness.EtcdMember, keepalives, neco bool) error {
	limit, err := runLimit(endpoints, members, c.n, c.steps, 1)
	if err != nil {
		return err
	}
	r, err := runFerry(endpoints, members, c.n, c.steps, keepalives)
	if err != nil {
		return err
	}
	size := max(1, int(r.wrote.meanStatus()+0.5))
	payload, err := runLimit(endpoints, members, c.n, c.steps, size)
	if err != nil {
		return err
	}
	bare, err := runBare(endpoints, members, c.n, c.steps)
	if err != nil {
		return err
	}
	c.limit, c.ferry, c.payload = append(c.limit, limit.perStep), append(c.ferry, r.perStep), append(c.payload, payload.perStep)
	c.bare, c.bares = append(c.bare, bare.perStep), append(c.bares, bare)
	c.limits = append(c.limits, limit)
	c.rollout, c.runs = append(c.rollout, r.rollout), append(c.runs, r)
	if keepalives {
		c.renewals = r.renewals
	}
	if neco {
		d, err := runNeco(endpoints, c.n, c.steps)
		if err != nil {
			return err
		}
		c.neco = append(c.neco, d)
	}
	return nil
}

func (c *cell) necoNote() string {
	if len(c.neco) < len(c.ferry) {
		return ""
	}
	return fmt.Sprintf(", neco %.1f", ms(last(c.neco)))
}

func printTables(cells []*cell, plans []int) {
	fmt.Println("Time per step (median, and the range over the rounds, in ms); ratios are each round's ferry over that round's reference, median and range:")
	fmt.Println()
	fmt.Println("| servers | steps | ferry ms/step | limit (1 byte) | ferry ÷ limit | limit (a status's bytes) | ferry ÷ it | neco | ferry ÷ neco | rollout/steps |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range cells {
		nc := "–"
		nr := "–"
		if len(c.neco) > 0 {
			nc = spread(c.neco)
			nr = ratios(c.ferry[:len(c.neco)], c.neco)
		}
		fmt.Printf("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.n, c.steps, spread(c.ferry), spread(c.limit), ratios(c.ferry, c.limit),
			spread(c.payload), ratios(c.ferry, c.payload), nc, nr, spread(c.rollout))
	}
	fmt.Println()
	fmt.Println("The protocol's floor: a bare barrier, ferry's protocol with nothing else (each server puts its step number and waits for a watch event; a coordinator counts through one watch per 64 servers), in the same rounds:")
	fmt.Println()
	fmt.Println("| servers | steps | bare barrier ms/step | bare ÷ limit | ferry ÷ bare | CPU µs/server/step, etcd | CPU, bench process | etcd WAL syncs/step: limit, bare, ferry |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, c := range cells {
		var be, bs, lf, bf, ff []float64
		for i, b := range c.bares {
			be, bs = append(be, float64(b.cpu.etcd)/float64(time.Microsecond)), append(bs, float64(b.cpu.self)/float64(time.Microsecond))
			lf, bf, ff = append(lf, c.limits[i].fsyncs), append(bf, b.fsyncs), append(ff, c.runs[i].fsyncs)
		}
		fmt.Printf("| %d | %d | %s | %s | %s | %.0f | %.0f | %.0f, %.0f, %.0f |\n", c.n, c.steps, spread(c.bare), ratios(c.bare, c.limit), ratios(c.ferry, c.bare),
			median(be), median(bs), median(lf), median(bf), median(ff))
	}
	fmt.Println()
	fmt.Println("What ferry's workers wrote and what etcd counted, medians over the rounds:")
	fmt.Println()
	fmt.Println("| servers | steps | bytes/server/step | bytes/write (values) | mean status bytes | arrival at step 1, S: status bytes | the write carrying it, at 2 and S | writes/server/step | puts/server/step, whole rollout | txns/server/step | watch events/step | events/server/step |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range cells {
		f := func(v func(r *ferryRun) float64) float64 {
			var xs []float64
			for _, r := range c.runs {
				xs = append(xs, v(r))
			}
			return median(xs)
		}
		per := float64(c.n * c.steps)
		fmt.Printf("| %d | %d | %.0f | %.0f | %.0f | %.0f, %.0f | %.0f, %.0f | %.2f | %.2f | %.2f | %.0f | %.2f |\n", c.n, c.steps,
			f(func(r *ferryRun) float64 { return float64(r.wrote.bytes) / per }),
			f(func(r *ferryRun) float64 { return float64(r.wrote.values) / float64(r.wrote.writes) }),
			f(func(r *ferryRun) float64 { return r.wrote.meanStatus() }),
			f(func(r *ferryRun) float64 { return r.wrote.arrival[1] }), f(func(r *ferryRun) float64 { return r.wrote.arrival[c.steps] }),
			f(func(r *ferryRun) float64 { return r.wrote.arrivalWrite[min(2, c.steps)] }), f(func(r *ferryRun) float64 { return r.wrote.arrivalWrite[c.steps] }),
			f(func(r *ferryRun) float64 { return float64(r.writes) / per }), f(func(r *ferryRun) float64 { return r.puts / per }),
			f(func(r *ferryRun) float64 { return r.txns / per }), f(func(r *ferryRun) float64 { return r.events / float64(c.steps) }),
			f(func(r *ferryRun) float64 { return r.events / per }))
	}
	fmt.Println()
	fmt.Println("CPU per server and step (µs, medians over the rounds; ferry's from the request to the completion, the start included):")
	fmt.Println()
	fmt.Println("| servers | steps | etcd's members, ferry | etcd's members, limit | ferry's workers and coordinator | the limit's clients |")
	fmt.Println("|---|---|---|---|---|---|")
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	for _, c := range cells {
		var fe, fs, le, ls []float64
		for i, r := range c.runs {
			fe, fs = append(fe, us(r.cpu.etcd)), append(fs, us(r.cpu.self))
			le, ls = append(le, us(c.limits[i].cpu.etcd)), append(ls, us(c.limits[i].cpu.self))
		}
		fmt.Printf("| %d | %d | %.0f | %.0f | %.0f | %.0f |\n", c.n, c.steps, median(fe), median(le), median(fs), median(ls))
	}
	fmt.Println()
	printPhases(cells, "Where a ferry step's time goes, from a barrier's passing as a spectator worker saw it (ms, medians over the steps, then over the rounds):",
		"next barrier passed", func(r *ferryRun) [4]time.Duration { return r.phases })
	fmt.Println("ferry's median step, and its last step, from barrier S to the completion, whose reports carry every step record of the rollout (ms, medians over the rounds):")
	fmt.Println()
	fmt.Println("| servers | steps | median step | last step |")
	fmt.Println("|---|---|---|---|")
	for _, c := range cells {
		var med, lst []float64
		for _, r := range c.runs {
			med, lst = append(med, ms(r.step)), append(lst, ms(r.lastStep))
		}
		fmt.Printf("| %d | %d | %.1f | %.1f |\n", c.n, c.steps, median(med), median(lst))
	}
	fmt.Println()
	printPhases(cells, "The start: the same for barrier 1, from the request's write (ms, medians over the rounds):",
		"barrier 1 passed", func(r *ferryRun) [4]time.Duration { return r.start })
	fmt.Println()
	if len(plans) > 1 {
		fmt.Printf("ferry ms/step at %d steps over %d steps (medians): ", plans[len(plans)-1], plans[0])
		for _, n := range sizes(cells) {
			var a, b []time.Duration
			for _, c := range cells {
				if c.n == n && c.steps == plans[0] {
					a = c.ferry
				}
				if c.n == n && c.steps == plans[len(plans)-1] {
					b = c.ferry
				}
			}
			fmt.Printf("%d servers %.2f; ", n, float64(medianD(b))/float64(medianD(a)))
		}
		fmt.Println()
	}
	fmt.Print("lease keepalives/s of the idle fleet: ")
	for _, c := range cells {
		if c.steps == plans[0] {
			fmt.Printf("%d servers %.0f; ", c.n, c.renewals)
		}
	}
	fmt.Println()
}

// printPhases prints a table of the four moments of a barrier that of
// picks from each run.
func printPhases(cells []*cell, title, passed string, of func(*ferryRun) [4]time.Duration) {
	fmt.Println(title)
	fmt.Println()
	fmt.Printf("| servers | steps | first arrival sent | last arrival sent | last arrival answered | %s |\n", passed)
	fmt.Println("|---|---|---|---|---|---|")
	for _, c := range cells {
		var ph [4]string
		for i := range ph {
			var xs []float64
			for _, r := range c.runs {
				xs = append(xs, ms(of(r)[i]))
			}
			ph[i] = fmt.Sprintf("%.1f", median(xs))
		}
		fmt.Printf("| %d | %d | %s | %s | %s | %s |\n", c.n, c.steps, ph[0], ph[1], ph[2], ph[3])
	}
	fmt.Println()
}

func sizes(cells []*cell) []int {
	var out []int
	for _, c := range cells {
		if !slices.Contains(out, c.n) {
			out = append(out, c.n)
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func last(ds []time.Duration) time.Duration { return ds[len(ds)-1] }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianD(ds []time.Duration) time.Duration {
	var xs []float64
	for _, d := range ds {
		xs = append(xs, float64(d))
	}
	return time.Duration(median(xs))
}

// spread is "median (min–max)" in ms.
func spread(ds []time.Duration) string {
	if len(ds) == 1 {
		return fmt.Sprintf("%.1f", ms(ds[0]))
	}
	return fmt.Sprintf("%.1f (%.1f–%.1f)", ms(medianD(ds)), ms(slices.Min(ds)), ms(slices.Max(ds)))
}

// ratios is the median and range of a[i]/b[i].
func ratios(a, b []time.Duration) string {
	var xs []float64
	for i := range b {
		xs = append(xs, float64(a[i])/float64(b[i]))
	}
	if len(xs) == 1 {
		return fmt.Sprintf("%.2f", xs[0])
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", median(xs), slices.Min(xs), slices.Max(xs))
}

func ints(flagName, list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive number", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:3], " ")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ferry-bench-coordination:", err)
	os.Exit(1)
}

// clients are count etcd clients; writes through them go into log, if any.
func clients(endpoints []string, count int, log *writeLog) ([]*clientv3.Client, error) {
	var opts []grpc.DialOption
	if log != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(log.intercept))
	}
	var out []*clientv3.Client
	for range count {
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), DialOptions: opts})
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// fleetClients are the clients n servers share, whose writes go into log,
// if any, and one client of their own for the coordinator and whoever
// watches the rollout.
func fleetClients(endpoints []string, n int, log *writeLog) (servers []*clientv3.Client, own *clientv3.Client, err error) {
	if servers, err = clients(endpoints, shared(n), log); err != nil {
		return nil, nil, err
	}
	ours, err := clients(endpoints, 1, nil)
	if err != nil {
		closeAll(servers)
		return nil, nil, err
	}
	return servers, ours[0], nil
}

// eachServer runs f for each of n servers at once and returns the first
// error.
func eachServer(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func closeAll(cs []*clientv3.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// counts are etcd's counters; cpu is the members' CPU seconds, self the
// benchmark process's.
type counts struct{ puts, txns, events, renewed, fsyncs, cpu, self float64 }

// scrape reads the counters of every member: puts and transactions are
// applied by every member, so the largest count is the cluster's; watch
// events are sent by the member each watcher is connected to, so they add
// up.
func scrape(members []*harness.EtcdMember) (counts, error) {
	var c counts
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
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
			case "etcd_disk_wal_fsync_duration_seconds_count":
				// Each member syncs its own WAL.
				c.fsyncs += v
			case "process_cpu_seconds_total":
				c.cpu += v
			case "etcd_debugging_lease_renewed_total":
				// Counted by the raft leader alone.
				c.renewed += v
			}
		}
		resp.Body.Close()
	}
	return c, nil
}
