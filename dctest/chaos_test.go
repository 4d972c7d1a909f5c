package dctest

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// Chaos settings: FERRY_CHAOS_SEED replays a run, FERRY_CHAOS_ROUNDS sets
// how many rollouts it has (`make chaos` runs many).
const (
	chaosSeedEnv   = "FERRY_CHAOS_SEED"
	chaosRoundsEnv = "FERRY_CHAOS_ROUNDS"
	chaosRounds    = 10
)

// chaosRound is one rollout of a chaos run, as the table prints it.
type chaosRound struct {
	n        int
	target   string
	kills    []string
	took     time.Duration
	recovers int
	result   string
}

// TestChaosRollouts runs rollouts back and forth between N and N1 (a
// publish, then a pin with --allow-downgrade, then an unpin, ...). During
// each, it SIGKILLs at random workers (some while dpkg installs their
// upgrade), the updater leader and an etcd member, which it restarts.
// After each rollout it checks the invariants users rely on: dpkg has
// every server fully installed at the target and nothing left to repair,
// every server ran the plan's last step at the target, the rollout
// completed, history has one record per attempt, and no rollout needed
// more than one `ferry recover` (none at all when only daemons were
// killed).
func TestChaosRollouts(t *testing.T) {
	seed := time.Now().UnixNano()
	if v := os.Getenv(chaosSeedEnv); v != "" {
		var err error
		seed, err = strconv.ParseInt(v, 10, 64)
		require.NoError(t, err, chaosSeedEnv)
	}
	rounds := chaosRounds
	if v := os.Getenv(chaosRoundsEnv); v != "" {
		var err error
		rounds, err = strconv.Atoi(v)
		require.NoError(t, err, chaosRoundsEnv)
	}
	t.Logf("chaos: seed %d, %d rounds (replay: %s=%d)", seed, rounds, chaosSeedEnv, seed)
	rng := rand.New(rand.NewSource(seed))

	d := startFor(t, within(time.Duration(rounds)*3*time.Minute+2*time.Minute))
	var table []chaosRound
	t.Cleanup(func() { printChaosTable(t, seed, table) })
	d.bootstrap("staging", three...)

	records := len(d.history())
	for n := 1; n <= rounds; n++ {
		r := chaosRound{n: n, target: N1, result: "FAILED"}
		began := time.Now()
		switch {
		case n == 1:
			require.NoError(t, d.Publish(N1, harness.PublishOptions{Prerelease: true, CreatedAt: day(2)}))
		case n%2 == 0:
			r.target = N
			d.ferry("release", "pin", N, "--allow-downgrade")
		default:
			d.ferry("release", "unpin")
		}
		table = append(table, r)
		cur := &table[len(table)-1]
		cur.kills = d.chaos(rng, cur.target)
		cur.recovers = d.finishRound(cur.target, cur.kills)
		cur.took = time.Since(began)

		records += 1 + cur.recovers
		d.requireInstalled(cur.target, three...)
		d.requireSound(three...)
		hist := d.history()
		require.Len(t, hist, records, "one history record per attempt")
		require.Equal(t, cur.target, hist[0].Version)
		require.Equal(t, fleet.ResultCompleted, hist[0].Result)
		cur.result = "ok"
		t.Logf("chaos: round %d to %s ok in %s after %v, %d recovers", n, cur.target, cur.took.Round(100*time.Millisecond), cur.kills, cur.recovers)
	}
}

// chaos kills 1 to 3 random things while the rollout to target runs, and
// returns what it killed.
func (d *dc) chaos(rng *rand.Rand, target string) []string {
	d.t.Helper()
	d.waitState(target, "running", "completed", "stopped")
	n := 1 + rng.Intn(3)
	var (
		mu    sync.Mutex
		kills []string
		errs  []error
		wg    sync.WaitGroup
		// One etcd member down at a time: the cluster keeps its quorum.
		etcdDown sync.Mutex
	)
	record := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if what != "" {
			kills = append(kills, what)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for range n {
		kind := rng.Intn(4)
		delay := time.Duration(rng.Intn(8000)) * time.Millisecond
		server := three[rng.Intn(len(three))]
		member := rng.Intn(len(d.Etcd))
		down := time.Duration(500+rng.Intn(3000)) * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch kind {
			case 0:
				if id := d.killWorkerInDpkg(within(20 * time.Second)); id != "" {
					record("worker "+id+" in dpkg", nil)
				}
			case 1:
				time.Sleep(delay)
				if s, err := d.Server(server); err == nil && s.KillWorker() {
					record("worker "+server, nil)
				}
			case 2:
				time.Sleep(delay)
				// Between a kill and the next election no updater leads:
				// then there is nobody to kill.
				if id, _ := d.updaterLeader(); id != "" {
					if s, err := d.Server(id); err == nil && s.KillUpdater() {
						record("updater leader", nil)
					}
				}
			case 3:
				time.Sleep(delay)
				if !etcdDown.TryLock() {
					return
				}
				defer etcdDown.Unlock()
				m := d.Etcd[member]
				m.Kill()
				record("etcd member "+m.Name, nil)
				time.Sleep(down)
				record("", m.Restart())
			}
		}()
	}
	wg.Wait()
	require.NoError(d.t, errors.Join(errs...))
	return kills
}

// killWorkerInDpkg waits until some server's dpkg is in the middle of an
// install of ferry and kills that server's worker; it returns the server,
// or "" when it saw no dpkg run in time.
func (d *dc) killWorkerInDpkg(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		for _, id := range three {
			s, err := d.Server(id)
			if err != nil {
				continue
			}
			if st, err := s.Dpkg(d.ctx, "ferry"); err == nil && !st.Installed() && s.KillWorker() {
				return id
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ""
}

// finishRound waits until the rollout to target completes. A stopped
// rollout is recovered once, and only when an etcd member was among the
// kills; it returns how many recovers were needed.
func (d *dc) finishRound(target string, kills []string) int {
	d.t.Helper()
	recovers := 0
	for {
		s := d.waitState(target, "completed", "stopped")
		if s.State == "completed" {
			return recovers
		}
		etcd := strings.Contains(strings.Join(kills, ","), "etcd")
		require.True(d.t, etcd, "the rollout stopped although only daemons were killed (%v): %s", kills, s.Request.StopReason)
		require.Zero(d.t, recovers, "the rollout stopped again after a recover: %s", s.Request.StopReason)
		recovers++
		d.t.Logf("chaos: the rollout to %s stopped (%s); recovering", target, s.Request.StopReason)
		d.ferry("recover", "--yes")
	}
}

func printChaosTable(t *testing.T, seed int64, table []chaosRound) {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos: seed %d\n", seed)
	fmt.Fprintf(&b, "chaos: %-5s %-13s %-7s %-9s %-18s %s\n", "round", "target", "time", "recovers", "invariants", "kills")
	for _, r := range table {
		kills := strings.Join(r.kills, ", ")
		if kills == "" {
			kills = "-"
		}
		fmt.Fprintf(&b, "chaos: %-5d %-13s %-7s %-9d %-18s %s\n", r.n, r.target, r.took.Round(100*time.Millisecond), r.recovers, r.result, kills)
	}
	t.Log("\n" + b.String())
}
