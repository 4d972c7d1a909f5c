package dctest

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/stretchr/testify/require"
)

// Scenarios run side by side. Each brings up a datacenter of its own
// (its own directories, ports, etcd cluster and, for machine scenarios, a
// lab network whose names carry a number of their own), so they share
// nothing but the packages TestMain built, the machines' base image and
// the layer with N installed.
//
// How many run at once is a budget of slots, FERRY_DCTEST_PARALLEL (4 by
// default, which fits 2 cores: a datacenter mostly waits on its leases,
// steps and etcd). A scenario takes one slot, or the whole budget when it
// must have the machine to itself. Waiting scenarios start longest first,
// by the time each took when last measured (the table below), so that the
// run does not end on a long one started late.

// parallelEnv sets the budget; 1 runs the scenarios one after another.
const parallelEnv = "FERRY_DCTEST_PARALLEL"

// scenario is what the scheduler knows of a scenario before it runs.
type scenario struct {
	// took is its time when it ran alone on 2 cores (a run with
	// FERRY_DCTEST_PARALLEL=1, 2026-12-06); only the order depends on it.
	took time.Duration
	// alone makes it wait until nothing else runs, and run by itself.
	alone bool
}

// scenarios lists every scenario. A new one must be added here: the
// scheduler refuses a name it does not know, so that none runs unplanned.
// Subtests are listed by their parent, each taking the time given; the
// parent must call t.Parallel first, or its subtests wait for ever for
// the scenarios that wait behind it.
var scenarios = map[string]scenario{
	"TestMachinesGitHubUnreachable":           {took: 202 * time.Second},
	"TestChaosRollouts":                       {took: 96 * time.Second},
	"TestMachinesEveryActionUnderTheSandbox":  {took: 67 * time.Second},
	"TestMachinesRebootMidRollout":            {took: 58 * time.Second},
	"TestMachinesSelfUpgradeUnderSystemd":     {took: 52 * time.Second},
	"TestMachinesPartitionedLeader":           {took: 45 * time.Second},
	"TestMachinesPartitionedServer":           {took: 40 * time.Second},
	"TestStatusPageInBrowser":                 {took: 40 * time.Second},
	"TestHealthFailureRollsBack":              {took: 35 * time.Second},
	"TestMachinesWorkerKilledDuringDpkg":      {took: 34 * time.Second},
	"TestWorkerKilledDuringDpkg":              {took: 26 * time.Second},
	"TestMaxFailuresTolerated":                {took: 26 * time.Second},
	"TestReleasesTheFleetMustNotTake":         {took: 25 * time.Second},
	"TestDeadServerStopsTheFleetThenRecover":  {took: 23 * time.Second},
	"TestGitHubFlakyDuringRollout":            {took: 23 * time.Second},
	"TestEtcdLeaderKilledDuringRollout":       {took: 22 * time.Second},
	"TestTestBuildCannotBePromotedWithoutKey": {took: 22 * time.Second},
	"TestSelectorAndRackSpread":               {took: 22 * time.Second},
	"TestStepRetriesTransientFailure":         {took: 21 * time.Second},
	"TestCanaryPausesThenResumes":             {took: 20 * time.Second},
	"TestEtcdClientCertRequired":              {took: 18 * time.Second},
	"TestEtcdMemberDown":                      {took: 18 * time.Second},
	"TestWorkerKilledMidStep":                 {took: 17 * time.Second},
	"TestUpdaterLeaderKilled":                 {took: 17 * time.Second},
	"TestBootstrapAndUpgrade":                 {took: 16 * time.Second},
	"TestJoinReconfigures":                    {took: 14 * time.Second},
	"TestExpiredManifestRefused":              {took: 13 * time.Second},
	"TestTamperedReleasesAreNeverInstalled":   {took: 11 * time.Second},
	"TestTrustRootIsLocal":                    {took: 11 * time.Second},
	"TestOversizedAssetRefused":               {took: 11 * time.Second},
	"TestDowngradeBeyondPreviousRefused":      {took: 10 * time.Second},
	"TestFirstInstallFromPackage":             {took: 7 * time.Second},
}

// runs is the run's scheduler.
var runs = newScheduler(parallelism())

// parallelism is the budget the environment asks for, 4 by default; a
// value that is not a whole number of at least 1 stops the run, saying so.
func parallelism() int {
	v := os.Getenv(parallelEnv)
	if v == "" {
		return 4
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "%s=%q: want how many scenarios run at once, 1 or more (1 runs them one after another); unset it for 4\n", parallelEnv, v)
		os.Exit(2)
	}
	return n
}

