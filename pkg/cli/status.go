package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
	"github.com/ferry-cd/ferry/pkg/retry"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

func (a *app) newStatusCommand() *cobra.Command {
	var watch, untilFinished bool
	var forVersion string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the current rollout and every server's progress",
		Long: `Show the current rollout request and every server's progress in it: version,
step, condition and the last message. It also shows the newest release the
updater has seen and the pin, if any. The rollout's state is one of none,
running, aborted (a server failed; the updater will stop the fleet),
stopped (needs ferry recover) or completed.

With --watch the view is drawn again at every change, with each server's
time in its current step; on a terminal also every second, elsewhere (a
pipe, a log) only when the fleet changed. --until-finished watches until
the current rollout finishes, and exits at once with 3 when there is none;
with --for VERSION, until the rollout to VERSION finishes, whenever it
starts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if forVersion != "" {
				untilFinished = true
			}
			if watch || untilFinished {
				return a.watchStatus(cmd, untilFinished, forVersion)
			}
			return a.withSnapshot(cmd, func(snap *fleet.Snapshot) error {
				v := fleetview.New(snap)
				if a.output == "json" {
					return a.printJSON(v)
				}
				a.printStatus(v, snap.ConfigErr)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "show the status again at every change, until interrupted")
	cmd.Flags().BoolVar(&untilFinished, "until-finished", false, "watch until the current rollout finishes; exit 0 when it completed, 1 when it stopped, 3 when there is none")
	cmd.Flags().StringVar(&forVersion, "for", "", "with --until-finished: wait for the rollout to this version, one that has not started yet too")
	return cmd
}

// watchStatus redraws the status whenever etcd changes (and every second,
// for the elapsed times). On a terminal it redraws in place.
func (a *app) watchStatus(cmd *cobra.Command, untilFinished bool, forVersion string) error {
	st, closeStorage, err := a.open()
	if err != nil {
		return err
	}
	defer closeStorage()
	ctx := cmd.Context()
	tty := isTerminal(a.rawStdout)
	// Away from a terminal (a pipe, a log), a frame is written only when
	// etcd changed: not once a second for the elapsed times.
	var shown []byte
	for first := true; ; first = false {
		rctx, cancel := context.WithTimeout(ctx, a.commandTimeout)
		snap, err := st.Snapshot(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !retry.Transient(err) {
				return err
			}
			// An etcd stall or leader change: say so, and keep watching.
			fmt.Fprintf(a.stderr, "ferry: etcd unreachable: %v; still watching\n", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		if untilFinished && forVersion == "" && first && snap.Request == nil {
			return fmt.Errorf("there is no rollout to wait for (ferry status shows the fleet): %w", storage.ErrNotFound)
		}
		v := fleetview.New(snap)
		view, _ := json.Marshal(v) // the view holds no clock: equal views, equal JSON
		if snap.ConfigErr != nil {
			view = append(view, snap.ConfigErr.Error()...)
		}
		if tty || !bytes.Equal(view, shown) {
			shown = view
			if a.output == "json" {
				a.printJSON(v)
			} else {
				if tty {
					fmt.Fprint(a.rawStdout, "\033[H\033[2J")
				} else {
					fmt.Fprintln(a.stdout, "---", a.now().Format(time.RFC3339))
				}
				a.printStatus(v, snap.ConfigErr)
			}
		}
		if untilFinished && snap.Request != nil && snap.Request.Finished() && (forVersion == "" || snap.Request.Version == forVersion) {
			if snap.Request.Stop {
				return fmt.Errorf("the rollout to %s stopped: %s", snap.Request.Version, snap.Request.StopReason)
			}
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		st.WaitChange(wctx, snap.Revision)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (a *app) printStatus(v *fleetview.Fleet, configErr error) {
	now := a.now()
	w := a.stdout
	if v.Release != nil {
		kind := "release"
		if v.Release.Prerelease {
			kind = "pre-release"
		}
		fmt.Fprintf(w, "Latest release: %s (%s, %s)\n", v.Release.Version, v.Release.Tag, kind)
	} else {
		fmt.Fprintln(w, "Latest release: none seen yet")
	}
	if v.Pin != nil {
		extra := ""
		if v.Pin.AllowDowngrade {
			extra = ", downgrade allowed"
		}
		fmt.Fprintf(w, "Pin:            %s (since %s%s)\n", v.Pin.Version, v.Pin.PinnedAt.Format(time.RFC3339), extra)
	}
	if configErr != nil {
		fmt.Fprintf(w, "Config:         BROKEN: %v\n", configErr)
	}
	fmt.Fprintf(w, "Leader:         %s\n", orDash(v.Leader))
	if c := v.Check; c != nil {
		outcome := c.Result
		switch {
		case c.Version != "":
			outcome += " " + c.Version
		case c.Error != "":
			outcome += ": " + c.Error
		}
		fmt.Fprintf(w, "Last check:     %s (%s, by %s): %s\n", c.At.Format(time.RFC3339), age(now, c.At), c.Leader, outcome)
	} else {
		fmt.Fprintln(w, "Last check:     none yet")
	}
	req := v.Request
	if req == nil {
		fmt.Fprintln(w, "Rollout:        none")
		return
	}
	fmt.Fprintf(w, "Rollout:        %s to %s, %s, started %s (%s)\n",
		strings.ToUpper(v.State), req.Version, req.Reason, req.StartedAt.Format(time.RFC3339), age(now, req.StartedAt))
	if p := v.Pause; p != nil {
		fmt.Fprintf(w, "Paused:         by %s, since %s (%s)%s; `ferry rollout resume` lifts it\n", p.By, p.At.Format(time.RFC3339), age(now, p.At), reasonSuffix(p.Reason))
	}
	if v.CanaryHold > 0 {
		fmt.Fprintf(w, "Canary:         the rest wait behind the canary of step %d; look at it, then `ferry rollout resume` lets them take it\n", v.CanaryHold)
	}
	for _, f := range req.Failed {
		fmt.Fprintf(w, "Went on without: %s, failed at step %d %s: %s\n", f.ID, f.Step, f.StepName, f.Reason)
	}
	if req.Stop {
		fmt.Fprintf(w, "Stopped:        %s\n", orDash(req.StopReason))
		fmt.Fprintln(w, "                look at the servers below, fix the cause, then run `ferry recover`")
	}
	fmt.Fprintln(w)
	labelled := false
	for _, s := range v.Servers {
		labelled = labelled || len(s.Labels) > 0
	}
	header := []string{"SERVER", "ALIVE", "VERSION", "TARGET", "STEP", "STATE", "UPDATED", "MESSAGE"}
	if labelled {
		header = append(header, "LABELS")
	}
	t := a.newTable(header...)
	for _, s := range v.Servers {
		alive := "no"
		if s.Alive {
			alive = "yes"
		}
		step, updated, msg := "-", "-", "-"
		if st := s.Status; st != nil {
			updated, msg = age(now, st.UpdatedAt), orDash(st.Message)
			step = orDash(st.StepName)
			if st.Step > 0 {
				step = fmt.Sprintf("%d %s", st.Step, st.StepName)
			}
		}
		row := []string{s.ID, alive, orDash(s.Installed), orDash(s.Target), step, stateWord(s), updated, msg}
		if labelled {
			row = append(row, orDash(formatLabels(s.Labels)))
		}
		t.row(row...)
	}
	t.flush()
}

// stateWord is a server's STATE as `ferry status` shows it: what needs
// a look in capitals.
func stateWord(s fleetview.Server) string {
	switch s.State {
	case fleet.StateFailed:
		return "FAILED, skipped"
	case fleet.StateIdle:
		if !s.InRequest {
			return "not in rollout"
		}
		return "waiting" // alive, and has not reported on the rollout yet
	case fleet.StateRepairing:
		return "REPAIRING dpkg" // dpkg's database shows an unfinished install
	case fleet.StateRetrying:
		return "RETRYING"
	case fleet.StateStopped:
		return "stopped (the rollout stopped)"
	}
	return string(s.State)
}

func (a *app) newRecoverCommand() *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Clear a stopped rollout so that the updater starts it again",
		Long: `Clear a stopped rollout: the current request, every server's status and the
records of once-per-fleet actions. The updater then starts the rollout
again from the first step. Look at ` + "`ferry status`" + ` and fix the cause first.

recover refuses a rollout that is still running unless --force is given.
It asks for confirmation unless --yes is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var snap *fleet.Snapshot
			if err := a.withSnapshot(cmd, func(s *fleet.Snapshot) error { snap = s; return nil }); err != nil {
				return err
			}
			if snap.Request == nil && len(snap.Statuses) == 0 && len(snap.Contents) == 0 {
				fmt.Fprintln(a.stdout, "nothing to recover: there is no rollout")
				return nil
			}
			state := fleetview.State(snap)
			if state != fleetview.StateStopped && state != fleetview.StateAborted && !force {
				return fmt.Errorf("the rollout is %s, not stopped; recover clears only a stopped rollout (use --force to clear it anyway)", state)
			}
			if !yes {
				if err := a.confirmRecover(snap); err != nil {
					return err
				}
			}
			// Not retried: Recover is fenced on the request's revision, and
			// a retry after an attempt that did apply would say the rollout
			// changed.
			return a.storageCall(cmd, false, func(ctx context.Context, st *storage.Storage) error {
				var timeline map[string][]fleet.StepRecord
				if snap.Request != nil && !snap.Request.Finished() { // else nothing to record
					var err error
					if timeline, err = st.Timeline(ctx, snap.Request.StartedAt); err != nil {
						return err
					}
				}
				hist := unrecorded(snap, timeline, state, time.Now())
				if err := st.Recover(ctx, snap.RequestRev, hist); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "recovered: the updater will start the rollout again")
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&force, "force", false, "clear the rollout even when it is not stopped")
	return cmd
}

