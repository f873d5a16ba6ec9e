package cluster

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Shards shares the shards of Discord's gateway among the replicas of a
// deployment: each shard is a slot of a Leases in the bucket
// "<prefix>_shards", so that a replica connects a shard only while it holds
// the shard's lease, and at most one replica at a time does. Discord
// forbids a shard being connected twice.
//
// Why never twice, even when the network fails: a replica connects a
// shard inside the lease's Work, and Work's context ends, closing the
// socket, when the lease is lost, given up or fenced. A shard lease is
// renewed every TTL/10 (shardLease) and fenced TTL − margin after the
// replica *sent* its last renewal that succeeded, margin = 6 renewals
// (0.6·TTL): the fence is 4 s after that renewal with the default TTL of
// 10 s, measured on the replica's own monotonic clock, and the renewals at
// 1, 2 and 3 s each may renew the lease (each is given up when its answer
// takes longer than the renewal interval, and the next is sent at its
// tick), so one or two whose answers come late or never cost nothing. The
// server can expire the key no sooner than TTL after it stored that
// renewal, which is after it was sent, measured on the server's clock;
// only then can another replica create the key and connect. Between the fence and the earliest takeover lies the margin
// (6 s; 1.2 s with the shortest TTL, 2 s), and closing a socket takes at
// most 1 s (the close frame's write deadline, then the TCP connection is
// closed). No two clocks are compared, so a skew between the replicas' and
// the server's wall clocks does not matter; only a difference in the rate
// at which they tick would, and it is far below the margin over one TTL. A
// shard given up (fair share) or a replica stopping cleanly deletes the
// key only after Work has returned, that is after the socket is closed.
//
// A replica paused (SIGSTOP, a stalled VM) is the case the fence alone
// does not cover: its socket stays open while it sleeps, its fence's timer
// cannot run, and the lease expires and is taken over meanwhile. Two
// things keep the shard from being connected twice:
//   - the paused replica, on waking, sends nothing: the gateway asks
//     ShardHold.Held before every frame it sends and every event it
//     handles, which reads the monotonic clock (past the fence: false)
//     rather than waiting for a timer, and drops the socket without a
//     close frame;
//   - Discord drops a connection that sent nothing (no heartbeat) for a
//     while, which we take as DiscordSilence heartbeat intervals (Discord
//     does not publish the figure). While a shard is connected, the key
//     "discord.conn.<shard>" in the bucket "<prefix>_cluster" names its
//     owner; it is deleted once the socket is closed. A replica that
//     claims a shard whose key is still there (the previous owner died or
//     sleeps) does not identify before DiscordSilence·heartbeat − margin
//     after its claim, unless the probe below shows the owner's process
//     gone: the previous owner sent its last heartbeat before its fence,
//     at least the margin before its lease expired and so before this
//     claim, and Discord has dropped that connection by then. With
//     Discord's 41.25 s heartbeat and the default TTL of 10 s that is
//     about 11 s + 76.5 s after the owner stopped; a clean stop or a
//     fair-share hand-over deletes the key and costs no wait.
//
// The probe tells a process that is gone from one that may only be
// paused, so that a dead replica's shards are identified again at the
// claim (about TTL + TTL/10 after the death) rather than 88 s after. Each
// process subscribes, on a connection of its own on which nothing else
// flows (ShardsConfig.Probe), to "<prefix>.alive.<replica>.<incarnation>"
// (the incarnation is random per process, so that a replica started again
// under the same id is not mistaken for the old one), and records in
// "probe.<replica>.<incarnation>" the id of the NATS server that
// connection is on, rewritten when it reconnects elsewhere. Its connection
// keys name the incarnation. A claimer that finds a connection key sends a
// request to that subject on its own probe connection, and identifies at
// once when:
//   - the key is this process's own: a slot is claimed again only after
//     its Work returned, and Work returns after its socket is closed;
//   - the owner answers, and the shards it lists as working (their Work
//     running, their sockets maybe open) do not include this one: its
//     socket was closed before its Work returned, and it cannot open
//     another without the lease this claimer holds now (so after a NATS
//     outage that fenced every shard, when the keys could not be deleted,
//     no one waits);
//   - an immediate "no responders" comes from the very server the owner's
//     probe was recorded on (a server's id is new each time it starts):
//     the server closed the owner's probe connection.
//
// Anything else (an answer listing the shard, a timeout, another server,
// no record, a key written by an older version) waits as above. Why "no
// responders" suffices, case by case:
//   - SIGKILL, a crash, the OOM killer: the kernel closes every socket of
//     the process at once, the probe's and Discord's alike. The claim
//     comes at least the margin after the death (the owner was before its
//     fence when it died, and the lease lasts TTL after its last renewal),
//     time enough for the FIN (or RST) to reach Discord. The one case not
//     seen: that packet lost, and nothing sent by Discord on the socket
//     after it (any event or acknowledgement would draw another RST from
//     the host), until Discord's silence ends it.
//   - SIGSTOP, a stalled VM: the kernel keeps both sockets open; the NATS
//     server holds the subscription and writes the request to it, nobody
//     answers, the request times out and the claimer waits. The server
//     closes a connection that answers none of its pings only after
//     ping_max pings, ping_interval apart (nats-server's defaults: 2 and
//     2 min, so 4 min, ProbeStaleAfter) after the pause began; a claim
//     later than that gets "no responders" from a process paused longer
//     than DiscordSilence heartbeats, whose connection Discord dropped
//     already. This needs ping_interval × ping_max ≥ DiscordSilence
//     heartbeats on the server (83 s with Discord's 41.25 s); the probe is
//     not trusted when heartbeats are longer than ProbeStaleAfter allows.
//   - A host lost (powered off, cut off): no FIN reaches anyone; the
//     server keeps the subscription until its pings go unanswered, as for
//     a pause, and the claimer waits: Discord alone decides when the old
//     socket is gone, and the shard is identified again about 88 s after.
//
// Before any of that wait, a claim takes the previous owner's gateway
// session over when the owner recorded one (ShardHold.Serving writes it to
// "discord.session.<shard>" in "<prefix>_cluster" while the shard is
// connected): Discord serves a session on one connection, so a RESUME
// moves it off a sleeper's or a lost host's socket; the claimer ends it
// with a clean close and identifies at once (ShardHold.Taken). Only when
// Discord refuses the RESUME does the wait above apply, with the previous
// owner's connection key as read before the claim wrote its own
// (ShardHold.BeforeResume).
//   - A live replica whose probe connection reconnects: while it is away
//     a claimer may get "no responders", but a claim comes only after the
//     lease expired, and a replica that runs has closed its sockets at its
//     fence by then. After a reconnect to another server it rewrites its
//     record; a claimer on the old server then asks a server that was not
//     recorded and waits. Left: a pause beginning in the moments between
//     that reconnect and the rewrite, or between a network fault that
//     resets only the probe connection and its reconnect (about 2 s).
//   - The NATS server restarted (or the owner's server lost) while the
//     owner is paused: the subscription is gone without the process, but
//     the server has a new id, or is another one than the claimer's, so
//     the claimer waits.
//   - A clean stop: the subscription ends after every socket is closed.
//
// Shards also spaces the IDENTIFYs: Discord accepts one per 5 s for each
// bucket (shard id mod max_concurrency), across every connection of the
// bot. A replica about to identify creates the key "bucket.<n>" in the
// bucket "<prefix>_identify", whose keys expire after 5 s; while it exists
// every other replica waits.
type Shards struct {
	kv, ident, conns jetstream.KeyValue
	replica, prefix  string
	ttl              time.Duration
	log              zerolog.Logger
	probe            *nats.Conn    // nil: no probe
	incarnation      string        // this process's, in its probe subject
	probeFor         time.Duration // probeWindow; tests shorten it

	mu      sync.Mutex
	leases  *Leases     // while Serve runs; guarded by mu
	working map[int]int // shard → its Works running here (socket maybe open); guarded by mu

	probeMu     sync.Mutex
	probeSub    *nats.Subscription // while Serve runs; guarded by probeMu
	probeServer string             // the server id recorded; guarded by probeMu
}

