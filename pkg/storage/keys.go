package storage

import (
	"fmt"
	"time"
)

// Every key ferry stores in etcd is built here, relative to the prefix given
// to New. No other file, and no other package, knows a key name or builds
// one. schema.go keeps the keys and formats that former versions used.
const (
	keyConfigDir     = "config/"
	keyServersDir    = "info/servers/"
	keyReleaseInfo   = "info/release"
	keyCheck         = "info/check"
	keyAliveDir      = "alive/"
	keyPin           = "pin"
	keyPing          = "ping" // never written: read to see that etcd answers
	keyStatusDir     = "status/"
	keyCurrent       = "status/current"
	keyPassed        = "status/passed"
	keyPause         = "status/pause"
	keyPlan          = "status/plan"
	keyResume        = "status/resume"
	keyServerStatus  = "status/servers/"
	keyContentsDir   = "contents/"
	keyHistoryDir    = "history/"
	keyInstallDir    = "install/"
	keyTrigger       = "trigger/check"
	keyRollingDir    = "rolling/"
	keyCanaryDir     = "canary/"
	keyRefusedDir    = "refused/"
	keyPeersDir      = "peers/"
	keyTimelineDir   = "timeline/"
	keyTrustKeys     = "trust/keys"
	keyTrustWithdraw = "trust/withdrawn"
	keyUpdaterLeader = "leader/updater/"
	keyWorkerLeader  = "leader/worker/"
)

// allKeys are every key and directory above, for the tests that check
// their order and their documentation.
var allKeys = []string{keyConfigDir, keyServersDir, keyReleaseInfo, keyCheck, keyAliveDir, keyPin, keyPing, keyStatusDir, keyCurrent, keyPassed,
	keyPause, keyPlan, keyResume, keyServerStatus, keyContentsDir, keyHistoryDir, keyInstallDir, keyTrigger, keyRollingDir, keyCanaryDir, keyRefusedDir, keyPeersDir,
	keyTimelineDir, keyTrustKeys, keyTrustWithdraw, keyUpdaterLeader, keyWorkerLeader}

// rolloutID names a rollout in keys: its start, in UTC, at a fixed width,
// so that keys sort by time.
func rolloutID(startedAt time.Time) string {
	return startedAt.UTC().Format("2006-01-02T15:04:05.000000000Z")
}

func (s *Storage) abs(rel string) string            { return s.prefix + rel }
func (s *Storage) configKey(name string) string     { return s.abs(keyConfigDir + name) }
func (s *Storage) serverKey(id string) string       { return s.abs(keyServersDir + id) }
func (s *Storage) aliveKey(id string) string        { return s.abs(keyAliveDir + id) }
func (s *Storage) statusKey(id string) string       { return s.abs(keyServerStatus + id) }
func (s *Storage) contentsKey(target string) string { return s.abs(keyContentsDir + target) }
func (s *Storage) refusedKey(version string) string { return s.abs(keyRefusedDir + version) }

// historyKey is the record of the rollout that started at startedAt.
func (s *Storage) historyKey(startedAt time.Time) string {
	return s.abs(keyHistoryDir + rolloutID(startedAt))
}

// installKey is what server id installed of kind (deb, image) name.
func (s *Storage) installKey(id, kind, name string) string {
	return s.abs(keyInstallDir + id + "/" + kind + "/" + name)
}

// canaryKey is place i of the canary of step of a rollout.
func (s *Storage) canaryKey(startedAt time.Time, step, i int) string {
	return s.abs(fmt.Sprintf("%s%s/%d/%d", keyCanaryDir, rolloutID(startedAt), step, i))
}

// slotsDir holds the slots of the rolling step named step of a rollout.
func (s *Storage) slotsDir(startedAt time.Time, step string) string {
	return s.abs(keyRollingDir + rolloutID(startedAt) + "/slots/" + step + "/")
}

// SpreadLock is the key prefix of the lock that keeps two servers whose
// label key has the same value out of step k of a rollout at once.
func (s *Storage) SpreadLock(startedAt time.Time, k int, key, value string) string {
	return s.abs(fmt.Sprintf("%s%s/spread/%d/%s=%s/", keyRollingDir, rolloutID(startedAt), k, key, value))
}

// peerClaim is the claim of the server that fetches digest of release
// from upstream for the site; peerDir holds the servers that hold it.
func (s *Storage) peerClaim(release, digest string) string {
	return s.abs(keyPeersDir + release + "/" + digest)
}
func (s *Storage) peerDir(release, digest string) string { return s.peerClaim(release, digest) + "/" }

// timelineDir holds the step records of the rollout that started at
// startedAt; timelineKey is a write of server id's that changed, made at
// at: each write a key of its own, so that none carries the records that
// an earlier one did.
func (s *Storage) timelineDir(startedAt time.Time) string {
	return s.abs(keyTimelineDir + rolloutID(startedAt) + "/")
}
func (s *Storage) timelineKey(startedAt time.Time, id string, at time.Time) string {
	return fmt.Sprintf("%s%s/%019d", s.timelineDir(startedAt), id, at.UnixNano())
}

// UpdaterElectionPrefix is the key prefix of the updater leader election.
func (s *Storage) UpdaterElectionPrefix() string { return s.abs(keyUpdaterLeader) }

// WorkerElection is the key prefix of the election among the workers for
// the leader step whose contents target is target.
func (s *Storage) WorkerElection(target string) string {
	return s.abs(keyWorkerLeader + target + "/")
}
