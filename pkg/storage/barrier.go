package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/retry"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// The lockstep barrier costs one write per server per step. A worker's
// status report "waiting at step k" is its arrival (it also says "done with
// step k-1"); the updater leader follows every status with one watch, and
// when every member of the rollout has reached k it writes status/passed;
// each worker follows status/current and status/passed with one watch that
// stays open for the whole rollout. Nothing is re-read on a wake-up, and
// each server sees one event per step, so the work grows linearly with the
// fleet. A fleet of at most LocalBarrier servers skips the coordinator:
// each worker's one watch also takes in the statuses, and it counts.

// BarrierResult is what a wait at a barrier saw.
type BarrierResult int

// Barrier outcomes.
const (
	BarrierPassed BarrierResult = iota // every server arrived
	BarrierGone                        // the request was stopped, finished or replaced
)

// RolloutWatch follows one rollout's request and its passed barrier.
type RolloutWatch struct {
	s         *Storage
	req       *fleet.UpdateRequest
	startedAt time.Time
	// reached is each member's barrier, for a fleet of at most
	// LocalBarrier servers that counts its arrivals itself; nil otherwise.
	reached *arrivals
	cancel  context.CancelFunc
	wch     clientv3.WatchChan
	// rev is the revision the state below was read at; events at or
	// below it are already counted.
	rev    int64
	passed int
	gone   bool
	// paused: status/pause holds the rollout; resumed: the servers behind
	// a canary may take every step up to it.
	paused  bool
	resumed int
	// events counts the events applied; last is the revision of the last.
	events int
	last   int64
	// requestRev is the revision of the request the watch holds.
	requestRev int64
}

// Events is how many watch events the watch has applied, for benchmarks.
func (rw *RolloutWatch) Events() int { return rw.events }

// Revision is the revision of the last event applied: after Wait passed,
// the write that made it pass.
func (rw *RolloutWatch) Revision() int64 { return rw.last }

// RequestUnchangedUntil is the revision up to which the watch has seen
// that status/current is still the request written at requestRev, or 0
// when it holds another. A worker done with the rollout waits for the
// next request from there: a watch from the rollout's start would make
// etcd read every revision of the rollout again to find none.
func (rw *RolloutWatch) RequestUnchangedUntil(requestRev int64) int64 {
	if rw.requestRev != requestRev {
		return 0
	}
	return max(rw.rev, rw.last)
}

// WatchRollout starts following the rollout of req. Close it when done.
func (s *Storage) WatchRollout(ctx context.Context, req *fleet.UpdateRequest) (*RolloutWatch, error) {
	rw := &RolloutWatch{s: s, req: req, startedAt: req.StartedAt}
	if len(req.Servers) <= fleet.LocalBarrier {
		rw.reached = newArrivals(req.Active())
	}
	if err := rw.open(ctx); err != nil {
		return nil, err
	}
	return rw, nil
}

// WatchRolloutAt is WatchRollout for the request of snap, a snapshot that
// read status/passed, status/pause and status/resume with it. A fleet
// counted by the coordinator starts from what snap read, and reads only
// the revisions of those keys, not their values, unless one changed since:
// a thousand workers that start a rollout do not read the request again.
func (s *Storage) WatchRolloutAt(ctx context.Context, snap *fleet.Snapshot) (*RolloutWatch, error) {
	req := snap.Request
	if len(req.Servers) <= fleet.LocalBarrier {
		return s.WatchRollout(ctx, req)
	}
	rw := &RolloutWatch{s: s, req: req, startedAt: req.StartedAt}
	if err := rw.openAt(ctx, snap); err != nil {
		return nil, err
	}
	return rw, nil
}