// ShardsConfig configures Shards. Zero values take the defaults.
type ShardsConfig struct {
	// Replica is this replica's id (NewReplicaID when "").
	Replica string
	// LeaseTTL is how long a shard's lease lasts unrenewed (default 10 s,
	// at least 2 s): a dead replica's shards are connected again by others
	// within about LeaseTTL + LeaseTTL/10, plus the wait for an IDENTIFY.
	LeaseTTL time.Duration
	// IdentifyEvery is the least time between two IDENTIFYs of one bucket
	// (default 5 s, Discord's rule).
	IdentifyEvery time.Duration
	// Prefix names the buckets (DefaultPrefix).
	Prefix string
	// StreamReplicas is the replication of the buckets in a NATS cluster.
	StreamReplicas int
	// Probe, when set, is a connection to NATS on which nothing else
	// flows (so that the server never drops it as a slow consumer while
	// the process sleeps), connected to the servers in the same order on
	// every replica (nats.DontRandomize), so that their probes meet on one
	// server. Shards sets its reconnect handler. With it, a dead
	// replica's shards are identified again without waiting for Discord
	// (see Shards); without, always after the wait.
	Probe *nats.Conn
}

// DefaultIdentifyEvery is Discord's least time between two IDENTIFYs of one
// bucket of shards.
const DefaultIdentifyEvery = 5 * time.Second

