package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

// Runtime is what a Node needs of agent.Runtime: adopting the sessions of
// a partition it owns.
type Runtime interface {
	Adopt(ctx context.Context, owns func(agent.SessionKey) bool) (*agent.Scope, error)
	// Wake lets a turn waiting here for an approval decided on another
	// replica go on.
	Wake(ctx context.Context, id agent.ApprovalID) error
}

// Store is what a Node needs of the store: the accepted messages whose
// turn has not finished. The store is the truth about the work; the stream
// only rings the bell.
type Store interface {
	Pending(ctx context.Context) ([]agent.QueuedInbound, error)
}

// InboundGetter is a Store that can load one accepted message whose turn
// has not finished; ok is false when it is unknown or finished. Without
// it, a Node finds each announced message with Pending.
type InboundGetter interface {
	PendingInbound(ctx context.Context, id agent.InboundID) (q agent.QueuedInbound, ok bool, err error)
}

// SessionLoader is a Store that can load an announced message together
// with the earlier messages of its session whose turn has not finished
// (PendingUpTo: in order, the announced one last). With it, a message
// whose announcement is late or lost (the replica that accepted it died
// before publishing; a pull request of a dead owner took it) still runs
// before the later messages of its session, not at the next sweep after
// them. A Store that has neither this nor InboundGetter is read with
// Pending.
type SessionLoader interface {
	PendingUpTo(ctx context.Context, id agent.InboundID) ([]agent.QueuedInbound, error)
}

// Defaults.
const (
	DefaultPartitions = 32
	DefaultLeaseTTL   = 10 * time.Second
	DefaultSweep      = 30 * time.Second
	// DefaultPrefix names the stream ("TALON_IN"), its subjects
	// ("talon.in.<partition>") and the buckets ("talon_partitions").
	DefaultPrefix = "talon"
)

// Config configures a Node. Zero values take the defaults.
type Config struct {
	// Partitions is P: a session's partition is a hash of its key mod P.
	// Every replica of a deployment must use the same P; the first to
	// start records it in the bucket and the others check it.
	Partitions int
	// Replica is this replica's id (NewReplicaID when "").
	Replica string
	// LeaseTTL is how long a partition's lease lasts unrenewed
	// (default 10 s): a dead replica's partitions are taken over within
	// about LeaseTTL plus a fifth of it.
	LeaseTTL time.Duration
	// Sweep is how often the owner of a partition looks in the store for
	// its messages whose announcement was lost (default 30 s).
	Sweep time.Duration
	// Prefix names the stream, subjects and buckets (DefaultPrefix).
	Prefix string
	// StreamReplicas is the replication of the stream and buckets in a
	// NATS cluster (default 1).
	StreamReplicas int
	// Alone, when not "", says that this replica's store is its own (a
	// SQLite file), so that no other replica may run beside it: a message
	// one of them accepted would be announced to an owner whose store does
	// not have it. It names the store (a hash of the host and the data
	// directory), so that the same store's next process is not kept
	// waiting by its dead predecessor. Open refuses to start beside a
	// running replica when Alone is set, and beside a running replica that
	// has it set.
	Alone string
	// Tools, when not "", is a digest of this replica's tools (their
	// names, manifests and modules). A turn runs, or resumes, on whichever
	// replica owns its session's partition, and calls the tools that
	// replica has: Open refuses to start beside a running replica whose
	// digest differs.
	Tools string
	// Settings are the settings of this replica that every replica must
	// share (the whole talon.yaml but what is each replica's own, such as
	// its addresses, data directory and resources), by dotted name
	// ("agent.rate_per_minute"), each value as text. A turn runs on
	// whichever replica owns its session's partition, with that replica's
	// model, limits and rules, and the turn limits hold across every
	// replica: Open records them in the bucket "<prefix>_cluster" under
	// their digest, announces the digest in this replica's alive key, and
	// refuses to start beside a running replica whose recorded settings
	// differ from these in a name both have (a newer version may have
	// settings an older one has not). Empty, nothing is checked or
	// recorded. The values are stored in NATS and named in errors: they
	// must hold no secret.
	Settings map[string]string
}