// openAt starts the watch at the current revision, and takes the state of
// the keys from snap when none of them changed since snap's revision; it
// reads them all, as open does, when one did.
func (rw *RolloutWatch) openAt(ctx context.Context, snap *fleet.Snapshot) error {
	rev, err := rw.watch(ctx)
	if err != nil {
		return err
	}
	s := rw.s
	resp, err := s.cli.Get(ctx, s.abs(keyCurrent), clientv3.WithRange(s.abs(keyResume)+"\x00"), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
	if err != nil {
		return fmt.Errorf("read the rollout: %w", err)
	}
	now := map[string]int64{}
	for _, kv := range resp.Kvs {
		if rel, ok := strings.CutPrefix(string(kv.Key), s.prefix); ok {
			now[rel] = kv.ModRevision
		}
	}
	// snap read the request at RequestRev, and the other keys at its
	// revision: present (about this rollout) or not.
	changed := now[keyCurrent] != snap.RequestRev
	for k, present := range map[string]bool{keyPassed: snap.Passed != nil, keyPause: snap.Pause != nil, keyResume: snap.Resume != nil} {
		if present {
			changed = changed || now[k] == 0 || now[k] > snap.Revision
		} else {
			changed = changed || now[k] != 0
		}
	}
	if changed {
		return rw.read(ctx)
	}
	rw.rev, rw.passed, rw.paused, rw.resumed = rev, 0, snap.Pause != nil, 0
	rw.requestRev = snap.RequestRev
	if snap.Passed != nil {
		rw.passed = snap.Passed.Step
	}
	if snap.Resume != nil {
		rw.resumed = snap.Resume.Step
	}
	return nil
}

// open starts the watch, then reads both keys. The watch starts at the
// current revision, so etcd serves it from its synced set at once; events
// that the read already reflects are skipped by revision.
func (rw *RolloutWatch) open(ctx context.Context) error {
	if _, err := rw.watch(ctx); err != nil {
		return err
	}
	return rw.read(ctx)
}

// watch starts the watch at the current revision, which it returns.
func (rw *RolloutWatch) watch(ctx context.Context) (int64, error) {
	if rw.cancel != nil {
		rw.cancel()
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.WithoutCancel(ctx)))
	rw.cancel = cancel
	s := rw.s
	// status/current, status/passed, status/pause and status/resume are
	// next to each other, and status/servers/ follows them.
	end := s.abs(keyResume) + "\x00"
	if rw.reached != nil {
		end = clientv3.GetPrefixRangeEnd(s.abs(keyServerStatus))
	}
	rw.wch = s.cli.Watch(wctx, s.abs(keyCurrent), clientv3.WithRange(end), clientv3.WithCreatedNotify())
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case resp, ok := <-rw.wch:
		if !ok {
			return 0, fmt.Errorf("watch the rollout: closed")
		}
		if err := resp.Err(); err != nil {
			return 0, fmt.Errorf("watch the rollout: %w", err)
		}
		return resp.Header.Revision, nil
	}
}

