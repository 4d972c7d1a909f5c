package main

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// writeLog records the writes that go through the etcd clients it is
// installed in: for each Put, and each transaction that puts, the bytes
// of its keys and values, and the values. It only claims a slot of a
// buffer made beforehand, with no lock (a thousand workers write at once);
// what the values say is read after the run, so that the measuring costs
// the rollout nothing it would not cost anyway.
type writeLog struct {
	writes []write
	n      atomic.Int64
}

// newWriteLog makes a log for up to size writes; later ones are counted
// in lost.
func newWriteLog(size int) *writeLog { return &writeLog{writes: make([]write, size)} }

// reset forgets what the log holds.
func (l *writeLog) reset() { l.n.Store(0) }

type write struct {
	keys, values int
	puts         [][]byte
	// sent is when the client was asked to write, done when etcd answered.
	sent, done time.Time
}

func (l *writeLog) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var w write
	switch r := req.(type) {
	case *pb.PutRequest:
		w.add(r)
	case *pb.TxnRequest:
		for _, op := range r.Success {
			if p := op.GetRequestPut(); p != nil {
				w.add(p)
			}
		}
	}
	if len(w.puts) == 0 {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	w.sent = time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	w.done = time.Now()
	if i := l.n.Add(1) - 1; i < int64(len(l.writes)) {
		l.writes[i] = w
	}
	return err
}

func (w *write) add(p *pb.PutRequest) {
	w.keys += len(p.Key)
	w.values += len(p.Value)
	w.puts = append(w.puts, p.Value)
}

// writeStats is what the workers wrote over one rollout.
type writeStats struct {
	writes int
	// bytes are the keys' and values' bytes; values the values' alone.
	bytes, values int
	// arrival[k] is the mean value size of the status reports "waiting
	// at step k", arrivalWrite[k] that of the whole writes carrying them
	// (a status and the step records beside it).
	arrival, arrivalWrite map[int]float64
	// sent[k] and done[k] are when the arrivals at barrier k were sent and
	// answered (a completion is the arrival at the barrier after the last
	// step).
	sent, done map[int][]time.Time
	// lost counts the writes the log had no room for.
	lost int64
	// statuses counts the status reports, statusBytes their values.
	statuses, statusBytes int
}

// meanStatus is the mean size of a status report's value.
func (s *writeStats) meanStatus() float64 {
	return float64(s.statusBytes) / float64(max(s.statuses, 1))
}

// stats reads what the log holds. A status report is a value with a phase
// and a cond; an arrival is one whose phase is waiting and whose cond is
// running.
func (l *writeLog) stats() writeStats {
	held := min(l.n.Load(), int64(len(l.writes)))
	s := writeStats{lost: l.n.Load() - held, arrival: map[int]float64{}, arrivalWrite: map[int]float64{}, sent: map[int][]time.Time{}, done: map[int][]time.Time{}}
	n := map[int]int{}
	for _, w := range l.writes[:held] {
		s.writes++
		s.bytes += w.keys + w.values
		s.values += w.values
		for _, v := range w.puts {
			var st struct {
				Step  int    `json:"step"`
				Phase string `json:"phase"`
				Cond  string `json:"cond"`
			}
			if json.Unmarshal(v, &st) != nil || st.Cond == "" {
				continue // a server's step records
			}
			s.statuses++
			s.statusBytes += len(v)
			if st.Cond == "completed" {
				s.sent[st.Step+1] = append(s.sent[st.Step+1], w.sent)
				s.done[st.Step+1] = append(s.done[st.Step+1], w.done)
			}
			if st.Phase != "waiting" || st.Cond != "running" {
				continue
			}
			s.sent[st.Step] = append(s.sent[st.Step], w.sent)
			s.done[st.Step] = append(s.done[st.Step], w.done)
			s.arrival[st.Step] += float64(len(v))
			s.arrivalWrite[st.Step] += float64(w.keys + w.values)
			n[st.Step]++
		}
	}
	for k, c := range n {
		s.arrival[k] /= float64(c)
		s.arrivalWrite[k] /= float64(c)
	}
	return s
}