// Node distributes the turns of sessions over the replicas of a
// deployment: an accepted message is announced on the subject of its
// session's partition (Dispatch), and the one replica that holds the
// partition's lease takes it from there into its runtime, in order.
type Node struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	pub     jetstream.JetStream // publishes the announcements (Dispatch)
	kv      jetstream.KeyValue
	rt      Runtime
	store   Store
	log     zerolog.Logger
	stream  string
	leases  *Leases
	limits  *Limits
	started chan struct{}
	// fenceName names the fencing tokens of the partitions:
	// "<fenceName>/<partition>" (agent.Fence).
	fenceName string

	mu     sync.Mutex
	scopes map[int]*agent.Scope      // the partitions this replica serves; guarded by mu
	holds  map[agent.InboundID]*held // messages held for other replicas' amendments (amend.go); guarded by mu
	// unannounced are the messages this replica accepted but could not
	// announce (NATS down or slow), announced again once it answers
	// (reannounce); at most maxUnannounced, the rest left to the owners'
	// sweeps. Guarded by mu.
	unannounced []announcement
}

// Open makes sure the stream and the lease bucket exist (creating them, or
// updating their settings) and returns a Node that has not started.
func Open(ctx context.Context, nc *nats.Conn, cfg Config, rt Runtime, st Store, log zerolog.Logger) (*Node, error) {
	if rt == nil || st == nil {
		return nil, errors.New("cluster: a node needs a runtime and a store")
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Partitions > 1024 {
		return nil, fmt.Errorf("cluster: %d partitions: at most 1024", cfg.Partitions)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = DefaultSweep
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Replica == "" {
		cfg.Replica = NewReplicaID("talon")
	}
	if !validID(cfg.Replica) || !validID(cfg.Prefix) {
		return nil, fmt.Errorf("cluster: replica id %q and prefix %q may have only letters, digits, '-' and '_'", cfg.Replica, cfg.Prefix)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	// The announcements' own context: its futures expire after
	// dispatchTimeout, so none is kept when an acknowledgement is lost.
	pub, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(dispatchTimeout))
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	n := &Node{cfg: cfg, nc: nc, js: js, pub: pub, rt: rt, store: st, log: log.With().Str("replica", cfg.Replica).Logger(),
		stream: streamName(cfg.Prefix), started: make(chan struct{}), scopes: map[int]*agent.Scope{}}
	_, err = createStream(ctx, js, jetstream.StreamConfig{
		Name:        n.stream,
		Description: "Talon: ids of accepted messages, by partition of their session (the store has the messages)",
		Subjects:    []string{cfg.Prefix + ".in.*"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		// An announcement older than this is moot: the owner's sweep has
		// found its message in the store.
		MaxAge:   24 * time.Hour,
		Replicas: max(cfg.StreamReplicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: work stream %s: %w (is JetStream enabled on the server? nats-server -js)", n.stream, err)
	}
	if err := checkLeaseTTL(ctx, js, cfg); err != nil {
		return nil, err
	}
	if n.kv, err = EnsureBucket(ctx, js, cfg.Prefix+"_partitions", cfg.LeaseTTL, cfg.StreamReplicas); err != nil {
		return nil, err
	}
	status, err := n.kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: lease bucket %s_partitions: %w", cfg.Prefix, err)
	}
	// The fencing tokens are the bucket's revisions, which start again
	// from 1 in a bucket made anew: its creation names them apart.
	n.fenceName = cfg.Prefix + "_partitions"
	if bs, ok := status.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		n.fenceName += "@" + strconv.FormatInt(bs.StreamInfo().Created.UnixNano(), 36)
	}
	shared, err := settingsBucket(ctx, js, cfg.Prefix, cfg.StreamReplicas)
	if err != nil {
		return nil, err
	}
	if err := checkPartitions(ctx, shared, cfg); err != nil {
		return nil, err
	}
	settings, record, err := settingsDigest(cfg.Settings)
	if err != nil {
		return nil, err
	}
	if err := checkPeers(ctx, n.kv, shared, cfg, settings, 0); err != nil {
		return nil, err
	}
	if settings != "" {
		// Recorded once this replica may run beside the ones running
		// (a refused one leaves none), and before its starting key names
		// it.
		if _, err := shared.Put(ctx, settingsKey(settings), record); err != nil {
			return nil, fmt.Errorf("cluster: record this replica's settings in bucket %s_cluster: %w", cfg.Prefix, err)
		}
	}
	// A replica starting at this instant read the keys before this one's
	// alive key was written: each names itself in its starting key, then
	// reads the keys again up to it. Of two that start together, the one
	// that wrote its key last sees the other's, so a mismatch is refused
	// by at least one of them.
	rev, err := n.kv.Put(ctx, startingKey(cfg.Replica), aliveValue(aliveInfo{alone: cfg.Alone, tools: cfg.Tools, settings: settings}, time.Now()))
	if err != nil {
		return nil, fmt.Errorf("cluster: lease bucket %s_partitions: %w", cfg.Prefix, err)
	}
	if err := checkPeers(ctx, n.kv, shared, cfg, settings, rev); err != nil {
		n.Abandon()
		return nil, err
	}
	if n.limits, err = OpenLimits(ctx, js, cfg.Prefix, cfg.Replica, cfg.LeaseTTL, cfg.StreamReplicas, n.log); err != nil {
		n.Abandon()
		return nil, err
	}
	n.leases = &Leases{KV: n.kv, Replica: cfg.Replica, Slots: cfg.Partitions, TTL: cfg.LeaseTTL, Work: n.serve, Log: n.log,
		Alone: cfg.Alone, Tools: cfg.Tools, Settings: settings, Starting: true}
	return n, nil
}

// checkPartitions records P in a bucket of its own (which never expires)
// or checks it against the recorded one: two replicas that hash sessions
// differently would both run one session's turns.
func checkPartitions(ctx context.Context, kv jetstream.KeyValue, cfg Config) error {
	want := strconv.Itoa(cfg.Partitions)
	if _, err := kv.Create(ctx, "partitions", []byte(want)); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("cluster: record nats.partitions: %w", err)
	}
	e, err := kv.Get(ctx, "partitions")
	if err != nil {
		return fmt.Errorf("cluster: read the recorded partitions: %w", err)
	}
	if got := string(e.Value()); got != want {
		return fmt.Errorf("cluster: nats.partitions is %s here but %s in the deployment's NATS (bucket %s_cluster): every replica must use the same; "+
			"to change it, stop every replica, then delete that key (nats kv del %s_cluster partitions)", want, got, cfg.Prefix, cfg.Prefix)
	}
	return nil
}

// checkLeaseTTL refuses a lease TTL other than the one the replicas
// running now use. The buckets' MaxAge is the TTL, and a replica fences
// its leases a fixed share of its own TTL after its last renewal: a
// replica that made the buckets' MaxAge shorter under the others would
// let their leases expire, and be taken, before they stop using them. So
// the TTL changes only while no replica holds or renews a lease (the
// partitions bucket has no key), and the first replica to start then
// sets it.
func checkLeaseTTL(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	bucket := cfg.Prefix + "_partitions"
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("cluster: lease bucket %s: %w", bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("cluster: lease bucket %s: %w", bucket, err)
	}
	if st.TTL() == cfg.LeaseTTL {
		return nil
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("cluster: lease bucket %s: %w", bucket, err)
	}
	defer keys.Stop()
	for range keys.Keys() {
		return fmt.Errorf("cluster: nats.lease_ttl is %s here but %s for the replicas running now (bucket %s): every replica must use the same; "+
			"to change it, stop every replica, wait %s, then start them with the new value", cfg.LeaseTTL, st.TTL(), bucket, st.TTL())
	}
	return nil
}

// checkPeers refuses a replica beside the running or starting ones (their
// alive and starting keys) when either has a store of its own
// (Config.Alone): their stores would not hold each other's messages; when
// their tools differ (Config.Tools); or when their settings differ
// (Config.Settings, whose digest is settings; shared is the bucket that
// records them). through, when not 0, is the revision of this replica's
// own starting key: the keys written before it are all read (peers).
func checkPeers(ctx context.Context, kv, shared jetstream.KeyValue, cfg Config, settings string, through uint64) error {
	others, err := peers(ctx, kv, cfg.Replica, through)
	if err != nil {
		return fmt.Errorf("cluster: lease bucket %s_partitions: %w", cfg.Prefix, err)
	}
	same := map[string]bool{settings: true} // settings digests found to agree with this one's
	for _, other := range slices.Sorted(maps.Keys(others)) {
		peer := others[other]
		switch {
		case cfg.Alone != "" && peer.alone == cfg.Alone:
			// The same store's previous process, dead: this one holds
			// the data directory's lock now.
		case cfg.Alone != "":
			return fmt.Errorf("cluster: replica %s runs in this deployment (nats.url, nats.prefix %s), and this one has the SQLite store, "+
				"which no other replica can share: replicas share a PostgreSQL store (store.driver: postgres); with SQLite run one process "+
				"(a replica that has just ended is forgotten within nats.lease_ttl, %s)", other, cfg.Prefix, cfg.LeaseTTL)
		case peer.alone != "":
			return fmt.Errorf("cluster: replica %s runs in this deployment (nats.url, nats.prefix %s) on a SQLite store of its own, "+
				"which no other replica can share: stop it, and give every replica the PostgreSQL store (store.driver: postgres) "+
				"(a replica that has just ended is forgotten within nats.lease_ttl, %s)", other, cfg.Prefix, cfg.LeaseTTL)
		case cfg.Tools != "" && peer.tools != "" && peer.tools != cfg.Tools:
			return fmt.Errorf("cluster: replica %s runs in this deployment (nats.url, nats.prefix %s) with other tools than this one "+
				"(digest %s there, %s here): a turn runs, or resumes, on whichever replica owns its session, with that replica's tools, "+
				"so every replica needs the same tools directory, manifests and modules. Give this one the same tools; to change them, "+
				"stop every replica, then start them all with the new ones (a replica that has just ended is forgotten within nats.lease_ttl, %s)",
				other, cfg.Prefix, short(peer.tools), short(cfg.Tools), cfg.LeaseTTL)
		case settings != "" && peer.settings != "" && !same[peer.settings]:
			// A replica of a version before the settings' digest
			// writes none, and is not checked.
			if err := checkSettings(ctx, shared, cfg, settings, other, peer.settings); err != nil {
				return err
			}
			same[peer.settings] = true
		}
	}
	return nil
}

// peers reads the alive and starting keys of the lease bucket, but self's:
// what each replica running or starting says of itself (by its newer key,
// when it has both). With through not 0 it reads on until it has seen that
// revision, so that every key written before it is read: the last value
// of each key comes in the order written, and the end of the initial
// values, which a concurrent write may announce early
// (nats-server#4824), is not trusted alone.
func peers(ctx context.Context, kv jetstream.KeyValue, self string, through uint64) (map[string]aliveInfo, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	out := map[string]aliveInfo{}
	revs := map[string]uint64{}
	for initial := false; !initial || through != 0; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watch of its keys ended early")
			}
			if e == nil {
				initial = true
				continue
			}
			if e.Revision() >= through {
				through = 0
			}
			replica, ok := strings.CutPrefix(e.Key(), "alive.")
			if !ok {
				replica, ok = strings.CutPrefix(e.Key(), "starting.")
			}
			if ok && replica != self && e.Revision() > revs[replica] {
				out[replica], revs[replica] = aliveOf(e.Value()), e.Revision()
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// maxSettingsListed bounds the differing settings an error names.
const maxSettingsListed = 5

// checkSettings refuses this replica's settings (Config.Settings, digest
// ours) beside replica other's (digest theirs, recorded in shared) when a
// setting both have differs. A setting only one has is not compared: a
// newer version may add settings, and a replica of it has the same
// configuration as one of the version before.
func checkSettings(ctx context.Context, shared jetstream.KeyValue, cfg Config, ours, other, theirs string) error {
	advice := fmt.Sprintf("A turn runs on whichever replica owns its session, and the limits hold across all of them, "+
		"so every replica needs the same talon.yaml apart from its own addresses, data directory, logging and resources (docs/scale.md). "+
		"Give this one the same settings; to change them, stop every replica, then start them all with the new ones "+
		"(a replica that has just ended is forgotten within nats.lease_ttl, %s)", cfg.LeaseTTL)
	e, err := shared.Get(ctx, settingsKey(theirs))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cluster: replica %s runs in this deployment (nats.url, nats.prefix %s) with other settings than this one "+
			"(digest %s there, %s here), and their record (key %s in bucket %s_cluster) is missing, so they cannot be compared. %s",
			other, cfg.Prefix, short(theirs), short(ours), settingsKey(theirs), cfg.Prefix, advice)
	} else if err != nil {
		return fmt.Errorf("cluster: read replica %s's settings in bucket %s_cluster: %w", other, cfg.Prefix, err)
	}
	var there map[string]string
	if err := json.Unmarshal(e.Value(), &there); err != nil {
		return fmt.Errorf("cluster: replica %s's settings (key %s in bucket %s_cluster) cannot be read: %w", other, settingsKey(theirs), cfg.Prefix, err)
	}
	var differ []string
	for k, here := range cfg.Settings {
		if v, ok := there[k]; ok && v != here {
			differ = append(differ, k)
		}
	}
	if len(differ) == 0 {
		return nil
	}
	slices.Sort(differ)
	var b strings.Builder
	for i, k := range differ[:min(len(differ), maxSettingsListed)] {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s is %s there and %s here", k, there[k], cfg.Settings[k])
	}
	if n := len(differ) - maxSettingsListed; n > 0 {
		fmt.Fprintf(&b, "; and %d more", n)
	}
	return fmt.Errorf("cluster: replica %s runs in this deployment (nats.url, nats.prefix %s) with other settings than this one: %s. %s",
		other, cfg.Prefix, b.String(), advice)
}

// settingsDigest returns the digest of settings ("" when there are none)
// and their record: their JSON encoding, which sorts the names and quotes
// each name and value, so that two maps have one digest only when they
// are equal. The digest is the record's SHA-256, in hex.
func settingsDigest(settings map[string]string) (digest string, record []byte, err error) {
	if len(settings) == 0 {
		return "", nil, nil
	}
	record, err = json.Marshal(settings)
	if err != nil {
		return "", nil, fmt.Errorf("cluster: settings: %w", err)
	}
	sum := sha256.Sum256(record)
	return hex.EncodeToString(sum[:]), record, nil
}

// settingsKey is the key of the settings of digest in "<prefix>_cluster".
func settingsKey(digest string) string { return "settings." + digest }

// short is the start of a digest, enough to tell two apart in a message.
func short(digest string) string { return digest[:min(len(digest), 12)] }

// settingsBucket opens the bucket "<prefix>_cluster", whose keys never
// expire: the settings every replica must share, and who connected each
// Discord shard last (Shards).
func settingsBucket(ctx context.Context, js jetstream.JetStream, prefix string, replicas int) (jetstream.KeyValue, error) {
	kv, err := createKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: prefix + "_cluster", Description: "Talon: settings every replica must share",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: settings bucket: %w", err)
	}
	return kv, nil
}

