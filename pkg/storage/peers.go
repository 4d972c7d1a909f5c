package storage

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// --- peers/ ---

// Holder is a server that announced it holds some content.
type Holder struct {
	// URL is where it serves it.
	URL string
	// Revision is that of the announcement; Lease the lease it lives
	// with, which is another one after the server restarted.
	Revision int64
	Lease    clientv3.LeaseID
}

// PeerHolders returns the servers that announced that they hold the
// content digest of release, by id, and the revision of the read.
func (s *Storage) PeerHolders(ctx context.Context, release, digest string) (map[string]Holder, int64, error) {
	dir := s.peerDir(release, digest)
	resp, err := s.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", dir, err)
	}
	holders := make(map[string]Holder, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		holders[strings.TrimPrefix(string(kv.Key), dir)] = Holder{URL: string(kv.Value), Revision: kv.ModRevision, Lease: clientv3.LeaseID(kv.Lease)}
	}
	return holders, resp.Header.Revision, nil
}

// AnnouncePeer says that server id holds digest of release and serves it
// at url, for as long as the lease lives.
func (s *Storage) AnnouncePeer(ctx context.Context, release, digest, id, url string, lease clientv3.LeaseID) error {
	key := s.peerDir(release, digest) + id
	if _, err := s.cli.Put(ctx, key, url, clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// ClaimUpstream makes server id the one that fetches digest of release
// from upstream for the site, unless another server holds the claim, or a
// server announced that it holds the content after revision seen (when
// the caller read the holders). The claim lives with the lease, so that
// it passes on when its holder dies. It returns the claim's holder (id
// when claimed; "" when a server announced the content since: look
// again) and the revision of the answer.
func (s *Storage) ClaimUpstream(ctx context.Context, release, digest, id string, lease clientv3.LeaseID, seen int64) (holder string, rev int64, err error) {
	key, dir := s.peerClaim(release, digest), s.peerDir(release, digest)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(dir), "<", seen+1).WithPrefix()).
		Then(clientv3.OpPut(key, id, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", 0, fmt.Errorf("claim %s: %w", key, err)
	}
	if resp.Succeeded {
		return id, resp.Header.Revision, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		holder = string(kvs[0].Value)
	}
	return holder, resp.Header.Revision, nil
}

// createOrGet writes value at key, bound to lease, unless key exists. It
// returns whether it wrote, the key's value either way, and the revision
// of the answer.
func (s *Storage) createOrGet(ctx context.Context, key, value string, lease clientv3.LeaseID) (created bool, holder string, rev int64, err error) {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, value, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, "", 0, err
	}
	if resp.Succeeded {
		return true, value, resp.Header.Revision, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		holder = string(kvs[0].Value)
	}
	return false, holder, resp.Header.Revision, nil
}

// DropUpstreamClaim gives up server id's claim on digest of release.
func (s *Storage) DropUpstreamClaim(ctx context.Context, release, digest, id string) error {
	key := s.peerClaim(release, digest)
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", id)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("drop %s: %w", key, err)
	}
	return nil
}

// WaitPeers blocks until a holder or the upstream claim of digest of
// release changes at a revision after afterRev.
func (s *Storage) WaitPeers(ctx context.Context, release, digest string, afterRev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	key := s.peerClaim(release, digest)
	for resp := range s.cli.Watch(ctx, key, clientv3.WithPrefix(), clientv3.WithRev(afterRev+1)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", key, err)
		}
		if len(resp.Events) > 0 {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch %s: channel closed", key)
}

// PeersOf returns every server that announced holding some content of
// release, by id, with its URL.
func (s *Storage) PeersOf(ctx context.Context, release string) (map[string]string, error) {
	dir := s.abs(keyPeersDir + release + "/")
	resp, err := s.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	peers := map[string]string{}
	for _, kv := range resp.Kvs {
		// <digest>/<id>; a claim is <digest> alone.
		if _, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), dir), "/"); ok && id != "" {
			peers[id] = string(kv.Value)
		}
	}
	return peers, nil
}
