package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// arrive reports that id reached barrier k of req.
func arrive(t testing.TB, ctx context.Context, st *Storage, req *fleet.UpdateRequest, id string, k int) {
	t.Helper()
	require.NoError(t, st.PutStatus(ctx, id, &fleet.UpdateStatus{Version: req.Version, Rollout: req.StartedAt, Step: k, Phase: fleet.PhaseWaiting, Cond: fleet.CondRunning, UpdatedAt: time.Now()}))
}

// TestBarrier: a small fleet counts its arrivals itself; a larger one is
// counted by the coordinator, which writes status/passed, fenced on the
// leader key.
func TestBarrier(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, fleet.LocalBarrier + 1} {
		t.Run(fmt.Sprintf("servers=%d", n), func(t *testing.T) {
			t.Parallel()
			testBarrier(t, n)
		})
	}
}

func testBarrier(t *testing.T, n int) {
	coordinated := n > fleet.LocalBarrier
	st := newTestStorage(t)
	ctx := testContext(t)
	elec := campaign(t, ctx, st)
	servers := []string{"a", "b"}
	for i := 2; i < n; i++ {
		servers = append(servers, fmt.Sprintf("f%d", i))
	}
	req := &fleet.UpdateRequest{Version: "1", Servers: servers, StartedAt: time.Now().UTC()}
	require.NoError(t, st.AsLeader(elec.Key()).StartRequest(ctx, req))
	cctx, stopCoordinator := context.WithCancel(ctx)
	defer stopCoordinator()
	coordinatorDone := make(chan error, 1)
	go func() { coordinatorDone <- st.AsLeader(elec.Key()).Coordinate(cctx, req) }()
	// Every other server is at step 2 already.
	for _, id := range servers[2:] {
		arrive(t, ctx, st, req, id, 2)
	}

	rw, err := st.WatchRollout(ctx, req)
	require.NoError(t, err)
	defer rw.Close()
	arrive(t, ctx, st, req, "a", 1)
	got := make(chan BarrierResult, 1)
	go func() {
		r, err := rw.Wait(ctx, 1)
		if err == nil {
			got <- r
		}
	}()
	snap, err := st.Snapshot(ctx)
	require.NoError(t, err)
	require.Nil(t, snap.Passed, "passed without b")
	select {
	case <-got:
		t.Fatal("passed the barrier without b")
	default:
	}
	arrive(t, ctx, st, req, "b", 1)
	select {
	case r := <-got:
		require.Equal(t, BarrierPassed, r)
	case <-ctx.Done():
		t.Fatal("a never passed")
	}
	snap, err = st.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, &fleet.Passed{Rollout: req.StartedAt, Step: 1}, snap.Passed, "written by the coordinator, or counted by the snapshot")

	// A late status about another rollout does not count.
	require.NoError(t, st.PutStatus(ctx, "a", &fleet.UpdateStatus{Version: "1", Rollout: req.StartedAt.Add(-time.Hour), Step: 5, Phase: fleet.PhaseWaiting}))
	arrive(t, ctx, st, req, "b", 2)

	// A stop ends the wait of step 2.
	go func() {
		r, err := rw.Wait(ctx, 2)
		if err == nil {
			got <- r
		}
	}()
	req.Stop = true
	require.NoError(t, putRequest(ctx, st.AsLeader(elec.Key()), req))
	select {
	case r := <-got:
		require.Equal(t, BarrierGone, r)
	case <-ctx.Done():
		t.Fatal("the stop did not end the wait")
	}
	if !coordinated {
		return
	}
	snap, err = st.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, snap.Passed.Step, "a's late status did not pass step 2")

	// Fenced: a coordinator that lost the lead writes nothing, and says so.
	oldKey := elec.Key()
	require.NoError(t, elec.Resign(ctx))
	req2 := &fleet.UpdateRequest{Version: "1", Servers: servers, StartedAt: time.Now().UTC()}
	elec2 := campaign(t, ctx, st)
	require.NoError(t, st.AsLeader(elec2.Key()).StartRequest(ctx, req2))
	stopCoordinator()
	<-coordinatorDone
	for _, id := range servers {
		arrive(t, ctx, st, req2, id, 1)
	}
	require.ErrorIs(t, st.AsLeader(oldKey).Coordinate(ctx, req2), ErrNoLeader, "after the arrivals it must try to write")
}