func streamName(prefix string) string {
	b := []byte(prefix)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b) + "_IN"
}

// Deployment names the deployment this replica is part of: its NATS
// server and prefix (the lease bucket's name and creation time), the same
// on every replica of it.
func (n *Node) Deployment() string { return n.fenceName }

// Replica returns this replica's id.
func (n *Node) Replica() string { return n.cfg.Replica }

// Partitions returns P.
func (n *Node) Partitions() int { return n.cfg.Partitions }

// Partition returns the partition of a session: FNV-1a of its key mod P.
func (n *Node) Partition(k agent.SessionKey) int { return Partition(k, n.cfg.Partitions) }

// Partition returns the partition of session k among p: FNV-1a of the key
// mod p. It never changes for a key, in any process.
func Partition(k agent.SessionKey, p int) int {
	h := fnv.New64a()
	h.Write([]byte(k.String()))
	return int(h.Sum64() % uint64(p))
}

// Limiter returns the turn limits every replica shares (Limits), for
// agent.Runtime.Limiter.
func (n *Node) Limiter() *Limits { return n.limits }

// Held lists the partitions this replica serves now.
func (n *Node) Held() []int { return n.leases.Held() }

// Dispatch announces an accepted message to its partition's owner
// (agent.Dispatcher). It waits for the stream's acknowledgement, at most
// 5 seconds. The announcement is published asynchronously: the
// concurrent Dispatches of a busy replica go out together on the
// connection and their acknowledgements come back on one subscription,
// where a request each made its own reply subject and waiter; each caller
// still returns only once its own announcement is acknowledged (or failed).
//
// While the connection to NATS is down it returns at once: the message is
// in the store, and a platform waits only about 3 s for its event to be
// taken. A message not announced (no connection, or no acknowledgement
// within announceWait) is announced again once NATS answers
// (reannounce), and otherwise found by its owner's sweep.
func (n *Node) Dispatch(ctx context.Context, q agent.QueuedInbound) error {
	a := announcement{id: q.ID, partition: n.Partition(q.Key)}
	err := n.announce(a)
	if err != nil {
		n.mu.Lock()
		if len(n.unannounced) < maxUnannounced {
			n.unannounced = append(n.unannounced, a)
		}
		n.mu.Unlock()
	}
	return err
}

