package cli

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/fleetview"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

func (a *app) newRolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Pause and resume the running rollout",
		Long: `Pause the running rollout at its next step boundary, or resume it: after
` + "`ferry rollout pause`" + `, or when it waits behind a step's canary (a rolling
step with canary: and pause: in the plan).`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.newRolloutPauseCommand(), a.newRolloutResumeCommand())
	return cmd
}

// operator names who acted, and with what command, for the record.
func operator(command string) string {
	host, _ := os.Hostname()
	name := cmp.Or(os.Getenv("SUDO_USER"), os.Getenv("USER"))
	if u, err := user.Current(); name == "" && err == nil {
		name = u.Username
	}
	return fmt.Sprintf("%s, %s@%s", command, cmp.Or(name, "?"), host)
}

// withRunningRollout calls fn with a snapshot and the running rollout's
// request, retried as storageCall retries; it fails when none runs.
func (a *app) withRunningRollout(cmd *cobra.Command, fn func(ctx context.Context, st *storage.Storage, snap *fleet.Snapshot, req *fleet.UpdateRequest) error) error {
	return a.storageCall(cmd, true, func(ctx context.Context, st *storage.Storage) error {
		snap, err := st.Snapshot(ctx)
		if err != nil {
			return err
		}
		req := snap.Request
		if req == nil || req.Finished() {
			return fmt.Errorf("no rollout is running; `ferry status` shows the last one")
		}
		return fn(ctx, st, snap, req)
	})
}

func (a *app) newRolloutPauseCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "pause",
		Short: "Hold the running rollout at its next step boundary",
		Long: `Hold the running rollout at its next step boundary: a server inside a step
finishes it, then waits (state paused) before the next one. Nothing is
interrupted, and worker-timeout does not run out while the rollout is
paused. ` + "`ferry rollout resume`" + ` goes on. The pause belongs to this rollout: the
next one starts unpaused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withRunningRollout(cmd, func(ctx context.Context, st *storage.Storage, snap *fleet.Snapshot, req *fleet.UpdateRequest) error {
				if err := st.PutPause(ctx, &fleet.Pause{Rollout: req.StartedAt, At: time.Now().UTC(), By: operator("ferry rollout pause"), Reason: reason}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "the rollout to %s pauses at its next step boundary; `ferry rollout resume` goes on\n", req.Version)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the others who look at `ferry status`")
	return cmd
}

func (a *app) newRolloutResumeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resume",
		Short: "Let a paused rollout go on, or the servers behind a step's canary",
		Long: `Let the running rollout go on: lift a ` + "`ferry rollout pause`" + `, or else let the
servers that wait behind a step's canary take that step. The two are lifted
one at a time: when both hold the rollout, the first resume lifts the pause
and says that the canary still holds. Look at the canary first (` + "`ferry status`" + `,
` + "`ferry history show`" + ` once it finished, your own checks): resume is what lets the
rest of the fleet follow it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withRunningRollout(cmd, func(ctx context.Context, st *storage.Storage, snap *fleet.Snapshot, req *fleet.UpdateRequest) error {
				// A pause and a canary hold are lifted one at a time, so
				// that lifting an operator's pause never lets the rest
				// follow a canary nobody has looked at.
				held := fleetview.CanaryHold(snap)
				switch {
				case snap.Pause != nil:
					if err := st.DeletePause(ctx); err != nil {
						return err
					}
					p := snap.Pause
					fmt.Fprintf(a.stdout, "lifted the pause of the rollout to %s (by %s, since %s%s)\n", req.Version, p.By, p.At.Format(time.RFC3339), reasonSuffix(p.Reason))
					if held > 0 {
						fmt.Fprintf(a.stdout, "servers still wait behind the canary of step %d: look at it, then run `ferry rollout resume` again to let them take it\n", held)
					}
				case held > 0:
					if err := st.PutResume(ctx, &fleet.Resume{Rollout: req.StartedAt, Step: held, At: time.Now().UTC(), By: operator("ferry rollout resume")}); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "resumed the rollout to %s after the canary of step %d: the rest of the servers take it\n", req.Version, held)
				default:
					fmt.Fprintf(a.stdout, "the rollout to %s is not paused; nothing to resume\n", req.Version)
				}
				return nil
			})
		},
	}
}

// reasonSuffix is ": reason", or nothing when there is none.
func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}
