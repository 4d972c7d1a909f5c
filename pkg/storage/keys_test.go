package storage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestKeyOrder: the barrier's watches are ranges of keys, and they rely on
// the order of the status/ keys. Every key ferry writes falls in a range
// exactly when the range is meant to hold it.
func TestKeyOrder(t *testing.T) {
	t.Parallel()
	s := &Storage{prefix: "/ferry/"}
	started := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var keys []string
	for _, k := range allKeys {
		keys = append(keys, s.abs(k))
		if k[len(k)-1] == '/' {
			keys = append(keys, s.abs(k)+"boot-0", s.abs(k)+"zzz/x")
		}
	}
	keys = append(keys, s.historyKey(started), s.canaryKey(started, 2, 0), s.slotsDir(started, "debs")+"0",
		s.SpreadLock(started, 2, "rack", "r1")+"x", s.installKey("boot-0", "deb", "x"), s.refusedKey("2026.12.06-1"),
		s.WorkerElection("boot")+"x", s.configKey("env"), s.statusKey("boot-0"), s.timelineKey(started, "boot-0", started))

	in := func(key, from, to string) bool { return key >= from && key < to }
	servers := func(key string) bool {
		return in(key, s.abs(keyServerStatus), clientv3.GetPrefixRangeEnd(s.abs(keyServerStatus)))
	}
	heads := map[string]bool{s.abs(keyCurrent): true, s.abs(keyPassed): true, s.abs(keyPause): true, s.abs(keyPlan): true, s.abs(keyResume): true}
	for _, key := range keys {
		// A large fleet's workers: the request, passed, pause and resume.
		require.Equal(t, heads[key], in(key, s.abs(keyCurrent), s.abs(keyResume)+"\x00"), key)
		// A small fleet's workers count the statuses too.
		require.Equal(t, heads[key] || servers(key), in(key, s.abs(keyCurrent), clientv3.GetPrefixRangeEnd(s.abs(keyServerStatus))), key)
		// The coordinator: passed and the statuses (pause and resume pass
		// through unread).
		require.Equal(t, (heads[key] && key != s.abs(keyCurrent)) || servers(key), in(key, s.abs(keyPassed), clientv3.GetPrefixRangeEnd(s.abs(keyServerStatus))), key)
	}

	// History keys sort by time, across a second and a day.
	later := []time.Time{started, started.Add(time.Nanosecond), started.Add(time.Second), started.Add(24 * time.Hour)}
	for i := 1; i < len(later); i++ {
		require.Less(t, s.historyKey(later[i-1]), s.historyKey(later[i]))
		require.Less(t, rolloutID(later[i-1]), rolloutID(later[i]))
	}
	require.Equal(t, len(rolloutID(started)), len(rolloutID(started.Add(time.Nanosecond))), "fixed width")
}
