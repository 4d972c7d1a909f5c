package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
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

// operator names who acted, for the record.
func operator() string {
	host, _ := os.Hostname()
	user := os.Getenv("SUDO_USER")
	if user == "" {
		user = os.Getenv("USER")
	}
	return fmt.Sprintf("ferry rollout, %s@%s", user, host)
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
				if err := st.PutPause(ctx, &fleet.Pause{Rollout: req.StartedAt, At: time.Now().UTC(), By: operator(), Reason: reason}); err != nil {
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
		Long: `Let the running rollout go on: lift a ` + "`ferry rollout pause`" + `, and let the
servers that wait behind a step's canary take that step. Look at the
canary first (` + "`ferry status`" + `, ` + "`ferry history show`" + ` once it finished, your
own checks): resume is what lets the rest of the fleet follow it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withRunningRollout(cmd, func(ctx context.Context, st *storage.Storage, snap *fleet.Snapshot, req *fleet.UpdateRequest) error {
				did := false
				if snap.Pause != nil {
					if err := st.DeletePause(ctx); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "lifted the pause of the rollout to %s\n", req.Version)
					did = true
				}
				if k := canaryStep(snap); k > 0 {
					if err := st.PutResume(ctx, &fleet.Resume{Rollout: req.StartedAt, Step: k, At: time.Now().UTC(), By: operator()}); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "resumed the rollout to %s after the canary of step %d: the rest of the servers take it\n", req.Version, k)
					did = true
				}
				if !did {
					fmt.Fprintf(a.stdout, "the rollout to %s is not paused; nothing to resume\n", req.Version)
				}
				return nil
			})
		},
	}
}

// canaryStep is the highest step at which a server of the running rollout
// waits behind a canary that has not been resumed; 0 when none does.
func canaryStep(snap *fleet.Snapshot) int {
	req, k := snap.Request, 0
	for _, id := range req.Active() {
		if st := snap.Statuses[id]; st.For(req) && st.Phase == fleet.PhasePaused && st.Canary > 0 && st.Step > k {
			k = st.Step
		}
	}
	if snap.Resume != nil && snap.Resume.Step >= k {
		return 0
	}
	return k
}