// read reads the keys the watch follows, and takes them as its state.
func (rw *RolloutWatch) read(ctx context.Context) error {
	s := rw.s
	ops := []clientv3.Op{clientv3.OpGet(s.abs(keyCurrent)), clientv3.OpGet(s.abs(keyPassed)), clientv3.OpGet(s.abs(keyPause)), clientv3.OpGet(s.abs(keyResume))}
	if rw.reached != nil {
		rw.reached.reset()
		ops = append(ops, clientv3.OpGet(s.abs(keyServerStatus), clientv3.WithPrefix()))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("read the rollout: %w", err)
	}
	rw.rev = resp.Header.Revision
	rw.paused = false
	cur := resp.Responses[0].GetResponseRange().Kvs
	if len(cur) == 0 {
		rw.gone, rw.requestRev = true, 0
	}
	for i := range resp.Responses {
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			if err := rw.apply(kv, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (rw *RolloutWatch) apply(kv *mvccpb.KeyValue, deleted bool) error {
	k, err := rw.s.readRolloutKey(kv, deleted)
	if err != nil {
		return err
	}
	switch {
	case k.request != nil:
		req := k.request
		rw.requestRev = kv.ModRevision
		if deleted || !req.StartedAt.Equal(rw.startedAt) || req.Stop || req.Finished() {
			rw.gone = true
			return nil
		}
		// The same rollout, revised: the leader gave up on a server.
		rw.req = req
		if rw.reached != nil {
			rw.reached.setMembers(req.Active())
			rw.passed = max(rw.passed, rw.reached.lowest())
		}
	case k.passed != nil:
		if !deleted && k.passed.Rollout.Equal(rw.startedAt) {
			rw.passed = max(rw.passed, k.passed.Step)
		}
	case k.pause != nil:
		rw.paused = !deleted && k.pause.Rollout.Equal(rw.startedAt)
	case k.resume != nil:
		if !deleted && k.resume.Rollout.Equal(rw.startedAt) {
			rw.resumed = max(rw.resumed, k.resume.Step)
		}
	case k.status != nil && rw.reached != nil:
		if deleted {
			rw.reached.set(k.server, 0)
			return nil
		}
		rw.reached.set(k.server, k.status.Reached(rw.req))
		rw.passed = max(rw.passed, rw.reached.lowest())
	}
	return nil
}

// rolloutKey is one key of the range of a rollout's barrier, decoded: the
// value of the kind of key it is, zero when the key was deleted; all nil
// for a key of no such kind.
type rolloutKey struct {
	request *fleet.UpdateRequest
	passed  *fleet.Passed
	pause   *fleet.Pause
	resume  *fleet.Resume
	// server is the id of a status/servers/ key, status what the barrier
	// reads of its status.
	server string
	status *arrival
}

// arrival is what the barrier reads of a server's status: the fields that
// say which barrier it reached, and no others, so that the statuses that a
// coordinator or a small fleet's worker takes in cost little to decode.
type arrival struct {
	Version string     `json:"version"`
	Rollout time.Time  `json:"rollout"`
	Step    int        `json:"step"`
	Cond    fleet.Cond `json:"cond"`
}

// Reached is UpdateStatus.Reached.
func (a *arrival) Reached(req *fleet.UpdateRequest) int {
	st := fleet.UpdateStatus{Version: a.Version, Rollout: a.Rollout, Step: a.Step, Cond: a.Cond}
	return st.Reached(req)
}

// readRolloutKey decodes a key of the range that the barrier's watches
// follow: the one place that reads the barrier's keys.
func (s *Storage) readRolloutKey(kv *mvccpb.KeyValue, deleted bool) (rolloutKey, error) {
	var k rolloutKey
	var v any
	// Cut, not built: a coordinator reads a thousand of these a step.
	rel, ok := strings.CutPrefix(string(kv.Key), s.prefix)
	if !ok {
		return k, nil
	}
	switch rel {
	case keyCurrent:
		k.request = new(fleet.UpdateRequest)
		v = k.request
	case keyPassed:
		k.passed = new(fleet.Passed)
		v = k.passed
	case keyPause:
		k.pause = new(fleet.Pause)
		v = k.pause
	case keyResume:
		k.resume = new(fleet.Resume)
		v = k.resume
	default:
		id, ok := strings.CutPrefix(rel, keyServerStatus)
		if !ok {
			return k, nil
		}
		k.server, k.status = id, new(arrival)
		v = k.status
	}
	if deleted {
		return k, nil
	}
	return k, decode(string(kv.Key), kv.Value, v)
}

// Paused reports whether `ferry rollout pause` holds the rollout.
func (rw *RolloutWatch) Paused() bool { return rw.paused }

// Resumed is the last step whose canary the rollout was resumed after.
func (rw *RolloutWatch) Resumed() int { return rw.resumed }

// Request is the rollout's request as last seen: the leader may revise it
// (Failed) while it runs.
func (rw *RolloutWatch) Request() *fleet.UpdateRequest { return rw.req }

// Wait returns when every server of the rollout has reached barrier k
// (BarrierPassed), or when the request is stopped, finished or replaced
// (BarrierGone). A watch that etcd ends (a leader change, a compaction) is
// opened again, from the state read anew.
func (rw *RolloutWatch) Wait(ctx context.Context, k int) (BarrierResult, error) {
	return rw.WaitFor(ctx, func() bool { return rw.passed >= k })
}

// WaitFor returns BarrierPassed when ok() holds, or BarrierGone when the
// request is stopped, finished or replaced first; ok is asked again after
// every change to the rollout's keys.
func (rw *RolloutWatch) WaitFor(ctx context.Context, ok func() bool) (BarrierResult, error) {
	for {
		if rw.gone {
			return BarrierGone, nil
		}
		if ok() {
			return BarrierPassed, nil
		}
		var (
			resp clientv3.WatchResponse
			ok   bool
		)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case resp, ok = <-rw.wch:
		}
		if !ok || resp.Err() != nil || resp.Canceled {
			if err := rw.reopen(ctx); err != nil {
				return 0, err
			}
			continue
		}
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= rw.rev {
				continue
			}
			rw.events++
			rw.last = ev.Kv.ModRevision
			if err := rw.apply(ev.Kv, ev.Type == clientv3.EventTypeDelete); err != nil {
				return 0, err
			}
		}
	}
}

// reopen opens the watch again after etcd ended it, backing off while etcd
// does not answer.
func (rw *RolloutWatch) reopen(ctx context.Context) error {
	_, err := retry.Do(ctx, retry.Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second}, func() (struct{}, error) {
		return struct{}{}, rw.open(ctx)
	})
	return err
}

