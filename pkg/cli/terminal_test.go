package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferry-cd/ferry/internal/fleettest"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/stretchr/testify/require"
)

// hostile are strings an etcd writer could leave for the operator's
// terminal: a title change, a screen clear, a cursor move, an 8-bit CSI,
// and a right-to-left override.
var hostile = []string{"\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x1b[1A", "\xc2\x9b31m", "\u202eexe.txt", "\u2066isolate\u2069", "bad\xffutf8"}

// requireSafe fails when out holds a byte that could act on a terminal.
func requireSafe(t testing.TB, out string) {
	t.Helper()
	require.True(t, utf8.ValidString(out), "output is not UTF-8: %q", out)
	for _, r := range out {
		require.False(t, unsafeRune(r), "output holds %U: %q", r, out)
	}
}

// TestTerminalEscapesSanitised: whoever writes etcd puts escape sequences
// and bidirectional overrides into a request, a status and a history
// record. ferry status, history and history show print them as '?', and
// -o json keeps them as \u escapes; a history event without a kind is
// shown, not a panic.
func TestTerminalEscapesSanitised(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	evil := strings.Join(hostile, "|")
	started := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	req := &fleet.UpdateRequest{Version: "2026.01.02-1" + hostile[0], Servers: []string{"boot-0"}, StartedAt: started, Reason: evil, Stop: true, StopReason: evil}
	fleettest.AsLeader(t, f.st, func(l *storage.Leader) error { return l.StartRequest(f.ctx(), req) })
	require.NoError(t, f.st.PutStatus(f.ctx(), "boot-0", &fleet.UpdateStatus{Version: evil, Rollout: started, Step: 1, StepName: evil, Cond: fleet.CondAborted, Message: evil, UpdatedAt: started}))
	done := *req
	done.FinishedAt = started.Add(time.Minute)
	h := &fleet.HistoryRecord{
		Version: req.Version, Reason: evil, Servers: []string{"boot-0", evil}, Result: evil, StopReason: evil, StartedAt: started, FinishedAt: done.FinishedAt,
		Events:   []fleet.RolloutEvent{{Kind: "", At: started, Message: evil}, {Kind: evil, At: started}},
		Timeline: map[string][]fleet.StepRecord{evil: {{Step: 1, Name: evil, Start: started, End: started, Result: evil, Attempts: []fleet.Attempt{{Start: started, End: started, Error: evil}}}}},
		Failed:   []fleet.FailedServer{{ID: evil, Step: 1, StepName: evil, Reason: evil, At: started}},
	}
	f.finishRequest(&done, h)

	for _, args := range [][]string{{"status"}, {"history"}, {"history", "show", started.Format(time.RFC3339)}} {
		r := f.run("", args...)
		require.Equal(t, ExitOK, r.code, "%v: %s", args, r.stderr)
		requireSafe(t, r.stdout)
		requireSafe(t, r.stderr)
		require.Contains(t, r.stdout, "?]0;pwned?", "%v shows what was there, defused", args)
		require.Contains(t, r.stdout, "?exe.txt", args)

		j := f.run("", append([]string{"-o", "json"}, args...)...)
		require.Equal(t, ExitOK, j.code, "%v: %s", args, j.stderr)
		requireSafe(t, j.stdout)
		require.True(t, json.Valid([]byte(j.stdout)), "%v -o json is still JSON", args)
		require.Contains(t, j.stdout, `\u001b]0;pwned\u0007`, args)
		require.Contains(t, j.stdout, `\u202eexe.txt`, args)
	}
}

// TestSafeWriterKeepsSplitRunes: a rune split across two writes comes out
// whole.
func TestSafeWriterKeepsSplitRunes(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	w := newSafeWriter(&b)
	s := []byte("é→\u202e!")
	for i := range s {
		_, err := w.Write(s[i : i+1])
		require.NoError(t, err)
	}
	require.Equal(t, "é→?!", b.String())
}

// FuzzTerminalOutput drives the status and history printers with whatever
// an etcd writer could store: they never panic, and print nothing that
// could act on a terminal.
func FuzzTerminalOutput(f *testing.F) {
	for _, s := range hostile {
		f.Add(s, s)
	}
	f.Add("", "")
	f.Fuzz(func(t *testing.T, a, b string) {
		now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
		req := &fleet.UpdateRequest{Version: a, Servers: []string{b, a}, StartedAt: now, Reason: b, Stop: true, StopReason: a,
			Failed: []fleet.FailedServer{{ID: a, StepName: b, Reason: a}}, Events: []fleet.RolloutEvent{{Kind: a, Message: b}}}
		snap := &fleet.Snapshot{
			Request:  req,
			Statuses: map[string]*fleet.UpdateStatus{b: {Version: a, Rollout: now, StepName: b, Phase: fleet.Phase(a), Cond: fleet.Cond(b), Message: a}},
			Servers:  map[string]*fleet.ServerInfo{a: {Hostname: b, Labels: map[string]string{a: b}}},
			Alive:    map[string]*fleet.Alive{b: {Version: a}},
			Release:  &fleet.ReleaseInfo{Version: a, Tag: b},
			Pin:      &fleet.Pin{Version: b},
			Leader:   a,
		}
		var out bytes.Buffer
		app := &app{stdout: newSafeWriter(&out), now: func() time.Time { return now }}
		app.printStatus(fleetview.New(snap), nil)
		h := fleet.NewHistoryRecord(req, snap.Statuses, nil, b, now)
		h.Timeline = map[string][]fleet.StepRecord{a: {{Name: b, Result: a, Attempts: []fleet.Attempt{{Error: b}}}}}
		app.printTimeline(h)
		requireSafe(t, out.String())
	})
}