// MinShardLeaseTTL is the shortest shard lease: its margin (shardLease,
// 0.6·TTL = 1.2 s) leaves time for a socket to close, which takes at most
// 1 s. Its renewals are 0.2 s apart, each given up after 0.2 s.
const MinShardLeaseTTL = 2 * time.Second

// shardLease returns the timing of a shard lease of ttl: its renewal
// interval (TTL/10, also the bound on each request to the bucket), its
// fence (Leases.Deadline) and the margin between the fence and the
// earliest expiry of the lease on the server, 6 renewals (0.6·TTL). The
// margin is what keeps a shard from being connected twice (see Shards);
// the 3 renewals before the fence (at 1, 2 and 3 of its 4 renewal
// intervals) are what let one or two unanswered ones cost nothing.
func shardLease(ttl time.Duration) (renew, deadline, margin time.Duration) {
	renew = ttl / 10
	margin = 6 * renew
	return renew, ttl - margin, margin
}

// DiscordSilence is how many heartbeat intervals of silence we take Discord
// to need before it drops a connection (and so the shard is free to be
// identified elsewhere without being connected twice).
const DiscordSilence = 2

// ProbeStaleAfter is the least time we take a NATS server to keep the
// connection of a process that stopped running: ping_max pings,
// ping_interval apart, unanswered (nats-server's defaults, 2 × 2 min). The
// probe is trusted only while DiscordSilence heartbeat intervals are no
// longer; a server configured with a shorter ping_interval × ping_max
// than DiscordSilence heartbeats (83 s) breaks the probe's premise.
const ProbeStaleAfter = 4 * time.Minute

// countKey records the shard count of the deployment in the shards
// bucket; the replicas rewrite it while they run, so it expires TTL after
// the last one stopped and a new count can then be chosen.
const countKey = "count"

// OpenShards makes sure the buckets exist and returns Shards that serve
// nothing yet.
func OpenShards(ctx context.Context, nc *nats.Conn, cfg ShardsConfig, log zerolog.Logger) (*Shards, error) {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.LeaseTTL < MinShardLeaseTTL {
		return nil, fmt.Errorf("cluster: shard lease TTL %s: at least %s", cfg.LeaseTTL, MinShardLeaseTTL)
	}
	if cfg.IdentifyEvery <= 0 {
		cfg.IdentifyEvery = DefaultIdentifyEvery
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
	kv, err := EnsureBucket(ctx, js, cfg.Prefix+"_shards", cfg.LeaseTTL, cfg.StreamReplicas)
	if err != nil {
		return nil, err
	}
	ident, err := createKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Prefix + "_identify",
		Description: "Talon: bucket.<n> exists while a Discord shard of identify bucket n may not identify",
		History:     1,
		TTL:         cfg.IdentifyEvery,
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.StreamReplicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: identify bucket: %w", err)
	}
	conns, err := settingsBucket(ctx, js, cfg.Prefix, cfg.StreamReplicas)
	if err != nil {
		return nil, err
	}
	var inc [8]byte
	_, _ = crand.Read(inc[:])
	return &Shards{kv: kv, ident: ident, conns: conns, replica: cfg.Replica, prefix: cfg.Prefix, ttl: cfg.LeaseTTL,
		log: log.With().Str("replica", cfg.Replica).Logger(), probe: cfg.Probe, incarnation: hex.EncodeToString(inc[:]),
		working: map[int]int{}, probeFor: probeWindow}, nil
}