// announcement is what an announcement says: only the message's id, on
// its partition's subject (the owner reads the message from the store).
type announcement struct {
	id        agent.InboundID
	partition int
}

func (n *Node) announce(a announcement) error {
	if !n.nc.IsConnected() {
		return fmt.Errorf("cluster: announce inbound %d: not connected to NATS (%s)", a.id, n.nc.Status())
	}
	subj := n.cfg.Prefix + ".in." + strconv.Itoa(a.partition)
	f, err := n.pub.PublishAsync(subj, strconv.AppendInt(nil, int64(a.id), 10))
	if err != nil {
		return fmt.Errorf("cluster: announce inbound %d: %w", a.id, err)
	}
	t := time.NewTimer(announceWait)
	defer t.Stop()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("cluster: announce inbound %d: %w", a.id, err)
	case <-t.C:
		return fmt.Errorf("cluster: announce inbound %d: no acknowledgement within %s", a.id, announceWait)
	}
}

const (
	// dispatchTimeout is how long an announcement's acknowledgement is
	// awaited by the publisher before its future fails.
	dispatchTimeout = 5 * time.Second
	// announceWait bounds how long Dispatch (an accept) waits for that
	// acknowledgement: a JetStream on a working network answers within
	// milliseconds, and a platform resends an event not taken within
	// about 3 s. An announcement acknowledged later still reaches its
	// owner (a second one is harmless: the scope takes a message once).
	announceWait = time.Second
	// maxUnannounced bounds the messages kept to be announced again.
	maxUnannounced = 100_000
	// reannounceEvery is how often the node looks for messages to
	// announce again.
	reannounceEvery = 250 * time.Millisecond
)