// Close ends the watch.
func (rw *RolloutWatch) Close() {
	if rw.cancel != nil {
		rw.cancel()
	}
}

// Coordinate writes status/passed for the running request req whenever
// every member has reached a further barrier (see UpdateStatus.Reached),
// until ctx ends or the write is refused by the leader's fence
// (ErrNoLeader). It reads the statuses once and then follows them, and
// status/passed, with one watch. The write is a compare-and-swap on
// status/passed, so passed never goes back, whoever else writes it.
func (l *Leader) Coordinate(ctx context.Context, req *fleet.UpdateRequest) error {
	s := l.s
	if len(req.Servers) <= fleet.LocalBarrier {
		// Its workers count their arrivals themselves.
		<-ctx.Done()
		return ctx.Err()
	}
	reached := newArrivals(req.Active())
	passed, passedRev := 0, int64(0)
	apply := func(kv *mvccpb.KeyValue, deleted bool) error {
		k, err := s.readRolloutKey(kv, deleted)
		switch {
		case err != nil:
			return err
		case k.passed != nil:
			passedRev = kv.ModRevision
			if deleted {
				passedRev = 0
			} else if k.passed.Rollout.Equal(req.StartedAt) {
				passed = max(passed, k.passed.Step)
			}
		case k.status != nil && deleted:
			reached.set(k.server, 0)
		case k.status != nil:
			reached.set(k.server, k.status.Reached(req))
		}
		return nil
	}

	// A watch that ends is opened again, from the statuses read anew,
	// 200ms later: however long the coordinator ran before.
	_, err := retry.Do(ctx, retry.Policy{Base: 200 * time.Millisecond, Max: 200 * time.Millisecond}, func() (struct{}, error) {
		err := l.coordinate(ctx, req, reached, &passed, &passedRev, apply)
		if errors.Is(err, ErrNoLeader) {
			return struct{}{}, retry.Permanent(err)
		}
		return struct{}{}, err
	})
	if errors.Is(err, ErrNoLeader) {
		return err
	}
	return ctx.Err()
}