// unlimitGoParallel lifts go test's own limit on parallel tests (GOMAXPROCS
// by default), which would otherwise cap the budget, unless -parallel was
// given. TestMain calls it before the tests run.
func unlimitGoParallel() {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", "64")
	}
}

// scheduler hands out the budget's slots.
type scheduler struct {
	mu    sync.Mutex
	slots int
	free  int
	// registered counts the scenarios that said they will run; queued
	// those that then came back from t.Parallel and wait for a slot.
	// Nothing starts until every registered one has queued, so that the
	// first slots go to the longest, not to whichever came back first.
	registered, queued int
	waiting            []*ticket
}

type ticket struct {
	need  int
	took  time.Duration
	ready chan struct{}
}

func newScheduler(slots int) *scheduler {
	return &scheduler{slots: slots, free: slots}
}

// run makes t a parallel scenario and returns once a slot is its own; the
// slot is given back when t ends. Call it first thing in a scenario (the
// start helpers do).
func (s *scheduler) run(t *testing.T) {
	t.Helper()
	name, _, _ := strings.Cut(t.Name(), "/")
	sc, ok := scenarios[name]
	if !ok {
		t.Fatalf("%s is not in dctest's scenarios table (schedule_test.go): add it, with its time", name)
	}
	need := 1
	if sc.alone {
		need = s.slots
	}
	s.mu.Lock()
	s.registered++
	s.mu.Unlock()
	t.Parallel()
	tk := &ticket{need: need, took: sc.took, ready: make(chan struct{})}
	queued := time.Now()
	s.mu.Lock()
	s.queued++
	s.waiting = append(s.waiting, tk)
	s.grant()
	s.mu.Unlock()
	<-tk.ready
	// internal/testtimes subtracts this from the test's time.
	t.Logf("waited %s for a slot", time.Since(queued).Round(time.Millisecond))
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.free += tk.need
		s.grant()
	})
}

// grant starts waiting scenarios, longest first, while slots are free. A
// scenario that needs more slots than are free holds the ones behind it
// back, so that one that runs alone is not starved. s.mu is held.
func (s *scheduler) grant() {
	if s.queued < s.registered {
		return
	}
	sort.SliceStable(s.waiting, func(i, j int) bool { return s.waiting[i].took > s.waiting[j].took })
	for len(s.waiting) > 0 {
		tk := s.waiting[0]
		if tk.need > s.free {
			return
		}
		s.free -= tk.need
		s.waiting = s.waiting[1:]
		close(tk.ready)
	}
}

// within is how long a scenario waits for something that takes d on an
// idle machine: d stretched by FERRY_DCTEST_SCALE.
func within(d time.Duration) time.Duration { return harness.Scaled(d) }

// TestSchedulerGrantsLongestFirst checks the scheduler's order: nothing
// starts before every registered scenario queued, the longest go first,
// and one that runs alone holds back those behind it until it has the
// whole budget.
func TestSchedulerGrantsLongestFirst(t *testing.T) {
	started := func(tks ...*ticket) []bool {
		var got []bool
		for _, tk := range tks {
			select {
			case <-tk.ready:
				got = append(got, true)
			default:
				got = append(got, false)
			}
		}
		return got
	}
	newTicket := func(took time.Duration, need int) *ticket {
		return &ticket{need: need, took: took, ready: make(chan struct{})}
	}
	s := newScheduler(2)
	short, long, middle := newTicket(10*time.Second, 1), newTicket(30*time.Second, 1), newTicket(20*time.Second, 1)
	s.registered = 3
	s.queued, s.waiting = 2, []*ticket{short, long}
	s.grant()
	require.Equal(t, []bool{false, false}, started(short, long), "one registered scenario has not queued yet")
	s.queued, s.waiting = 3, append(s.waiting, middle)
	s.grant()
	require.Equal(t, []bool{false, true, true}, started(short, long, middle), "the two longest first")
	s.free++
	s.grant()
	require.Equal(t, []bool{true}, started(short))

	s = newScheduler(2)
	s.registered, s.queued, s.free = 2, 2, 1 // one slot is taken
	alone, quick := newTicket(50*time.Second, 2), newTicket(5*time.Second, 1)
	s.waiting = []*ticket{quick, alone}
	s.grant()
	require.Equal(t, []bool{false, false}, started(alone, quick), "the one that runs alone waits for the whole budget, and nothing passes it")
	s.free++
	s.grant()
	require.Equal(t, []bool{true, false}, started(alone, quick))
	s.free += 2
	s.grant()
	require.Equal(t, []bool{true}, started(quick))
}
