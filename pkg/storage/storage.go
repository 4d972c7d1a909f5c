// Package storage keeps the fleet (pkg/fleet) in etcd: every key, how each
// value is encoded, snapshots read at one revision, watches that resume
// after a snapshot, the barrier's watches, and leader-fenced writes. It
// decides nothing about a rollout: that is pkg/fleet's and its callers'.
package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/trust"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Storage reads and writes ferry's keys under one prefix.
type Storage struct {
	cli    *clientv3.Client
	prefix string
	// local, when set, gives config values from this server's disk; they
	// take the place of etcd's.
	local func() map[string]string
	// arrivalsPerWatch, when set, replaces arrivalsPerWatch (tests).
	arrivalsPerWatch int
}

// UseLocal makes the typed config take github-token, webhook-secret,
// notify-url and proxy from local (e.g. files that systemd's
// LoadCredential= provides) wherever local has them, instead of etcd; and
// github-api-url from local alone, never from etcd.
func (s *Storage) UseLocal(local func() map[string]string) { s.local = local }

// parseConfig is ParseConfig over etcd's values and the local ones.
func (s *Storage) parseConfig(values map[string]string) (*fleet.Config, error) {
	if s.local == nil {
		return fleet.ParseConfig(values)
	}
	local := s.local()
	merged := make(map[string]string, len(values))
	for k, v := range values {
		merged[k] = v
	}
	for k, v := range local {
		if key, err := fleet.LookupConfigKey(k); err == nil && (key.Secret || k == fleet.ConfigProxy) {
			merged[k] = v
		}
	}
	c, err := fleet.ParseConfig(merged)
	if err != nil {
		return nil, err
	}
	if u := local[fleet.ConfigGitHubAPIURL]; u != "" {
		c.GitHubAPIURL = u
	}
	return c, nil
}

// New returns a Storage for keys under prefix. The prefix must start with
// "/"; a missing trailing "/" is added.
func New(cli *clientv3.Client, prefix string) (*Storage, error) {
	p, err := fleet.NormalizePrefix(prefix)
	if err != nil {
		return nil, err
	}
	return &Storage{cli: cli, prefix: p}, nil
}

// Ping checks that etcd answers, for health checks.
func (s *Storage) Ping(ctx context.Context) error {
	if _, err := s.cli.Get(ctx, s.abs(keyPing), clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd unreachable: %w", err)
	}
	return nil
}

// Client returns the etcd client, for elections and leases.
func (s *Storage) Client() *clientv3.Client { return s.cli }

// Prefix returns the normalized key prefix.
func (s *Storage) Prefix() string { return s.prefix }

func (s *Storage) get(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err := decode(key, resp.Kvs[0].Value, v); err != nil {
		return 0, err
	}
	return resp.Kvs[0].ModRevision, nil
}

func (s *Storage) put(ctx context.Context, key string, v any, opts ...clientv3.OpOption) error {
	_, err := s.putRev(ctx, key, v, opts...)
	return err
}

// putRev is put, which also returns the revision of the write.
func (s *Storage) putRev(ctx context.Context, key string, v any, opts ...clientv3.OpOption) (int64, error) {
	data, err := encode(v)
	if err != nil {
		return 0, err
	}
	resp, err := s.cli.Put(ctx, key, data, opts...)
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	return resp.Header.Revision, nil
}

// --- config/ ---