// ShardCount agrees on the deployment's shard count: the one recorded by
// the replicas running, or want when none is. With adopt (discord.shards:
// auto) a recorded count is taken even when it differs from want;
// without, a difference is an error naming the fix.
func (s *Shards) ShardCount(ctx context.Context, want int, adopt bool) (int, error) {
	if want <= 0 {
		return 0, fmt.Errorf("cluster: shard count %d: at least 1", want)
	}
	for range 5 {
		e, err := s.kv.Get(ctx, countKey)
		switch {
		case err == nil:
			have, perr := strconv.Atoi(string(e.Value()))
			if perr != nil || have <= 0 {
				return 0, fmt.Errorf("cluster: the shard count recorded in the bucket is %q, not a number", e.Value())
			}
			if have == want || adopt {
				if have != want {
					s.log.Info().Int("shards", have).Int("recommended", want).
						Msg("cluster: the running replicas use another shard count than Discord recommends now; using theirs (stop every replica to change it)")
				}
				return have, nil
			}
			return 0, fmt.Errorf("cluster: discord.shards is %d here but %d on the replicas running; use the same on every replica (to change it, stop them all)", want, have)
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := s.kv.Create(ctx, countKey, []byte(strconv.Itoa(want))); err == nil {
				return want, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, fmt.Errorf("cluster: record the shard count: %w", err)
			}
		default:
			return 0, fmt.Errorf("cluster: read the shard count: %w", err)
		}
	}
	return 0, errors.New("cluster: could not agree on the shard count: it kept changing")
}

// Serve holds a fair share of the count shards, shard 0 first, and runs
// work for each while it holds it, until ctx ends; then it ends every work
// and gives the shards up. work must have closed its connection when it
// returns, must call h.BeforeIdentify before each IDENTIFY and check
// h.Held before every frame it sends. Serve returns an error if the
// settings are invalid or another shard count gets recorded meanwhile
// (the replica stops connecting).
func (s *Shards) Serve(ctx context.Context, count int, work func(ctx context.Context, shard int, h *ShardHold)) error {
	renew, deadline, margin := shardLease(s.ttl)
	l := &Leases{KV: s.kv, Replica: s.replica, Slots: count, TTL: s.ttl, Renew: renew,
		Deadline: deadline, Log: s.log, Prefer: []int{0}}
	l.Work = func(ctx context.Context, shard int, hold Hold) {
		h := &ShardHold{s: s, shard: shard, hold: hold, claimed: time.Now(), margin: margin, changed: make(chan struct{}, 1)}
		s.mu.Lock()
		s.working[shard]++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.working[shard]--
			s.mu.Unlock()
		}()
		defer h.disconnected()
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			h.keepSession(renew, stop)
		}()
		work(ctx, shard, h)
		close(stop)
		<-done
	}
	s.mu.Lock()
	s.leases = l
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The count and the probe's record are kept every TTL/5, not at the
	// leases' cadence: no fence depends on them. The count expires TTL
	// after its last rewrite (5 rewrites per TTL), and the probe's record
	// is rewritten at once on a reconnect; the tick is only a fallback.
	tend := s.ttl / 5
	var conflict error
	done := make(chan struct{})
	go func() {
		defer close(done)
		conflict = s.keepCount(ctx, count, tend)
		cancel()
	}()
	moved := make(chan struct{}, 1)
	s.startProbe(moved)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		s.keepProbe(ctx, tend, moved)
	}()
	err := l.Run(ctx)
	cancel()
	<-done
	<-probeDone
	// Every Work has returned: every socket is closed.
	s.endProbe()
	if err != nil {
		return err
	}
	return conflict
}

// keepCount rewrites the recorded count each interval until ctx ends, and
// returns an error when another count is found.
func (s *Shards) keepCount(ctx context.Context, count int, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	val := []byte(strconv.Itoa(count))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, ccancel := context.WithTimeout(ctx, interval)
		e, err := s.kv.Get(cctx, countKey)
		switch {
		case err == nil && string(e.Value()) != string(val):
			ccancel()
			return fmt.Errorf("cluster: another replica recorded %q shards while this one serves %d; stopping the shards here (use the same discord.shards on every replica)", e.Value(), count)
		case err == nil:
			_, err = s.kv.Update(cctx, countKey, val, e.Revision())
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = s.kv.Create(cctx, countKey, val)
		}
		ccancel()
		if err != nil && ctx.Err() == nil {
			s.log.Debug().Err(err).Msg("cluster: could not rewrite the shard count; retrying")
		}
	}
}

// Held lists the shards this replica connects now.
func (s *Shards) Held() []int {
	s.mu.Lock()
	l := s.leases
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	return l.Held()
}

