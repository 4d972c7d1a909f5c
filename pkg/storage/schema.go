package storage

// The etcd schema's past: what former versions wrote, and what this one
// does with it. A change of a key's name or format is recorded here, so
// that an upgrade of the schema is explicit and a reader of etcd knows
// what it may still meet.
//
//   - barrier/ held one key per server and step before status/passed (the
//     coordinator's single barrier key) replaced it. Nothing writes it;
//     the start of a rollout deletes what is left.
//   - canary/ and rolling/ named a rollout by its start in RFC 3339 with
//     trimmed nanoseconds (canary/, rolling/<id>/<k>/spread/) or in a
//     compact form (rolling/<id>/<step>/ for slots); both now use
//     rolloutID, the fixed-width form of history/, and slots and spread
//     locks have subtrees of their own. The keys live only as long as one
//     rollout, every server of a rollout runs one version once it has
//     upgraded itself, and the start of the next rollout deletes them, so
//     the old forms need no reader.
//   - config/signing-keys, config/allow-unsigned and config/github-api-url
//     left etcd for each server's own disk (fleet's retired config keys say
//     where to); a value left under them is never read.
//   - status/servers/<id> carried the server's whole step timeline
//     (timeline: [...]) before timeline/<started_at>/<id> held it apart
//     from the status. A status with it still decodes; its timeline is not
//     read, so a rollout whose history an updater of this version writes
//     over workers of the former one has no timeline in its record.
//   - A status/servers/<id> without rollout, and a status/current without
//     release, were written before those fields existed: fleet's
//     UpdateStatus.For and the workers' own release lookup accept them.

// retiredRolloutDirs are directories that former versions wrote for one
// rollout; starting a rollout deletes what is left of them.
var retiredRolloutDirs = []string{"barrier/"}