// unrecorded is the history record of a rollout that the updater has not
// finished, and so not recorded: one that a server aborted before the
// updater stopped it, or one cleared with --force; timeline is its step
// records. nil when there is none.
func unrecorded(snap *fleet.Snapshot, timeline map[string][]fleet.StepRecord, state string, now time.Time) *fleet.HistoryRecord {
	req := snap.Request
	if req == nil || req.Finished() {
		return nil
	}
	h := fleet.NewHistoryRecord(req, snap.Statuses, timeline, fleet.ResultCleared, now.UTC())
	h.StopReason = "cleared by ferry recover while " + state
	if state == fleetview.StateAborted {
		h.Result = fleet.ResultAborted
		for _, id := range req.Servers {
			if st := snap.Statuses[id]; st.For(req) && st.Cond == fleet.CondAborted {
				h.StopReason = fmt.Sprintf("%s aborted: %s (cleared by ferry recover before the updater stopped the rollout)", id, st.Message)
				break
			}
		}
	}
	return h
}

func (a *app) confirmRecover(snap *fleet.Snapshot) error {
	w := a.stdout
	if r := snap.Request; r != nil {
		fmt.Fprintf(w, "This clears the rollout to %s (%s) of %d servers", r.Version, r.Reason, len(r.Servers))
		if r.StopReason != "" {
			fmt.Fprintf(w, ", stopped because: %s", r.StopReason)
		}
		fmt.Fprintln(w, ".")
	}
	fmt.Fprintf(w, "It deletes %d server statuses and %d once-per-fleet records.\n", len(snap.Statuses), len(snap.Contents))
	fmt.Fprint(w, "Clear it? [y/N] ")
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	if answer == "y" || answer == "yes" {
		return nil
	}
	if err != nil && answer == "" {
		return fmt.Errorf("no answer on standard input; pass --yes to recover without a prompt")
	}
	return fmt.Errorf("not confirmed; nothing was changed")
}