// Identify waits until shard bucket bucket may identify, across every
// replica, and takes the turn: the next IDENTIFY of the bucket anywhere
// waits IdentifyEvery after this one.
func (s *Shards) Identify(ctx context.Context, bucket int) error {
	key := "bucket." + strconv.Itoa(bucket)
	for warned := false; ; {
		cctx, cancel := context.WithTimeout(ctx, s.ttl/5)
		_, err := s.ident.Create(cctx, key, []byte(s.replica))
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !warned {
			// NATS is unreachable: the leases fence this replica's
			// shards if it goes on; waiting here is safe.
			s.log.Warn().Err(err).Int("bucket", bucket).Msg("cluster: could not take an identify turn; waiting")
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ShardHold is one claim of a shard by this replica.
type ShardHold struct {
	s       *Shards
	shard   int
	hold    Hold
	claimed time.Time
	margin  time.Duration // TTL − Deadline: the least time between the fence and the lease's expiry

	// Used by the shard's connection only.
	read      bool   // the previous connection's key was read (prev)
	prev      []byte // its value, nil when there was none
	checked   bool
	notBefore time.Time
	marked    []byte // the conn key's value while it is this hold's

	// The gateway session the shard's connection serves (Serving), and
	// what the hold last recorded of it in the session key.
	serving  atomic.Pointer[gatewaySession] // its id and resume URL (Seq unused)
	seq      atomic.Int64                   // the last event it handled
	changed  chan struct{}                  // a new session (or none) to record at once
	recorded *gatewaySession
	rev      uint64 // the session key's revision this hold wrote or read; 0 for none
	ceded    bool   // another owner wrote the session key since: it is theirs
}

// gatewaySession is a Discord gateway session as the session key records
// it: its id, where it resumes, and the last event its connection handled.
type gatewaySession struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	Seq int64  `json:"seq"`
}

// sessionKey records, in the bucket "<prefix>_cluster", the gateway session
// of a shard's connection, for the next owner to take over (Handover).
func sessionKey(shard int) string { return "discord.session." + strconv.Itoa(shard) }

// Held reports whether this replica still holds the shard, by its own
// monotonic clock (Hold.Valid). A connection must be dropped without a
// word once it is false.
func (h *ShardHold) Held() bool { return h.hold.Valid() }

// Token is the claim's fencing token (Hold.Token).
func (h *ShardHold) Token() uint64 { return h.hold.Token() }

func connKey(shard int) string { return "discord.conn." + strconv.Itoa(shard) }

// BeforeIdentify is called between the gateway's HELLO, which gives its
// heartbeat interval, and an IDENTIFY. It returns how long to wait before
// identifying (the connection is closed meanwhile, unidentified), or 0
// once it has recorded this replica as the shard's connection: a claim
// that found the previous owner's record waits until Discord has dropped
// that owner's connection even if it sleeps (see Shards), unless this
// claim took that connection's session over (Taken).
func (h *ShardHold) BeforeIdentify(ctx context.Context, heartbeat time.Duration) (time.Duration, error) {
	if err := h.readPrevious(ctx); err != nil {
		return 0, err
	}
	if !h.checked {
		if err := h.check(ctx, heartbeat); err != nil {
			return 0, err
		}
	}
	if d := time.Until(h.notBefore); d > 0 {
		return d, nil
	}
	return 0, h.mark(ctx)
}

// BeforeResume is called between HELLO and a RESUME of the session the
// previous owner left (Handover): it records this replica as the shard's
// connection, having read the previous owner's record first, so that an
// IDENTIFY after a refused RESUME still waits for that owner's connection
// (BeforeIdentify), and a claim after this one waits for this one.
func (h *ShardHold) BeforeResume(ctx context.Context) error {
	if err := h.readPrevious(ctx); err != nil {
		return err
	}
	return h.mark(ctx)
}

// readPrevious reads, once per claim, the record of the shard's previous
// connection, before this claim writes its own.
func (h *ShardHold) readPrevious(ctx context.Context) error {
	if h.read {
		return nil
	}
	e, err := h.s.conns.Get(ctx, connKey(h.shard))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("cluster: read who connected shard %d last: %w", h.shard, err)
	default:
		h.prev = e.Value()
	}
	h.read = true
	return nil
}

// check sets when this claim may identify: at once when the previous
// connection ended cleanly or its process is gone, else once Discord has
// dropped it (see Shards).
func (h *ShardHold) check(ctx context.Context, heartbeat time.Duration) error {
	if h.prev == nil {
		h.notBefore, h.checked = h.claimed, true
		return nil
	}
	if closed, why := h.s.closed(ctx, string(h.prev), h.shard, heartbeat); closed {
		h.notBefore, h.checked = h.claimed, true
		h.s.log.Info().Int("shard", h.shard).Str("previous", string(h.prev)).Str("why", why).
			Msg("cluster: the shard's previous connection did not end cleanly, but the probe shows it closed; identifying now")
		return nil
	}
	if err := ctx.Err(); err != nil {
		// The claim ended while the probe was asked (the shard given up,
		// or the replica stopping): no wait to report.
		return err
	}
	h.notBefore, h.checked = h.claimed.Add(DiscordSilence*heartbeat-h.margin), true
	h.s.log.Info().Int("shard", h.shard).Str("previous", string(h.prev)).Dur("wait", time.Until(h.notBefore).Round(time.Millisecond)).
		Msg("cluster: the shard's previous connection did not end cleanly and its process may be paused; waiting until Discord has dropped it before identifying")
	return nil
}

// mark records this replica as the shard's connection.
func (h *ShardHold) mark(ctx context.Context) error {
	if !h.Held() {
		return fmt.Errorf("cluster: shard %d is not held any more", h.shard)
	}
	inc := h.s.recordProbe(ctx)
	if inc == "" {
		inc = "-" // no probe: a claimer after this connection waits
	}
	val := []byte(h.s.replica + " " + strconv.FormatUint(h.Token(), 10) + " " + inc)
	if _, err := h.s.conns.Put(ctx, connKey(h.shard), val); err != nil {
		return fmt.Errorf("cluster: record the connection of shard %d: %w", h.shard, err)
	}
	h.marked = val
	return nil
}

// Handover returns the gateway session the shard's previous connection
// served, when its owner left one that may still be resumed (it did not
// end it cleanly): its id, where to resume it, and the last event handled.
// A claim resumes it first: Discord serves a session on one connection,
// so the RESUME moves it here from a connection still open in Discord's
// view (a paused owner's, a lost host's); the claim then ends it and
// identifies anew (Taken).
func (h *ShardHold) Handover(ctx context.Context) (session, resumeURL string, seq int64, ok bool) {
	e, err := h.s.conns.Get(ctx, sessionKey(h.shard))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			h.s.log.Warn().Err(err).Int("shard", h.shard).Msg("cluster: could not read the shard's last gateway session; identifying")
		}
		return "", "", 0, false
	}
	var gs gatewaySession
	if json.Unmarshal(e.Value(), &gs) != nil || gs.ID == "" || gs.URL == "" {
		return "", "", 0, false
	}
	h.rev = e.Revision()
	return gs.ID, gs.URL, gs.Seq, true
}

