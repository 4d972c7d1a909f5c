package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/dctest/harness"
)

// runLimit is the reference: each of n servers puts one key per step, all
// at once, and the step ends when every put returned. Each value is size
// bytes.
func runLimit(endpoints []string, members []*harness.EtcdMember, n, steps, size int) (*limitRun, error) {
	cs, err := clients(endpoints, shared(n), nil)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	ctx := context.Background()
	prefix := fmt.Sprintf("/limit/%d/%d/", n, time.Now().UnixNano())
	value := strings.Repeat("x", size)
	before, err := scrape(members)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	for range steps {
		err := eachServer(n, func(i int) error {
			_, err := cs[i/perClient].Put(ctx, fmt.Sprintf("%s%04d", prefix, i), value)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	perStep := time.Since(began) / time.Duration(steps)
	after, err := scrape(members)
	if err != nil {
		return nil, err
	}
	return &limitRun{perStep: perStep, cpu: cpuOf(before, after, n*steps), fsyncs: (after.fsyncs - before.fsyncs) / float64(steps)}, nil
}

// limitRun is what one run of the limit cost.
type limitRun struct {
	perStep time.Duration
	cpu     cpuUse
	// fsyncs are the WAL syncs of etcd's members per step.
	fsyncs float64
}

// cpuUse is the CPU time of etcd's members and of the benchmark process
// per server and step.
type cpuUse struct{ etcd, self time.Duration }

func cpuOf(before, after counts, serverSteps int) cpuUse {
	per := func(s float64) time.Duration { return time.Duration(s / float64(serverSteps) * float64(time.Second)) }
	return cpuUse{etcd: per(after.cpu - before.cpu), self: per(after.self - before.self)}
}