// reannounce (run every reannounceEvery) announces again, while NATS
// answers, the messages Dispatch could not announce, oldest first, so
// that their owners take them now rather than at their next sweep.
func (n *Node) reannounce(ctx context.Context) {
	n.mu.Lock()
	todo := n.unannounced
	n.unannounced = nil
	n.mu.Unlock()
	sent := 0
	for _, a := range todo {
		if ctx.Err() != nil || n.announce(a) != nil {
			break
		}
		sent++
	}
	if sent < len(todo) {
		n.mu.Lock()
		n.unannounced = append(todo[sent:], n.unannounced...)
		n.mu.Unlock()
	}
	if sent > 0 {
		n.log.Info().Int("messages", sent).Msg("cluster: messages that could not be announced when accepted were announced again")
	}
}

// every runs f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f(ctx)
	}
}

func (n *Node) decidedSubject() string { return n.cfg.Prefix + ".decided" }

// Decided tells every replica that approval id was decided here
// (agent.DecisionNotifier), so that the one whose turn waits for it goes on
// at once. It is a plain NATS message: one that is lost delays that turn
// until the approval's expiry, which finds the decision in the store.
func (n *Node) Decided(_ context.Context, id agent.ApprovalID) {
	if err := n.nc.Publish(n.decidedSubject(), strconv.AppendInt(nil, int64(id), 10)); err != nil {
		n.log.Warn().Err(err).Int64("approval", int64(id)).Msg("cluster: could not tell the other replicas of a decided approval")
	}
}