// Taken tells the hold that its connection resumed the session the
// previous owner left and then ended it (a clean close): no connection of
// the shard is open in Discord's view any more, so the IDENTIFY that
// follows need not wait.
func (h *ShardHold) Taken() {
	h.notBefore, h.checked = time.Now(), true
}

// Serving records the session the shard's connection serves and the last
// event it handled ("" once the session is ended); the hold writes it to
// the session key each renewal interval while it holds the shard.
// It is called after every event, so it allocates only when the session
// changes.
func (h *ShardHold) Serving(session, resumeURL string, seq int64) {
	if cur := h.serving.Load(); cur == nil || cur.ID != session || cur.URL != resumeURL {
		h.serving.Store(&gatewaySession{ID: session, URL: resumeURL})
		h.seq.Store(seq)
		// A new session is recorded at once, not at the next tick: the
		// owner may stop right after its READY.
		select {
		case h.changed <- struct{}{}:
		default:
		}
		return
	}
	h.seq.Store(seq)
}

// keepSession writes what Serving said to the session key every interval
// until stop closes, and once more then. A write is a compare-and-set
// against the revision this hold last wrote or read, so a hold that lost
// the shard never overwrites its next owner's record.
func (h *ShardHold) keepSession(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		last := false
		select {
		case <-stop:
			last = true
		case <-t.C:
		case <-h.changed:
		}
		h.writeSession(interval)
		if last {
			return
		}
	}
}