// TestBarrierRandomized interleaves arrivals, worker deaths and restarts
// (a restarted worker opens a new watch and arrives again), restarts of the
// coordinator (a change of updater leader) and a stop followed by a resume,
// at random, and checks the barrier's promise: nobody passes barrier k
// before every member has reached it, and once all have, all pass.
// FERRY_BARRIER_SEED replays a run.
func TestBarrierRandomized(t *testing.T) {
	t.Parallel()
	for _, members := range []int{6, fleet.LocalBarrier + 4} {
		t.Run(fmt.Sprintf("servers=%d", members), func(t *testing.T) {
			t.Parallel()
			testBarrierRandomized(t, members)
		})
	}
}

func testBarrierRandomized(t *testing.T, members int) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FERRY_BARRIER_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
	}
	t.Logf("seed %d (FERRY_BARRIER_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	st := newTestStorage(t)
	// A coordinated fleet's statuses come through several watches.
	st.arrivalsPerWatch = 3
	ctx := testContext(t)
	elec := campaign(t, ctx, st)

	const steps = 8
	ids := make([]string, members)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%d", i)
	}
	var (
		mu      sync.Mutex
		reached = map[string]int{} // what each member reported
	)
	type plan struct {
		delays []time.Duration // before each arrival
		dieAt  int             // the barrier before which it dies (0: never)
	}
	runRollout := func(req *fleet.UpdateRequest, from map[string]int, stopAt int) map[string]int {
		// The coordinator restarts now and then, as a change of leader would.
		cctx, cancel := context.WithCancel(ctx)
		var cwg sync.WaitGroup
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for cctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(cctx, time.Duration(50+rng.IntN(300))*time.Millisecond)
				st.AsLeader(elec.Key()).Coordinate(rctx, req)
				rcancel()
			}
		}()
		plans := map[string]plan{}
		for _, id := range ids {
			p := plan{}
			for range steps + 1 {
				p.delays = append(p.delays, time.Duration(rng.IntN(20))*time.Millisecond)
			}
			if rng.IntN(3) == 0 {
				p.dieAt = 1 + rng.IntN(steps)
			}
			plans[id] = p
		}
		var wg sync.WaitGroup
		out := make(map[string]int, members)
		var outMu sync.Mutex
		errs := make(chan error, members*members*(steps+2))
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := plans[id]
				k := max(from[id], 1)
				rw, err := st.WatchRollout(ctx, req)
				if err != nil {
					errs <- err
					return
				}
				defer func() { rw.Close() }()
				for ; k <= steps; k++ {
					time.Sleep(p.delays[k])
					mu.Lock()
					reached[id] = max(reached[id], k)
					mu.Unlock()
					if k == p.dieAt {
						// Dies after arriving, restarts a while later with a
						// new watch, and arrives again.
						arrive(t, ctx, st, req, id, k)
						rw.Close()
						time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
						if rw, err = st.WatchRollout(ctx, req); err != nil {
							errs <- err
							return
						}
					}
					arrive(t, ctx, st, req, id, k)
					res, err := rw.Wait(ctx, k)
					if err != nil {
						errs <- err
						return
					}
					if res == BarrierGone {
						outMu.Lock()
						out[id] = k
						outMu.Unlock()
						return
					}
					mu.Lock()
					for _, other := range ids {
						if reached[other] < k {
							errs <- fmt.Errorf("%s passed barrier %d while %s had reached %d", id, k, other, reached[other])
						}
					}
					mu.Unlock()
					if k == stopAt && id == ids[0] {
						stopped := *req
						stopped.Stop = true
						if err := putRequest(ctx, st.AsLeader(elec.Key()), &stopped); err != nil {
							errs <- err
						}
					}
				}
				outMu.Lock()
				out[id] = steps + 1
				outMu.Unlock()
			}()
		}
		wg.Wait()
		cancel()
		cwg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		return out
	}

	req := &fleet.UpdateRequest{Version: "1", Servers: ids, StartedAt: time.Now().UTC()}
	require.NoError(t, st.AsLeader(elec.Key()).StartRequest(ctx, req))
	stopAt := 1 + rng.IntN(steps-1)
	where := runRollout(req, nil, stopAt)
	for id, k := range where {
		require.LessOrEqual(t, k, stopAt+1, "%s went on past the stop", id)
	}

	// Resume: a new request; every member starts where it stopped.
	mu.Lock()
	clear(reached)
	mu.Unlock()
	req2 := &fleet.UpdateRequest{Version: "1", Servers: ids, StartedAt: time.Now().UTC()}
	require.NoError(t, st.AsLeader(elec.Key()).StartRequest(ctx, req2))
	done := runRollout(req2, where, -1)
	for _, id := range ids {
		require.Equal(t, steps+1, done[id], "%s finished", id)
	}
}