// Abandon ends a Node that was opened and will not Run (a later step of
// the start failed): its starting key, which stands for it until its
// alive key is written, is deleted rather than left to expire after the
// lease TTL. It does nothing once Run has started.
func (n *Node) Abandon() {
	select {
	case <-n.started:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.kv.Delete(ctx, startingKey(n.cfg.Replica))
}

// Run takes part in the deployment until ctx ends: it claims its share of
// the partitions, serves them, and sweeps the store for messages whose
// announcement was lost. On return its partitions are given up.
func (n *Node) Run(ctx context.Context) error {
	sctx, stopSweep := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { every(sctx, n.cfg.Sweep, n.sweep) })
	wg.Go(func() { every(sctx, reannounceEvery, n.reannounce) })
	wg.Go(func() { n.limits.Run(sctx) })
	sub, err := n.nc.Subscribe(n.decidedSubject(), func(m *nats.Msg) {
		id, err := strconv.ParseInt(string(m.Data), 10, 64)
		if err != nil || id <= 0 {
			return
		}
		if err := n.rt.Wake(sctx, agent.ApprovalID(id)); err != nil && sctx.Err() == nil {
			n.log.Warn().Err(err).Int64("approval", id).Msg("cluster: wake a turn for an approval decided on another replica")
		}
	})
	if err != nil {
		n.log.Warn().Err(err).Msg("cluster: approvals decided on other replicas reach turns here only at their expiry")
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	close(n.started)
	err = n.leases.Run(ctx)
	stopSweep()
	wg.Wait()
	return err
}

// serve runs partition p while its lease lasts: the store's pending
// messages of p's sessions first, then what is announced on p's subject.
func (n *Node) serve(ctx context.Context, p int, h Hold) {
	log := n.log.With().Int("partition", p).Logger()
	// The scope's turns write under the claim's token: a replica that
	// slept past this lease cannot write once the next owner adopted.
	ctx = agent.WithFence(ctx, agent.Fence{Name: n.fenceName + "/" + strconv.Itoa(p), Token: h.Token()})
	// The consumer first, so that nothing announced from now on is missed;
	// then the store, for what was accepted before. Take skips a message
	// the two both name.
	cons, err := n.js.CreateOrUpdateConsumer(ctx, n.stream, jetstream.ConsumerConfig{
		Durable:       n.cfg.Prefix + "-p" + strconv.Itoa(p),
		FilterSubject: n.cfg.Prefix + ".in." + strconv.Itoa(p),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
	})
	if err != nil {
		log.Warn().Err(err).Msg("cluster: partition consumer; the store sweep finds its messages meanwhile")
	}
	sc, err := n.rt.Adopt(ctx, func(k agent.SessionKey) bool { return n.Partition(k) == p })
	if err != nil {
		// Returning leaves the lease to expire unrenewed: the partition is
		// claimed again, here or elsewhere, after the TTL.
		if ctx.Err() == nil {
			log.Error().Err(err).Msg("cluster: could not adopt a partition's sessions; it is claimed again after the lease TTL")
		}
		return
	}
	n.mu.Lock()
	n.scopes[p] = sc
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.scopes, p)
		n.mu.Unlock()
		sc.Wait()
	}()
	defer n.serveAmendments(ctx, p, sc, &log)()
	if cons == nil {
		<-ctx.Done()
		return
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		n.take(ctx, sc, p, m, &log)
	}, jetstream.PullMaxMessages(256))
	if err != nil {
		log.Warn().Err(err).Msg("cluster: consume a partition; the store sweep finds its messages meanwhile")
		<-ctx.Done()
		return
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
}