func (h *ShardHold) writeSession(timeout time.Duration) {
	cur := h.serving.Load()
	if cur == nil || h.ceded {
		return
	}
	gs := &gatewaySession{ID: cur.ID, URL: cur.URL, Seq: h.seq.Load()}
	if h.recorded != nil && *gs == *h.recorded {
		return
	}
	if gs.ID != "" && !h.Held() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	key := sessionKey(h.shard)
	var err error
	switch {
	case gs.ID == "" && h.rev == 0:
	case gs.ID == "":
		if err = h.s.conns.Delete(ctx, key, jetstream.LastRevision(h.rev)); err == nil {
			h.rev = 0
		}
	default:
		val, _ := json.Marshal(gs)
		var rev uint64
		if h.rev == 0 {
			rev, err = h.s.conns.Put(ctx, key, val)
		} else {
			rev, err = h.s.conns.Update(ctx, key, val, h.rev)
		}
		if err == nil {
			h.rev = rev
		}
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			// Another owner wrote it since: the record is theirs now.
			h.ceded = true
			return
		}
		h.s.log.Debug().Err(err).Int("shard", h.shard).Msg("cluster: could not record the shard's gateway session; retrying")
		return
	}
	h.recorded = gs
}

// disconnected deletes the shard's connection record when it is still this
// hold's: work has returned, so the socket is closed.
func (h *ShardHold) disconnected() {
	if h.marked == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.s.ttl/5)
	defer cancel()
	key := connKey(h.shard)
	e, err := h.s.conns.Get(ctx, key)
	if err == nil && string(e.Value()) == string(h.marked) {
		err = h.s.conns.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		// The next owner waits for Discord's view instead: safe, slower.
		h.s.log.Warn().Err(err).Int("shard", h.shard).Msg("cluster: could not clear a shard's connection record")
	}
}

// probeKey is the record, in the bucket "<prefix>_cluster", of the NATS
// server a process's probe connection is on.
func probeKey(replica, incarnation string) string { return "probe." + replica + "." + incarnation }

// aliveSubject is where a process answers while it runs.
func (s *Shards) aliveSubject(replica, incarnation string) string {
	return s.prefix + ".alive." + replica + "." + incarnation
}

// startProbe subscribes this process's probe subject. Without a probe, or
// when the subscription fails, this process's connections record no
// incarnation and claims after them wait for Discord.
func (s *Shards) startProbe(moved chan<- struct{}) {
	if s.probe == nil {
		return
	}
	sub, err := s.probe.Subscribe(s.aliveSubject(s.replica, s.incarnation), func(m *nats.Msg) { _ = m.Respond(s.answer()) })
	if err != nil {
		s.log.Warn().Err(err).Msg("cluster: could not subscribe the liveness probe; a claim after this replica's shards will wait for Discord")
		return
	}
	s.probe.SetReconnectHandler(func(*nats.Conn) {
		select {
		case moved <- struct{}{}:
		default:
		}
	})
	s.probeMu.Lock()
	s.probeSub = sub
	s.probeMu.Unlock()
}

// keepProbe records which server the probe connection is on, at once and
// again each time it reconnects (checked each interval as well), until ctx
// ends.
func (s *Shards) keepProbe(ctx context.Context, interval time.Duration, moved <-chan struct{}) {
	if s.probe == nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		s.recordProbe(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-moved:
		}
	}
}

// recordProbe makes sure the record of this process's probe names the
// server its connection is on now, and returns the incarnation to name in
// a connection key, or "" when there is no probe to trust.
func (s *Shards) recordProbe(ctx context.Context) string {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.probeSub == nil || !s.probe.IsConnected() {
		return ""
	}
	id := s.probe.ConnectedServerId()
	if id == "" {
		return ""
	}
	if id != s.probeServer {
		ctx, cancel := context.WithTimeout(ctx, s.ttl/5)
		defer cancel()
		// The server has the subscription before the record names it.
		if err := s.probe.FlushWithContext(ctx); err != nil {
			return ""
		}
		if _, err := s.conns.Put(ctx, probeKey(s.replica, s.incarnation), []byte(id)); err != nil {
			if ctx.Err() == nil {
				s.log.Debug().Err(err).Msg("cluster: could not record the liveness probe's server; retrying")
			}
			return ""
		}
		s.probeServer = id
	}
	return s.incarnation
}

// answer is the probe's answer: "working" and the shards whose Work runs
// in this process now (their sockets may be open), comma-separated.
func (s *Shards) answer() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := []byte("working ")
	first := true
	for shard, n := range s.working {
		if n > 0 {
			if !first {
				b = append(b, ',')
			}
			b, first = strconv.AppendInt(b, int64(shard), 10), false
		}
	}
	return b
}