// coordinate is one watch's worth of Coordinate; it returns an error when
// the watch ends.
func (l *Leader) coordinate(ctx context.Context, req *fleet.UpdateRequest, reached *arrivals,
	passed *int, passedRev *int64, apply func(*mvccpb.KeyValue, bool) error) error {
	s := l.s
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch, err := s.watchArrivals(wctx, req.Servers)
	if err != nil {
		return err
	}
	// status/passed sorts just before status/servers/.
	from, to := s.abs(keyPassed), clientv3.GetPrefixRangeEnd(s.abs(keyServerStatus))
	resp, err := s.cli.Get(ctx, from, clientv3.WithRange(to))
	if err != nil {
		return fmt.Errorf("coordinate: %w", err)
	}
	reached.reset()
	for _, kv := range resp.Kvs {
		if err := apply(kv, false); err != nil {
			return err
		}
	}
	rev := resp.Header.Revision
	for {
		if err := l.advance(ctx, req, reached, passed, passedRev); err != nil {
			return err
		}
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case wr, ok = <-wch:
		}
		if !ok || wr.Err() != nil || wr.Canceled {
			return fmt.Errorf("coordinate: the watch ended: %v", wr.Err())
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= rev {
				continue
			}
			if err := apply(ev.Kv, ev.Type == clientv3.EventTypeDelete); err != nil {
				return err
			}
		}
	}
}

// arrivalsPerWatch is how many servers' statuses one of the coordinator's
// watches follows at most. etcd queues at most 128 responses per watch
// stream, one per write; a stream that falls behind a burst of arrivals
// has its watch set aside and caught up only every 100ms. So the
// coordinator of a large fleet splits the statuses over several watches,
// each on a gRPC stream of its own (streams are told apart by the
// context's metadata).
const arrivalsPerWatch = 64

// watchArrivals watches status/passed and the statuses of servers, and
// returns the responses of every watch on one channel, once each watch is
// in place. The watches end with ctx.
func (s *Storage) watchArrivals(ctx context.Context, servers []string) (<-chan clientv3.WatchResponse, error) {
	ids := slices.Sorted(slices.Values(servers))
	// Contiguous ranges, from status/passed, which sorts just before
	// status/servers/, to the end of status/servers/.
	bounds := []string{s.abs(keyPassed)}
	per := cmp.Or(s.arrivalsPerWatch, arrivalsPerWatch)
	for i := per; i < len(ids); i += per {
		bounds = append(bounds, s.statusKey(ids[i]))
	}
	bounds = append(bounds, clientv3.GetPrefixRangeEnd(s.abs(keyServerStatus)))
	out := make(chan clientv3.WatchResponse)
	for i := range len(bounds) - 1 {
		sctx := metadata.AppendToOutgoingContext(ctx, "ferry-arrivals-watch", strconv.Itoa(i))
		wch := s.cli.Watch(sctx, bounds[i], clientv3.WithRange(bounds[i+1]), clientv3.WithCreatedNotify())
		if resp, ok := <-wch; !ok || resp.Err() != nil {
			return nil, fmt.Errorf("coordinate: watch: %v", resp.Err())
		}
		go func() {
			for resp := range wch {
				select {
				case out <- resp:
				case <-ctx.Done():
					return
				}
			}
			// The watch ended: a response that says so.
			select {
			case out <- clientv3.WatchResponse{Canceled: true}:
			case <-ctx.Done():
			}
		}()
	}
	return out, nil
}

// advance writes status/passed when every member has reached further than
// it says.
func (l *Leader) advance(ctx context.Context, req *fleet.UpdateRequest, reached *arrivals, passed *int, passedRev *int64) error {
	s := l.s
	low := reached.lowest()
	if low <= *passed {
		return nil
	}
	data, err := encode(&fleet.Passed{Rollout: req.StartedAt, Step: low})
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.abs(keyPassed)), "=", *passedRev), l.fence()).Then(clientv3.OpPut(s.abs(keyPassed), data)).Commit()
	if err != nil {
		return fmt.Errorf("coordinate: write passed: %w", err)
	}
	if !resp.Succeeded {
		if g, err := s.cli.Get(ctx, l.key, clientv3.WithCountOnly()); err == nil && g.Count == 0 {
			return ErrNoLeader
		}
		// Someone else wrote passed: its event is on the way.
		return nil
	}
	*passed, *passedRev = low, resp.Header.Revision
	return nil
}
