package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// bareGroup is how many servers' arrivals one of the bare coordinator's
// watches follows, as ferry's coordinator does.
const bareGroup = 64

// runBare is the floor of any barrier that tells each server by a watch
// event: the protocol ferry follows, with nothing else. Each of n servers
// puts its step number (a few bytes) under a key of its own and waits for
// a pass key to reach that step; a coordinator counts the arrivals through
// one watch per 64 servers and puts the pass key when all are in. No JSON,
// no records, no metrics, no logs: what is left of ferry's cost over this
// is ferry's own code, and what this costs over the limit is the protocol.
func runBare(endpoints []string, members []*harness.EtcdMember, n, steps int) (*limitRun, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, own, err := fleetClients(endpoints, n, nil)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	defer own.Close()
	prefix := fmt.Sprintf("/bare/%d/%d/", n, time.Now().UnixNano())
	pass := prefix + "pass"
	arrival := func(i int) string { return fmt.Sprintf("%sa/%03d/%04d", prefix, i/bareGroup, i) }

	// Every watch is open before the first arrival.
	var arrivals []clientv3.WatchChan
	for g := 0; g*bareGroup < n; g++ {
		wctx := metadata.AppendToOutgoingContext(ctx, "ferry-bench-bare", strconv.Itoa(g))
		wc := own.Watch(wctx, fmt.Sprintf("%sa/%03d/", prefix, g), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if err := created(wc); err != nil {
			return nil, err
		}
		arrivals = append(arrivals, wc)
	}
	passes := make([]clientv3.WatchChan, n)
	for i := range passes {
		passes[i] = cs[i/perClient].Watch(ctx, pass, clientv3.WithCreatedNotify())
		if err := created(passes[i]); err != nil {
			return nil, err
		}
	}

	before, err := scrape(members)
	if err != nil {
		return nil, err
	}
	// Barrier k is passed when every server put k; barrier steps+1 is the
	// end of the last step.
	in := make(chan int, n)
	for _, wc := range arrivals {
		go func() {
			for resp := range wc {
				for _, ev := range resp.Events {
					k, _ := strconv.Atoi(string(ev.Kv.Value))
					select {
					case in <- k:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	passedAt := make([]time.Time, steps+2)
	coordinated := make(chan error, 1)
	go func() {
		counts := make([]int, steps+2)
		for k := 1; k <= steps+1; {
			select {
			case got := <-in:
				counts[got]++
			case <-ctx.Done():
				coordinated <- ctx.Err()
				return
			}
			for k <= steps+1 && counts[k] == n {
				if _, err := own.Put(ctx, pass, strconv.Itoa(k)); err != nil {
					coordinated <- err
					return
				}
				passedAt[k] = time.Now()
				k++
			}
		}
		coordinated <- nil
	}()
	err = eachServer(n, func(i int) error {
		passed := 0
		for k := 1; k <= steps+1; k++ {
			if _, err := cs[i/perClient].Put(ctx, arrival(i), strconv.Itoa(k)); err != nil {
				return err
			}
			for passed < k {
				resp, ok := <-passes[i]
				if !ok {
					return fmt.Errorf("bare barrier: the watch of server %d ended at barrier %d", i, k)
				}
				for _, ev := range resp.Events {
					passed, _ = strconv.Atoi(string(ev.Kv.Value))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := <-coordinated; err != nil {
		return nil, err
	}
	after, err := scrape(members)
	if err != nil {
		return nil, err
	}
	return &limitRun{perStep: passedAt[steps+1].Sub(passedAt[1]) / time.Duration(steps), cpu: cpuOf(before, after, n*steps), fsyncs: (after.fsyncs - before.fsyncs) / float64(steps)}, nil
}

// created waits for a watch's created notification.
func created(wc clientv3.WatchChan) error {
	resp, ok := <-wc
	if !ok {
		return fmt.Errorf("a watch closed before it was created")
	}
	if err := resp.Err(); err != nil {
		return err
	}
	if !resp.Created {
		return fmt.Errorf("a watch's first response was not its creation")
	}
	return nil
}