// answerLists parses an answer of the probe: whether it lists shard, and
// whether it is an answer at all.
func answerLists(answer []byte, shard int) (listed, ok bool) {
	rest, ok := strings.CutPrefix(string(answer), "working ")
	if !ok {
		return false, false
	}
	if rest == "" {
		return false, true
	}
	for _, f := range strings.Split(rest, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return false, false
		}
		if n == shard {
			return true, true
		}
	}
	return false, true
}

// endProbe ends the subscription and its record once every socket of this
// process is closed.
func (s *Shards) endProbe() {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.probeSub == nil {
		return
	}
	_ = s.probeSub.Unsubscribe()
	s.probeSub, s.probeServer = nil, ""
	ctx, cancel := context.WithTimeout(context.Background(), s.ttl/5)
	defer cancel()
	_ = s.conns.Delete(ctx, probeKey(s.replica, s.incarnation))
}

// closed reports whether the connection conn records (a connection key's
// value, "<replica> <token> <incarnation>") of shard is closed, as its
// process's probe tells, and why (see Shards for why each suffices and
// what they cannot see):
//   - it was this process's: a slot is claimed again only after its Work
//     returned, and Work returns after its socket is closed;
//   - the process answers, and no Work of shard runs in it: it closes a
//     shard's socket before its Work returns, and cannot start another
//     without the lease this replica holds now;
//   - "no responders" from the very server the owner's probe was recorded
//     on: the server closed the owner's probe connection, and the kernel
//     its sockets.
func (s *Shards) closed(ctx context.Context, conn string, shard int, heartbeat time.Duration) (bool, string) {
	f := strings.Fields(conn)
	if s.probe == nil || len(f) != 3 || !validID(f[0]) || !validID(f[2]) || f[2] == "-" {
		return false, ""
	}
	replica, inc := f[0], f[2]
	if replica == s.replica && inc == s.incarnation {
		s.mu.Lock()
		others := s.working[shard] - 1 // this claim's Work runs too
		s.mu.Unlock()
		return others == 0, "it was this process's, whose Work of the shard returned before this claim"
	}
	// Each outcome below holds whenever it is seen, so the probe is asked
	// again for a while: after a NATS outage this connection, or the
	// owner's, may come back after the claim.
	deadline := time.Now().Add(s.probeFor)
	for {
		if ok, why := s.probeOnce(ctx, replica, inc, shard, heartbeat); ok {
			return true, why
		}
		if time.Now().After(deadline) {
			return false, ""
		}
		select {
		case <-ctx.Done():
			return false, ""
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// probeWindow is how long a claim asks the previous owner's probe again
// before it waits for Discord: two of nats.go's reconnect intervals (2 s).
const probeWindow = 5 * time.Second

// probeOnce asks the probe of the process replica, incarnation inc once
// (see closed).
func (s *Shards) probeOnce(ctx context.Context, replica, inc string, shard int, heartbeat time.Duration) (bool, string) {
	if !s.probe.IsConnected() {
		return false, ""
	}
	e, err := s.conns.Get(ctx, probeKey(replica, inc))
	server := ""
	if err == nil {
		server = string(e.Value())
	}
	reconnects := s.probe.Stats().Reconnects
	onServer := server != "" && s.probe.IsConnected() && s.probe.ConnectedServerId() == server
	rctx, cancel := context.WithTimeout(ctx, max(s.ttl/5, 400*time.Millisecond))
	defer cancel()
	m, err := s.probe.RequestWithContext(rctx, s.aliveSubject(replica, inc), nil)
	switch {
	case err == nil:
		if listed, ok := answerLists(m.Data, shard); ok && !listed {
			return true, "its process answers without the shard connected"
		}
		return false, ""
	case !errors.Is(err, nats.ErrNoResponders) || !onServer || DiscordSilence*heartbeat > ProbeStaleAfter:
		if !onServer && errors.Is(err, nats.ErrNoResponders) {
			s.log.Debug().Str("previous", replica).Msg("cluster: the previous owner's probe was recorded on another NATS server than this replica's; not trusting 'no responders'")
		}
		return false, ""
	}
	// The answer came from that server, which kept its id (it did not
	// start again) and to which this connection stayed.
	if s.probe.IsConnected() && s.probe.ConnectedServerId() == server && s.probe.Stats().Reconnects == reconnects {
		return true, "its process is gone, its sockets closed with it"
	}
	return false, ""
}