// TestBarrierGoesOnWithoutAFailedServer: when the leader revises the
// request to go on without a server, no barrier waits for it any more, in
// a small fleet that counts itself and in a coordinated one (whose leader
// starts its coordinator again with the revised request).
func TestBarrierGoesOnWithoutAFailedServer(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, fleet.LocalBarrier + 1} {
		t.Run(fmt.Sprintf("servers=%d", n), func(t *testing.T) {
			t.Parallel()
			st := newTestStorage(t)
			ctx := testContext(t)
			elec := campaign(t, ctx, st)
			servers := []string{"dead"}
			for i := 1; i < n; i++ {
				servers = append(servers, fmt.Sprintf("s%02d", i))
			}
			req := &fleet.UpdateRequest{Version: "1", Servers: servers, StartedAt: time.Now().UTC()}
			require.NoError(t, st.AsLeader(elec.Key()).StartRequest(ctx, req))
			arrive(t, ctx, st, req, "dead", 1)
			for _, id := range servers[1:] {
				arrive(t, ctx, st, req, id, 2)
			}
			rw, err := st.WatchRollout(ctx, req)
			require.NoError(t, err)
			defer rw.Close()
			got := make(chan BarrierResult, 1)
			go func() {
				if r, err := rw.Wait(ctx, 2); err == nil {
					got <- r
				}
			}()
			select {
			case <-got:
				t.Fatal("passed barrier 2 while dead was at 1")
			case <-time.After(200 * time.Millisecond):
			}

			_, rev, err := getRequest(ctx, st)
			require.NoError(t, err)
			revised := *req
			revised.Failed = []fleet.FailedServer{{ID: "dead", Step: 1, Reason: "no live worker for 2m", At: time.Now().UTC()}}
			require.NoError(t, st.AsLeader(elec.Key()).ReviseRequest(ctx, &revised, rev))
			require.ErrorIs(t, st.AsLeader(elec.Key()).ReviseRequest(ctx, &revised, rev), ErrConflict, "fenced on the request's revision")
			cctx, stop := context.WithCancel(ctx)
			defer stop()
			go st.AsLeader(elec.Key()).Coordinate(cctx, &revised)
			select {
			case r := <-got:
				require.Equal(t, BarrierPassed, r)
			case <-ctx.Done():
				t.Fatal("the barrier still waits for the failed server")
			}
			require.True(t, rw.Request().IsFailed("dead"))
			snap, err := st.Snapshot(ctx)
			require.NoError(t, err)
			require.Equal(t, fleet.StateFailed, snap.State("dead"))
			require.Equal(t, 2, snap.Passed.Step)
		})
	}
}

// TestCoordinatorFollowsEveryServer: the coordinator of a large fleet
// follows the statuses through several watches; each server in turn is
// the last to arrive at a barrier, and the barrier passes as it arrives,
// whichever of the watches its status comes through.
func TestCoordinatorFollowsEveryServer(t *testing.T) {
	t.Parallel()
	st := newTestStorage(t)
	st.arrivalsPerWatch = 3
	ctx := testContext(t)
	elec := campaign(t, ctx, st)
	var servers []string
	for i := range fleet.LocalBarrier + 4 {
		servers = append(servers, fmt.Sprintf("s%02d", i))
	}
	req := &fleet.UpdateRequest{Version: "1", Servers: servers, StartedAt: time.Now().UTC()}
	require.NoError(t, st.AsLeader(elec.Key()).StartRequest(ctx, req))
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go st.AsLeader(elec.Key()).Coordinate(cctx, req)
	rw, err := st.WatchRollout(ctx, req)
	require.NoError(t, err)
	defer rw.Close()
	for k, last := range servers {
		k++
		for _, id := range servers {
			if id != last {
				arrive(t, ctx, st, req, id, k)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := rw.Wait(wctx, k)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "barrier %d passed without %s", k, last)
		arrive(t, ctx, st, req, last, k)
		wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		res, err := rw.Wait(wctx, k)
		cancel()
		require.NoError(t, err, "barrier %d did not pass when %s arrived last", k, last)
		require.Equal(t, BarrierPassed, res)
	}
}
