package storage

import "time"

// Every key ferry stores in etcd is built here, relative to the prefix given
// to New. No other package knows a key name.
const (
	keyConfigDir     = "config/"
	keyServersDir    = "info/servers/"
	keyReleaseInfo   = "info/release"
	keyCheck         = "info/check"
	keyAliveDir      = "alive/"
	keyPin           = "pin"
	keyStatusDir     = "status/"
	keyCurrent       = "status/current"
	keyPassed        = "status/passed"
	keyPause         = "status/pause"
	keyResume        = "status/resume"
	keyServerStatus  = "status/servers/"
	keyContentsDir   = "contents/"
	keyHistoryDir    = "history/"
	keyInstallDir    = "install/"
	keyTrigger       = "trigger/check"
	keyRollingDir    = "rolling/"
	keyCanaryDir     = "canary/"
	keyRefusedDir    = "refused/"
	keyBarrierDir    = "barrier/"
	keyTrustKeys     = "trust/keys"
	keyTrustWithdraw = "trust/withdrawn"
	keyUpdaterLeader = "leader/updater/"
	keyWorkerLeader  = "leader/worker/"
)

func (s *Storage) configKey(name string) string     { return s.prefix + keyConfigDir + name }
func (s *Storage) serverKey(id string) string       { return s.prefix + keyServersDir + id }
func (s *Storage) aliveKey(id string) string        { return s.prefix + keyAliveDir + id }
func (s *Storage) statusKey(id string) string       { return s.prefix + keyServerStatus + id }
func (s *Storage) contentsKey(target string) string { return s.prefix + keyContentsDir + target }
func (s *Storage) historyKey(startedAt time.Time) string {
	// Fixed width in UTC, so that keys sort by time.
	return s.prefix + keyHistoryDir + startedAt.UTC().Format("2006-01-02T15:04:05.000000000Z")
}
func (s *Storage) abs(rel string) string { return s.prefix + rel }

// UpdaterElectionPrefix is the key prefix of the updater leader election.
func (s *Storage) UpdaterElectionPrefix() string { return s.prefix + keyUpdaterLeader }

// WorkerElectionPrefix is the key prefix of the worker leader election.
func (s *Storage) WorkerElectionPrefix() string { return s.prefix + keyWorkerLeader }
