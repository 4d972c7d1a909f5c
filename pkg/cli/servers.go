package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/storage"
	"github.com/spf13/cobra"
)

func (a *app) newJoinCommand() *cobra.Command {
	var hostname string
	var labels []string
	cmd := &cobra.Command{
		Use:   "join ID",
		Short: "Register a boot server as a member of the fleet",
		Long: `Register a boot server as a member of the fleet. The id must match the
server-id in that server's bootstrap config. A server that joins during a
rollout takes part from the next one. Joining a registered server again
replaces the hostname and labels that are given and keeps the others.`,
		Example: `  ferry join boot-0 --label rack=r1 --label zone=a`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := fleet.ValidateServerID(id); err != nil {
				return err
			}
			var lm map[string]string
			if len(labels) > 0 {
				lm = make(map[string]string, len(labels))
			}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usagef("--label %q: want key=value, e.g. rack=r1", l)
				}
				lm[k] = v
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				info := &fleet.ServerInfo{Hostname: hostname, Labels: lm, JoinedAt: a.now().UTC()}
				created, err := st.JoinServer(ctx, id, info)
				if err != nil {
					return err
				}
				verb := "joined"
				if !created {
					verb = "updated"
				}
				if a.output == "json" {
					return a.printJSON(map[string]any{"id": id, "result": verb, "server": info})
				}
				fmt.Fprintf(a.stdout, "%s %s\n", id, verb)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&hostname, "hostname", "", "host name of the server (default: the id, or the registered one)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "a key=value label; repeat for more")
	return cmd
}

func (a *app) newLeaveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "leave ID",
		Short: "Remove a boot server from the fleet",
		Long: `Remove a boot server from the fleet. A rollout in progress still counts
the server until it ends; to go on without a dead server, leave it and then
run ferry recover.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				if err := st.LeaveServer(ctx, args[0]); err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(map[string]string{"id": args[0], "result": "left"})
				}
				fmt.Fprintf(a.stdout, "%s left\n", args[0])
				return nil
			})
		},
	}
}

type serverView struct {
	ID         string            `json:"id"`
	Registered bool              `json:"registered"`
	Alive      bool              `json:"alive"`
	Server     *fleet.ServerInfo `json:"server,omitempty"`
	Worker     *fleet.Alive      `json:"worker,omitempty"`
}

func (a *app) newServersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "servers",
		Short: "List registered servers and whether each one's worker is alive",
		Long: `List registered servers and whether each one's worker is alive. A worker that
runs on a server that has not joined is listed too, as not registered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withSnapshot(cmd, func(snap *fleet.Snapshot) error {
				ids := map[string]bool{}
				for id := range snap.Servers {
					ids[id] = true
				}
				for id := range snap.Alive {
					ids[id] = true
				}
				views := make([]serverView, 0, len(ids))
				for _, id := range fleet.SortedIDs(ids) {
					views = append(views, serverView{
						ID: id, Registered: snap.Servers[id] != nil, Alive: snap.Alive[id] != nil,
						Server: snap.Servers[id], Worker: snap.Alive[id],
					})
				}
				if a.output == "json" {
					return a.printJSON(views)
				}
				t := a.newTable("ID", "HOSTNAME", "REGISTERED", "ALIVE", "VERSION", "LABELS")
				now := a.now()
				for _, v := range views {
					host, labels, reg := "-", "-", "no"
					if v.Server != nil {
						host, reg = v.Server.Hostname, "yes"
						labels = formatLabels(v.Server.Labels)
					}
					alive, ver := "no", "-"
					if v.Worker != nil {
						alive, ver = "since "+age(now, v.Worker.StartedAt), v.Worker.Version
					}
					t.row(v.ID, host, reg, alive, ver, labels)
				}
				return t.flush()
			})
		},
	}
}

func formatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range fleet.SortedIDs(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func (a *app) newServerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Change one registered server",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.newServerLabelCommand())
	return cmd
}

func (a *app) newServerLabelCommand() *cobra.Command {
	return &cobra.Command{
		ValidArgsFunction: completeFirst(a.serverIDs),
		Use:               "label SERVER KEY=VALUE... | KEY-...",
		Short:             "Set or remove a server's labels (for plan steps' selector and spread)",
		Long: `Set labels of a registered server with KEY=VALUE, or remove one with KEY-;
the others are kept. A plan step's selector runs the step only on servers
whose labels match, and a rolling step's spread (e.g. spread: rack) never
has two servers with the same value of that label inside the step at once.
A worker also announces the labels of its bootstrap config (labels:) when
it starts. ` + "`ferry servers`" + ` and ` + "`ferry status`" + ` show them.`,
		Example: `  ferry server label boot-0 rack=r1 role=tftp
  ferry server label boot-0 role-`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			set := map[string]string{}
			var remove []string
			for _, l := range args[1:] {
				if k, ok := strings.CutSuffix(l, "-"); ok && !strings.Contains(l, "=") {
					remove = append(remove, k)
					continue
				}
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usagef("%q: want KEY=VALUE to set a label, or KEY- to remove one, e.g. rack=r1", l)
				}
				set[k] = v
			}
			return a.withStorage(cmd, func(ctx context.Context, st *storage.Storage) error {
				info, err := st.LabelServer(ctx, id, set, remove)
				if errors.Is(err, storage.ErrNotFound) {
					return usagef("%s has not joined the fleet; `ferry join %s` first", id, id)
				}
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(map[string]any{"id": id, "labels": info.Labels})
				}
				fmt.Fprintf(a.stdout, "%s: %s\n", id, orDash(formatLabels(info.Labels)))
				return nil
			})
		},
	}
}