// take hands an announced message to the scope, then acknowledges it: the
// runtime has it (it is durable in the store), or it has finished.
func (n *Node) take(ctx context.Context, sc *agent.Scope, p int, m jetstream.Msg, log *zerolog.Logger) {
	id, err := strconv.ParseInt(string(m.Data()), 10, 64)
	if err != nil || id <= 0 {
		log.Warn().Str("subject", m.Subject()).Msg("cluster: an announcement that is not an inbound id; dropped")
		_ = m.Term()
		return
	}
	qs, err := n.loadUpTo(ctx, agent.InboundID(id))
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Int64("inbound", id).Msg("cluster: load an announced message; it is announced again")
			_ = m.Nak()
		}
		return
	}
	for _, q := range qs {
		if n.Partition(q.Key) == p {
			sc.Take(q)
		}
	}
	_ = m.Ack()
}

// loadUpTo finds an accepted message whose turn has not finished, and the
// earlier ones of its session when the store can tell them (SessionLoader),
// in the order they were accepted.
func (n *Node) loadUpTo(ctx context.Context, id agent.InboundID) ([]agent.QueuedInbound, error) {
	if l, ok := n.store.(SessionLoader); ok {
		return l.PendingUpTo(ctx, id)
	}
	q, ok, err := n.load(ctx, id)
	if err != nil || !ok {
		return nil, err
	}
	return []agent.QueuedInbound{q}, nil
}