// GetConfigValue returns the stored value of a config key, and whether it is
// set. An unset key reports its default with set=false.
func (s *Storage) GetConfigValue(ctx context.Context, name string) (value string, set bool, err error) {
	k, err := fleet.LookupConfigKey(name)
	if err != nil {
		return "", false, err
	}
	resp, err := s.cli.Get(ctx, s.configKey(name))
	if err != nil {
		return "", false, fmt.Errorf("read config %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 || len(resp.Kvs[0].Value) == 0 {
		return k.Default, false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// ConfigValues returns every stored config value, by key name.
func (s *Storage) ConfigValues(ctx context.Context) (map[string]string, error) {
	resp, err := s.cli.Get(ctx, s.abs(keyConfigDir), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return s.configFromKVs(resp.Kvs), nil
}

// SetConfig validates a value and stores its normalized form. A refused
// value writes nothing. An empty value for a key without default unsets it.
func (s *Storage) SetConfig(ctx context.Context, name, value string) (string, error) {
	k, err := fleet.LookupConfigKey(name)
	if err != nil {
		return "", err
	}
	v, err := k.Normalize(value)
	if err != nil {
		return "", err
	}
	if v == "" {
		return "", s.UnsetConfig(ctx, name)
	}
	if _, err := s.cli.Put(ctx, s.configKey(name), v); err != nil {
		return "", fmt.Errorf("write config %s: %w", name, err)
	}
	return v, nil
}

// UnsetConfig removes a config key, so that it takes its default; or
// what an older version left under a retired key, which nothing reads.
func (s *Storage) UnsetConfig(ctx context.Context, name string) error {
	if _, retired := fleet.RetiredConfigKey(name); !retired {
		if _, err := fleet.LookupConfigKey(name); err != nil {
			return err
		}
	}
	if _, err := s.cli.Delete(ctx, s.configKey(name)); err != nil {
		return fmt.Errorf("delete config %s: %w", name, err)
	}
	return nil
}

// GetConfig reads every config key and returns the typed view.
func (s *Storage) GetConfig(ctx context.Context) (*fleet.Config, error) {
	values, err := s.ConfigValues(ctx)
	if err != nil {
		return nil, err
	}
	return s.parseConfig(values)
}

// typedConfig reads one config key, for a caller that needs no other.
func (s *Storage) typedConfig(ctx context.Context, name string) (*fleet.Config, error) {
	v, set, err := s.GetConfigValue(ctx, name)
	if err != nil {
		return nil, err
	}
	values := map[string]string{}
	if set {
		values[name] = v
	}
	return s.parseConfig(values)
}

// GetWebhookSecret returns webhook-secret, or "" when unset.
func (s *Storage) GetWebhookSecret(ctx context.Context) (string, error) {
	c, err := s.typedConfig(ctx, fleet.ConfigWebhookSecret)
	if err != nil {
		return "", err
	}
	return c.WebhookSecret, nil
}

// --- info/servers/ ---

// JoinServer registers a server. A server that is already registered keeps
// its joined_at, and a hostname or labels left empty keep their old values.
// A new server without hostname gets its id. created reports which case
// happened; info is updated to what was stored.
func (s *Storage) JoinServer(ctx context.Context, id string, info *fleet.ServerInfo) (created bool, err error) {
	if err := fleet.ValidateServerID(id); err != nil {
		return false, err
	}
	key := s.serverKey(id)
	want := *info
	err = s.update(ctx, func(stm concurrency.STM) error {
		merged := want
		created = stm.Rev(key) == 0
		if created {
			if merged.Hostname == "" {
				merged.Hostname = id
			}
		} else {
			var old fleet.ServerInfo
			if err := decode(key, []byte(stm.Get(key)), &old); err != nil {
				return err
			}
			merged.JoinedAt = old.JoinedAt
			if merged.Hostname == "" {
				merged.Hostname = old.Hostname
			}
			if len(merged.Labels) == 0 {
				merged.Labels = old.Labels
			}
		}
		data, err := encode(&merged)
		if err != nil {
			return err
		}
		stm.Put(key, data)
		*info = merged
		return nil
	})
	return created, err
}

// update runs apply as one software transaction (etcd's STM): the keys it
// reads are compared at commit, and when another writer changed one
// meanwhile, apply runs again on what is there now.
func (s *Storage) update(ctx context.Context, apply func(concurrency.STM) error) error {
	_, err := concurrency.NewSTM(s.cli, apply, concurrency.WithAbortContext(ctx))
	return err
}

// LeaveServer removes a server's registration.
func (s *Storage) LeaveServer(ctx context.Context, id string) error {
	resp, err := s.cli.Delete(ctx, s.serverKey(id))
	if err != nil {
		return fmt.Errorf("delete server %s: %w", id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("server %s is not registered: %w", id, ErrNotFound)
	}
	return nil
}

// GetServers returns every registered server by id.
func (s *Storage) GetServers(ctx context.Context) (map[string]*fleet.ServerInfo, error) {
	resp, err := s.cli.Get(ctx, s.abs(keyServersDir), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read servers: %w", err)
	}
	return decodeMap[fleet.ServerInfo](resp.Kvs, s.abs(keyServersDir))
}

// --- alive/ ---

// PutAlive writes alive/<id> bound to the lease, so that the key vanishes
// when the worker stops keeping the lease alive.
func (s *Storage) PutAlive(ctx context.Context, id string, a *fleet.Alive, lease clientv3.LeaseID) error {
	return s.put(ctx, s.aliveKey(id), a, clientv3.WithLease(lease))
}

// GetAlive returns the liveness record of every running worker by id.
func (s *Storage) GetAlive(ctx context.Context) (map[string]*fleet.Alive, error) {
	resp, err := s.cli.Get(ctx, s.abs(keyAliveDir), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read alive: %w", err)
	}
	return decodeMap[fleet.Alive](resp.Kvs, s.abs(keyAliveDir))
}

// --- status/ ---

// ClaimCanary tries to make server id one of the n servers that take step
// of the rollout started at startedAt first. It reports whether id is one
// of them, now or from an earlier claim (a restarted worker).
func (s *Storage) ClaimCanary(ctx context.Context, startedAt time.Time, step, n int, id string) (bool, error) {
	places := make([]string, n)
	for i := range places {
		places[i] = s.canaryKey(startedAt, step, i)
	}
	var claimed bool
	err := s.update(ctx, func(stm concurrency.STM) error {
		claimed = false
		if n == 0 {
			return nil
		}
		stm.Get(places...) // one read for all the places
		free := ""
		for _, key := range places {
			switch stm.Get(key) {
			case id:
				claimed = true
				return nil
			case "":
				if free == "" {
					free = key
				}
			}
		}
		if free != "" {
			stm.Put(free, id)
			claimed = true
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("claim a canary place: %w", err)
	}
	return claimed, nil
}

// RollBack ends the failed request with its history record, refuses its
// version, and starts the rollback request next, in one transaction fenced
// on the caller's leader key and on the failed request's mod revision
// requestRev, so that a change of leader never leaves the fleet between a
// failed rollout and its rollback. ErrConflict means the request changed
// since it was read.
func (l *Leader) RollBack(ctx context.Context, h *fleet.HistoryRecord, refused *fleet.Refused, next *fleet.UpdateRequest, requestRev int64) error {
	s := l.s
	histData, err := encode(h)
	if err != nil {
		return err
	}
	refusedData, err := encode(refused)
	if err != nil {
		return err
	}
	nextData, err := encode(next)
	if err != nil {
		return err
	}
	ops := append([]clientv3.Op{
		clientv3.OpPut(s.historyKey(h.StartedAt), histData),
		clientv3.OpPut(s.refusedKey(refused.Version), refusedData),
	}, s.clearRollout()...)
	return l.revisionFenced(ctx, "roll back", requestRev, append(ops, clientv3.OpPut(s.abs(keyCurrent), nextData))...)
}

// clearRollout deletes what a rollout leaves besides its request: the
// statuses, step records, barrier, slots, canary places, pause and resume.
func (s *Storage) clearRollout() []clientv3.Op {
	ops := []clientv3.Op{
		clientv3.OpDelete(s.abs(keyServerStatus), clientv3.WithPrefix()),
		clientv3.OpDelete(s.abs(keyRollingDir), clientv3.WithPrefix()),
		clientv3.OpDelete(s.abs(keyCanaryDir), clientv3.WithPrefix()),
		clientv3.OpDelete(s.abs(keyPassed)),
		clientv3.OpDelete(s.abs(keyPause)),
		clientv3.OpDelete(s.abs(keyPlan)),
		clientv3.OpDelete(s.abs(keyResume)),
		clientv3.OpDelete(s.abs(keyTimelineDir), clientv3.WithPrefix()),
	}
	// What former versions left, in the formats they used.
	for _, dir := range retiredRolloutDirs {
		ops = append(ops, clientv3.OpDelete(s.abs(dir), clientv3.WithPrefix()))
	}
	return ops
}

// revisionFenced applies ops in a transaction fenced on the caller's
// leader key and on the request's mod revision requestRev. ErrNoLeader
// means the caller no longer leads; ErrConflict that the request changed
// since it was read.
func (l *Leader) revisionFenced(ctx context.Context, what string, requestRev int64, ops ...clientv3.Op) error {
	unchanged := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(l.s.abs(keyCurrent)), "=", requestRev)}
	resp, err := l.fencedTxn(ctx, what, clientv3.OpTxn(unchanged, ops, nil))
	if err != nil {
		return err
	}
	if !resp.Responses[0].GetResponseTxn().Succeeded {
		return fmt.Errorf("%s: the request changed since it was read: %w", what, ErrConflict)
	}
	return nil
}

// Unrefuse lets the updater roll a refused version out again. It reports
// whether the version was refused.
func (s *Storage) Unrefuse(ctx context.Context, version string) (bool, error) {
	resp, err := s.cli.Delete(ctx, s.refusedKey(version))
	if err != nil {
		return false, fmt.Errorf("unrefuse %s: %w", version, err)
	}
	return resp.Deleted > 0, nil
}

// LabelServer sets and removes labels of a joined server, keeping the
// others, and returns its record. ErrNotFound means it has not joined.
func (s *Storage) LabelServer(ctx context.Context, id string, set map[string]string, remove []string) (*fleet.ServerInfo, error) {
	key := s.serverKey(id)
	var info fleet.ServerInfo
	err := s.update(ctx, func(stm concurrency.STM) error {
		if stm.Rev(key) == 0 {
			return fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		info = fleet.ServerInfo{}
		if err := decode(key, []byte(stm.Get(key)), &info); err != nil {
			return err
		}
		labels := make(map[string]string, len(info.Labels)+len(set))
		maps.Copy(labels, info.Labels)
		maps.Copy(labels, set)
		for _, k := range remove {
			delete(labels, k)
		}
		if maps.Equal(labels, info.Labels) || (len(labels) == 0 && len(info.Labels) == 0) {
			return nil
		}
		info.Labels = labels
		data, err := encode(&info)
		if err != nil {
			return err
		}
		stm.Put(key, data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// GetServer returns a joined server's record; ErrNotFound when it has not
// joined.
func (s *Storage) GetServer(ctx context.Context, id string) (*fleet.ServerInfo, error) {
	var info fleet.ServerInfo
	if _, err := s.get(ctx, s.serverKey(id), &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// PutPlan records the steps of the plan of the rollout p is about, unless
// they are recorded already.
func (s *Storage) PutPlan(ctx context.Context, p *fleet.PlanSteps) error {
	data, err := encode(p)
	if err != nil {
		return err
	}
	key := s.abs(keyPlan)
	if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, data)).Commit(); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// PutPause holds the rollout at its next step boundary (ferry rollout
// pause).
func (s *Storage) PutPause(ctx context.Context, p *fleet.Pause) error {
	return s.put(ctx, s.abs(keyPause), p)
}

// DeletePause lets a paused rollout go on.
func (s *Storage) DeletePause(ctx context.Context) error {
	if _, err := s.cli.Delete(ctx, s.abs(keyPause)); err != nil {
		return fmt.Errorf("delete the pause: %w", err)
	}
	return nil
}

// PutResume lets the servers behind a canary take every step up to
// r.Step (ferry rollout resume).
func (s *Storage) PutResume(ctx context.Context, r *fleet.Resume) error {
	return s.put(ctx, s.abs(keyResume), r)
}

// PutResume lets the servers behind a canary take every step up to
// r.Step, when the step's pause has passed.
func (l *Leader) PutResume(ctx context.Context, r *fleet.Resume) error {
	return l.fencedPut(ctx, l.s.abs(keyResume), r)
}

// ReviseRequest writes the running request again, changed (a server the
// rollout goes on without), fenced on the caller's leader key and on the
// request's mod revision requestRev. ErrConflict means the request changed
// since it was read.
func (l *Leader) ReviseRequest(ctx context.Context, req *fleet.UpdateRequest, requestRev int64) error {
	data, err := encode(req)
	if err != nil {
		return err
	}
	return l.revisionFenced(ctx, "revise request", requestRev, clientv3.OpPut(l.s.abs(keyCurrent), data))
}

// StartRequest writes a new update request and deletes every worker status
// of the previous one, in one transaction fenced on the caller's leader key.
// Clearing the statuses matters for a rollout at the same version: an old
// "completed" must not count for the new one.
func (l *Leader) StartRequest(ctx context.Context, req *fleet.UpdateRequest) error {
	data, err := encode(req)
	if err != nil {
		return err
	}
	_, err = l.fencedTxn(ctx, "start request", append(l.s.clearRollout(), clientv3.OpPut(l.s.abs(keyCurrent), data))...)
	return err
}

// FinishRequest writes the finished request (completed or stopped) and its
// history record in one transaction, fenced on the caller's leader key and
// on the request's mod revision requestRev, so that a rollout gets exactly
// one record even across a change of leader, and a request cleared by
// `ferry recover` meanwhile is not written back. ErrConflict means the
// request changed since it was read.
func (l *Leader) FinishRequest(ctx context.Context, req *fleet.UpdateRequest, h *fleet.HistoryRecord, requestRev int64) error {
	reqData, err := encode(req)
	if err != nil {
		return err
	}
	histData, err := encode(h)
	if err != nil {
		return err
	}
	// The step records are in the history record now.
	return l.revisionFenced(ctx, "finish request", requestRev, clientv3.OpPut(l.s.abs(keyCurrent), reqData), clientv3.OpPut(l.s.historyKey(h.StartedAt), histData),
		clientv3.OpDelete(l.s.timelineDir(h.StartedAt), clientv3.WithPrefix()))
}

// GetHistory returns up to limit history records, newest first (all when
// limit <= 0).
func (s *Storage) GetHistory(ctx context.Context, limit int64) ([]*fleet.HistoryRecord, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(limit))
	}
	return s.readHistory(ctx, s.abs(keyHistoryDir), opts...)
}

func (s *Storage) readHistory(ctx context.Context, key string, opts ...clientv3.OpOption) ([]*fleet.HistoryRecord, error) {
	resp, err := s.cli.Get(ctx, key, opts...)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	out := make([]*fleet.HistoryRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h fleet.HistoryRecord
		if err := decode(string(kv.Key), kv.Value, &h); err != nil {
			return nil, err
		}
		out = append(out, &h)
	}
	return out, nil
}

// LastCompleted is the version of the newest rollout that started before
// t and completed, as history records it; "" when none did.
func (s *Storage) LastCompleted(ctx context.Context, before time.Time) (string, error) {
	end := s.historyKey(before)
	for {
		hs, err := s.readHistory(ctx, s.abs(keyHistoryDir), clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(64))
		if err != nil || len(hs) == 0 {
			return "", err
		}
		for _, h := range hs {
			if h.Result == fleet.ResultCompleted {
				return h.Version, nil
			}
		}
		end = s.historyKey(hs[len(hs)-1].StartedAt)
	}
}

// GetHistoryStarted returns the history records of the rollouts that
// started in [from, to), oldest first.
func (s *Storage) GetHistoryStarted(ctx context.Context, from, to time.Time) ([]*fleet.HistoryRecord, error) {
	return s.readHistory(ctx, s.historyKey(from), clientv3.WithRange(s.historyKey(to)))
}

// PutCheckTrigger asks the updater leader for an immediate release check.
// Any updater may write it; the leader notices the change.
// It returns the revision of the write, which the check that answers it
// records (fleet.CheckInfo.Trigger).
func (s *Storage) PutCheckTrigger(ctx context.Context, t *fleet.CheckTrigger) (int64, error) {
	return s.putRev(ctx, s.abs(keyTrigger), t)
}

// PutReleaseInfo writes info/release.
func (l *Leader) PutReleaseInfo(ctx context.Context, info *fleet.ReleaseInfo) error {
	return l.fencedPut(ctx, l.s.abs(keyReleaseInfo), info)
}

// PutCheckInfo records the leader's last release check.
func (l *Leader) PutCheckInfo(ctx context.Context, c *fleet.CheckInfo) error {
	return l.fencedPut(ctx, l.s.abs(keyCheck), c)
}

// GetReleaseInfo returns info/release, or ErrNotFound.
func (s *Storage) GetReleaseInfo(ctx context.Context) (*fleet.ReleaseInfo, error) {
	var info fleet.ReleaseInfo
	if _, err := s.get(ctx, s.abs(keyReleaseInfo), &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Leader writes as the updater leader that holds one leader key (its
// election key): every write it makes is fenced on that key, in the same
// transaction, so that a write from a leader that lost its election
// changes nothing and returns ErrNoLeader. The updater acts as leader only
// through it; no leader write exists without the fence.
type Leader struct {
	s   *Storage
	key string
}

// AsLeader returns the writer of the leader that holds key.
func (s *Storage) AsLeader(key string) *Leader { return &Leader{s: s, key: key} }

// fence holds while the leader key exists. An empty key never holds.
func (l *Leader) fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), ">", 0)
}

func (l *Leader) fencedPut(ctx context.Context, key string, v any) error {
	data, err := encode(v)
	if err != nil {
		return err
	}
	_, err = l.fencedTxn(ctx, "write "+key, clientv3.OpPut(key, data))
	return err
}

// fencedTxn applies ops only while the leader key exists; otherwise it
// changes nothing and returns ErrNoLeader.
func (l *Leader) fencedTxn(ctx context.Context, what string, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	if l.key == "" {
		return nil, fmt.Errorf("%s: no leader key: %w", what, ErrNoLeader)
	}
	resp, err := l.s.cli.Txn(ctx).If(l.fence()).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", what, ErrNoLeader)
	}
	return resp, nil
}

// PutStatus writes a worker's status.
func (s *Storage) PutStatus(ctx context.Context, id string, st *fleet.UpdateStatus) error {
	return s.put(ctx, s.statusKey(id), st)
}

// PutStatusAndRecords writes a worker's status and, in the same
// transaction, those of this server's step records of the status's
// rollout that changed since its last write of them (see
// fleet.StepRecord and Timeline).
func (s *Storage) PutStatusAndRecords(ctx context.Context, id string, st *fleet.UpdateStatus, records []fleet.StepRecord) error {
	data, err := encode(st)
	if err != nil {
		return err
	}
	recs, err := encode(records)
	if err != nil {
		return err
	}
	if _, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.timelineKey(st.Rollout, id, time.Now()), recs), clientv3.OpPut(s.statusKey(id), data)).Commit(); err != nil {
		return fmt.Errorf("write %s: %w", s.statusKey(id), err)
	}
	return nil
}

// PutStepRecords writes those of server id's step records of the rollout
// that started at rollout that changed since its last write of them.
func (s *Storage) PutStepRecords(ctx context.Context, id string, rollout time.Time, records []fleet.StepRecord) error {
	return s.put(ctx, s.timelineKey(rollout, id, time.Now()), records)
}

// Recover clears the current request, every worker status and every
// contents/ record, so that the updater starts the rollout again. It acts
// only when the request is still the one at requestRev (as returned by
// GetRequest or a snapshot); otherwise it returns ErrConflict. h, when not
// nil, is the record of an attempt that the updater has not finished and
// so not recorded: it is written in the same transaction, so that no
// attempt leaves history without a record.
func (s *Storage) Recover(ctx context.Context, requestRev int64, h *fleet.HistoryRecord) error {
	ops := []clientv3.Op{
		clientv3.OpDelete(s.abs(keyStatusDir), clientv3.WithPrefix()),
		clientv3.OpDelete(s.abs(keyContentsDir), clientv3.WithPrefix()),
		clientv3.OpDelete(s.abs(keyTimelineDir), clientv3.WithPrefix()),
	}
	if h != nil {
		data, err := encode(h)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.historyKey(h.StartedAt), data))
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(s.abs(keyCurrent)), "=", requestRev)).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("recover: the request changed since it was read: %w", ErrConflict)
	}
	return nil
}

// --- pin ---

// PutPin stores the pin.
func (s *Storage) PutPin(ctx context.Context, p *fleet.Pin) error {
	return s.put(ctx, s.abs(keyPin), p)
}

// Trust statements (see trust.Statement): signed, so that etcd carries
// them without being trusted with them. Any writer may put one; a server
// applies it only when a key it trusts signed it.

// GetKeyStatement returns the latest keys statement, or ErrNotFound.
func (s *Storage) GetKeyStatement(ctx context.Context) (*trust.Signed, error) {
	return s.getSigned(ctx, keyTrustKeys)
}

// PutKeyStatement publishes a keys statement.
func (s *Storage) PutKeyStatement(ctx context.Context, sd *trust.Signed) error {
	return s.put(ctx, s.abs(keyTrustKeys), sd)
}

// GetWithdrawals returns the latest withdrawals statement, or ErrNotFound.
func (s *Storage) GetWithdrawals(ctx context.Context) (*trust.Signed, error) {
	return s.getSigned(ctx, keyTrustWithdraw)
}

// PutWithdrawals publishes a withdrawals statement.
func (s *Storage) PutWithdrawals(ctx context.Context, sd *trust.Signed) error {
	return s.put(ctx, s.abs(keyTrustWithdraw), sd)
}

func (s *Storage) getSigned(ctx context.Context, key string) (*trust.Signed, error) {
	var sd trust.Signed
	if _, err := s.get(ctx, s.abs(key), &sd); err != nil {
		return nil, err
	}
	return &sd, nil
}

// DeletePin removes the pin; ErrNotFound when there was none.
func (s *Storage) DeletePin(ctx context.Context) error {
	resp, err := s.cli.Delete(ctx, s.abs(keyPin))
	if err != nil {
		return fmt.Errorf("delete pin: %w", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("pin: %w", ErrNotFound)
	}
	return nil
}

// --- contents/ ---

// PutContents records the outcome of a once-per-fleet action.
func (s *Storage) PutContents(ctx context.Context, target string, c *fleet.ContentsStatus) error {
	return s.put(ctx, s.contentsKey(target), c)
}

// GetContents returns contents/<target>, or ErrNotFound.
func (s *Storage) GetContents(ctx context.Context, target string) (*fleet.ContentsStatus, error) {
	var c fleet.ContentsStatus
	if _, err := s.get(ctx, s.contentsKey(target), &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// --- helpers ---

func decodeMap[T any](kvs []*mvccKV, dir string) (map[string]*T, error) {
	out := make(map[string]*T, len(kvs))
	for _, kv := range kvs {
		var v T
		if err := decode(string(kv.Key), kv.Value, &v); err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(string(kv.Key), dir)] = &v
	}
	return out, nil
}

func (s *Storage) configFromKVs(kvs []*mvccKV) map[string]string {
	dir := s.abs(keyConfigDir)
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[strings.TrimPrefix(string(kv.Key), dir)] = string(kv.Value)
	}
	return out
}

// --- rolling/ ---

// AcquireSlot blocks until the server holds one of n slots of a rolling
// step, and returns a function that frees it. The slot is bound to lease,
// so a worker that dies frees its slot with its lease.
func (s *Storage) AcquireSlot(ctx context.Context, startedAt time.Time, step string, n int, id string, lease clientv3.LeaseID) (func(context.Context) error, error) {
	dir := s.slotsDir(startedAt, step)
	for {
		rev := int64(0)
		for i := 0; i < n; i++ {
			key := fmt.Sprintf("%s%d", dir, i)
			created, holder, answered, err := s.createOrGet(ctx, key, id, lease)
			if err != nil {
				return nil, fmt.Errorf("acquire a slot of %s: %w", step, err)
			}
			if created {
				return func(ctx context.Context) error {
					_, err := s.cli.Txn(ctx).
						If(clientv3.Compare(clientv3.Value(key), "=", id)).
						Then(clientv3.OpDelete(key)).
						Commit()
					return err
				}, nil
			}
			if holder == id {
				// A slot taken before a restart, with the same lease.
				return func(ctx context.Context) error { _, err := s.cli.Delete(ctx, key); return err }, nil
			}
			rev = max(rev, answered)
		}
		// Every slot is taken: wait for one to be freed.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterPut())
		select {
		case <-ctx.Done():
		case <-wch:
		}
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// --- install/ ---

// GetInstalled returns what a worker recorded as installed, or ErrNotFound.
func (s *Storage) GetInstalled(ctx context.Context, id, kind, name string) (*fleet.Installed, error) {
	var in fleet.Installed
	if _, err := s.get(ctx, s.installKey(id, kind, name), &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// PutInstalled records what a worker installed.
func (s *Storage) PutInstalled(ctx context.Context, id, kind, name string, in *fleet.Installed) error {
	return s.put(ctx, s.installKey(id, kind, name), in)
}

func encode(v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", v, err)
	}
	return string(data), nil
}

func decode(key string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s holds malformed JSON: %v", fleet.ErrInvalid, key, err)
	}
	return nil
}
