package main

// neco's lockstep barrier, as cybozu-go/neco's worker does it (read from
// its public worker/ and storage/ packages and written anew here, for this
// benchmark only): every worker writes its status, {version, step, cond},
// to status/<id>, and watches the whole status/ prefix from the request's
// revision. It counts the statuses at its own step; when every server of
// the request has arrived, it runs the step in the watch's loop, and
// writes the next step (or "completed" after the last), which is its
// arrival at the next barrier. Each write reaches every worker: N² events
// per step, one put per server per step.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type necoStatus struct {
	Version string `json:"version"`
	Step    int    `json:"step"`
	Cond    int    `json:"cond"`
	Message string `json:"message,omitempty"`
}

// neco's conditions.
const (
	necoRunning   = 0
	necoCompleted = 2
)

// runNeco runs n workers through steps no-op steps the way neco's do, and
// returns the time per step from the fleet's arrival at step 1 to its
// completion, as a spectator watching the statuses saw it.
func runNeco(endpoints []string, n, steps int) (time.Duration, error) {
	cs, err := clients(endpoints, shared(n)+1, nil)
	if err != nil {
		return 0, err
	}
	defer closeAll(cs)
	// The last client is the spectator's alone.
	spec := cs[len(cs)-1]
	cs = cs[:len(cs)-1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("/neco/%d/%d/", n, time.Now().UnixNano())
	statusDir := prefix + "status/"
	const version = "1.0.0"

	// The spectator watches from before the request.
	start, err := spec.Get(ctx, prefix+"none")
	if err != nil {
		return 0, err
	}
	specCh := spec.Watch(ctx, statusDir, clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))

	resp, err := spec.Put(ctx, statusDir+"current", `{"version":"`+version+`"}`)
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := necoWorker(ctx, cs[i/perClient], statusDir, fmt.Sprintf("%04d", i), n, steps, version, rev); err != nil {
				errs <- err
				cancel()
			}
		}()
	}

	arrived := map[int]int{}
	var first, last time.Time
	for done := false; !done; {
		wr, ok := <-specCh
		if !ok || wr.Err() != nil {
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("neco, %d servers: the spectator's watch ended: %v", n, wr.Err())
		}
		for _, ev := range wr.Events {
			if strings.HasSuffix(string(ev.Kv.Key), "/current") {
				continue
			}
			var st necoStatus
			if err := json.Unmarshal(ev.Kv.Value, &st); err != nil {
				return 0, err
			}
			k := st.Step
			if st.Cond == necoCompleted {
				k = steps + 1
			}
			arrived[k]++
			switch {
			case k == 1 && arrived[k] == n:
				first = time.Now()
			case k == steps+1 && arrived[k] == n:
				last, done = time.Now(), true
			}
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return last.Sub(first) / time.Duration(steps), nil
}

// necoWorker is one of neco's workers, from its arrival at step 1.
func necoWorker(ctx context.Context, cli *clientv3.Client, statusDir, id string, n, steps int, version string, rev int64) error {
	put := func(step, cond int) error {
		data, err := json.Marshal(necoStatus{Version: version, Step: step, Cond: cond})
		if err != nil {
			return err
		}
		_, err = cli.Put(ctx, statusDir+"servers/"+id, string(data))
		return err
	}
	if err := put(1, necoRunning); err != nil {
		return err
	}
	step := 1
	barrier := map[string]bool{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(wctx, statusDir, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete()) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if key == statusDir+"current" {
				continue
			}
			var st necoStatus
			if err := json.Unmarshal(ev.Kv.Value, &st); err != nil {
				return err
			}
			if st.Version != version || st.Step != step || st.Cond == necoCompleted {
				return fmt.Errorf("neco worker %s at step %d: unexpected status %s: %+v", id, step, key, st)
			}
			barrier[key] = true
			if len(barrier) < n {
				continue
			}
			// Every server arrived: run the step (nothing), then arrive
			// at the next barrier.
			if step == steps {
				return put(step, necoCompleted)
			}
			step++
			clear(barrier)
			if err := put(step, necoRunning); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}