// load finds an accepted message whose turn has not finished.
func (n *Node) load(ctx context.Context, id agent.InboundID) (agent.QueuedInbound, bool, error) {
	if g, ok := n.store.(InboundGetter); ok {
		return g.PendingInbound(ctx, id)
	}
	pending, err := n.store.Pending(ctx)
	if err != nil {
		return agent.QueuedInbound{}, false, err
	}
	for _, q := range pending {
		if q.ID == id {
			return q, true, nil
		}
	}
	return agent.QueuedInbound{}, false, nil
}

// sweep hands (run every Sweep) the pending messages of the partitions this
// replica serves to their scopes: an announcement lost (the replica that
// accepted it died before it was published, or NATS failed) delays a
// message by at most Sweep.
func (n *Node) sweep(ctx context.Context) {
	n.mu.Lock()
	none := len(n.scopes) == 0
	n.mu.Unlock()
	if none {
		return
	}
	pending, err := n.store.Pending(ctx)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn().Err(err).Msg("cluster: sweep the store for pending messages")
		}
		return
	}
	taken := 0
	n.mu.Lock()
	for _, q := range pending {
		if sc := n.scopes[n.Partition(q.Key)]; sc != nil && sc.Take(q) {
			taken++
		}
	}
	n.mu.Unlock()
	if taken > 0 {
		n.log.Info().Int("taken", taken).Msg("cluster: the sweep found accepted messages whose announcement was lost")
	}
}
