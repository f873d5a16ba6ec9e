package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Leases claims, in a JetStream KV bucket, a fair share of numbered slots
// (the partitions of the work stream, or the shards of the Discord
// gateway) for one replica, and runs Work for each slot while it holds it.
//
// The bucket keeps one key per slot, "owner.<slot>", whose value is the
// owner's replica id, and one per live replica, "alive.<replica>". The
// bucket's MaxAge is the lease TTL: a key that is not rewritten within TTL
// disappears on the server, by the server's clock. A replica
//
//   - writes its alive key every Renew;
//   - renews each slot it holds every Renew with a compare-and-set on the
//     revision it last wrote (kv.Update): a failed CAS means the slot is
//     not its own any more, and its Work is cancelled at once. Each
//     renewal is a request of its own, sent at the tick whatever the
//     others do and bounded by Renew: no other request (the alive key,
//     reading the bucket, claims, another slot's renewal) can hold it back
//     towards the fence;
//   - cancels a slot's Work by itself when Deadline has passed since it
//     sent the last renewal that succeeded (a fence): that is before the
//     key can expire on the server (Deadline < TTL), so two replicas never
//     run Work for one slot at the same time, however the network fails;
//   - claims free slots (kv.Create, which fails when the key exists) up to
//     ceil(slots / live replicas), and gives up its highest slots above
//     that share once their Work has returned, so that ownership evens out
//     when replicas join.
//
// A slot is claimed again, by anyone, only after its Work has returned in
// the replica that held it, or the lease has expired.
type Leases struct {
	// KV is the bucket; its MaxAge must be TTL (EnsureBucket).
	KV jetstream.KeyValue
	// Replica is this replica's id: letters, digits, '-' and '_'.
	Replica string
	// Slots is how many slots there are, numbered from 0.
	Slots int
	// TTL is the bucket's MaxAge: how long a lease lasts without renewal.
	TTL time.Duration
	// Renew is how often leases are renewed and free slots claimed
	// (default TTL/5).
	Renew time.Duration
	// Deadline is how long after the last successful renewal was sent a
	// slot's Work is cancelled (default TTL - 2*Renew). It must be less
	// than TTL.
	Deadline time.Duration
	// Work runs while this replica holds slot; its context ends when the
	// lease is lost, given up or fenced, or Run ends. It should return
	// soon after. h tells whether the hold still lasts at any instant,
	// before the context's end has been delivered (Hold.Valid), and the
	// claim's fencing token.
	Work func(ctx context.Context, slot int, h Hold)
	// Alone, when not "", is written in this replica's alive key: its
	// store is its own (Config.Alone).
	Alone string
	// Tools, when not "", is written in this replica's alive key: the
	// digest of its tools (Config.Tools).
	Tools string
	// Settings, when not "", is written in this replica's alive key: the
	// digest of its settings (Config.Settings).
	Settings string
	// Starting says that Open wrote this replica's starting key
	// (startingKey): it is deleted once the alive key is written.
	Starting bool
	// Log receives lease changes.
	Log zerolog.Logger
	// Prefer are slots claimed before any other when free (the gateway's
	// shard 0, which receives every direct message).
	Prefer []int

	mu   sync.Mutex
	held map[int]*lease // guarded by mu

	// stopping runs the stops of finished watches (snapshot) off the
	// claims' path; Run waits for them.
	stopping sync.WaitGroup
	// announced is set once the alive key has been written.
	announced atomic.Bool
}

// lease is one slot this replica holds, or held and waits for its Work.
type lease struct {
	rev   uint64
	claim uint64 // the revision that created the key: the fencing token
	// until is when the fence passes (the last renewal sent that succeeded
	// plus Deadline), on the monotonic clock. Guarded by Leases.mu.
	until  time.Time
	cancel context.CancelFunc
	done   chan struct{} // closed when Work has returned
	fence  *time.Timer
	// state is held (renewed), release (giving up: renewed until Work
	// returns, then deleted) or lost (not ours; forgotten when Work
	// returns). Guarded by Leases.mu.
	state leaseState
	// busy is true while a renewal or the deletion of the key is in
	// flight; due, when the tick of the next renewal came meanwhile: it is
	// sent as soon as the one in flight ends. Guarded by Leases.mu.
	busy, due bool
	// unsure is true when the last renewal failed without a verdict (a
	// timeout): the server may have written it, and the revision le
	// knows be stale. Guarded by Leases.mu.
	unsure bool
}

type leaseState int

// Hold is one claim of a slot by this replica, as its Work sees it.
type Hold struct {
	l  *Leases
	le *lease
}

// Valid reports whether the claim still holds: the lease is not known to
// be lost (one being given up is renewed until Work returns), and the fence has not passed by this process's
// monotonic clock. It reads the clock itself instead of waiting for the
// fence's timer, so that a process paused (SIGSTOP, a stalled VM) past
// its fence sees false as soon as it runs again, before any timer or
// renewal had a chance to run: Work checks it before each action that
// must not happen outside the lease (a Discord shard's every frame).
func (h Hold) Valid() bool {
	if h.le == nil {
		return false
	}
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	return h.le.state != stateLost && time.Now().Before(h.le.until)
}

// Token is the fencing token of the claim: the bucket's revision of the
// key's creation. A later claim of the slot, by any replica, has a greater
// one, since it creates the key after this claim's last write to it.
func (h Hold) Token() uint64 {
	if h.le == nil {
		return 0
	}
	return h.le.claim
}

const (
	stateHeld leaseState = iota
	stateRelease
	stateLost
)

// EnsureBucket creates or updates the KV bucket of a Leases with MaxAge ttl.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	kv, err := createKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Talon leases: owner.<slot> = replica id, alive.<replica>; keys expire after the lease TTL",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: lease bucket %s: %w", bucket, err)
	}
	return kv, nil
}

func (l *Leases) defaults() error {
	if l.KV == nil || l.Work == nil || l.Slots <= 0 || l.TTL <= 0 {
		return errors.New("cluster: leases need a KV bucket, Work, Slots and a TTL")
	}
	if !validID(l.Replica) {
		return fmt.Errorf("cluster: replica id %q: use letters, digits, '-' and '_'", l.Replica)
	}
	if l.Renew <= 0 {
		l.Renew = l.TTL / 5
	}
	if l.Deadline <= 0 {
		l.Deadline = l.TTL - 2*l.Renew
	}
	if l.Deadline >= l.TTL || l.Deadline <= l.Renew {
		return fmt.Errorf("cluster: lease deadline %s must be between the renewal interval %s and the TTL %s", l.Deadline, l.Renew, l.TTL)
	}
	return nil
}

// Run claims and renews leases until ctx ends. Then it cancels every
// Work, waits for them, and deletes its keys, so that the other replicas
// take its slots over at once rather than after TTL.
func (l *Leases) Run(ctx context.Context) error {
	if err := l.defaults(); err != nil {
		return err
	}
	l.mu.Lock()
	l.held = map[int]*lease{}
	l.mu.Unlock()
	renewing := make(chan struct{})
	go func() {
		defer close(renewing)
		l.keep(ctx)
	}()
	t := time.NewTicker(l.Renew)
	defer t.Stop()
	for {
		l.tick(ctx)
		select {
		case <-ctx.Done():
			<-renewing
			l.stop()
			l.stopping.Wait()
			return nil
		case <-t.C:
		}
	}
}

// keep announces this replica and renews its leases every Renew until ctx
// ends, then waits for the requests in flight. Every request is sent at
// the tick, on its own: a slow one holds back only the next of its kind
// (one at a time each, sent as soon as it ends), and each ends within
// Renew.
func (l *Leases) keep(ctx context.Context) {
	var inflight sync.WaitGroup
	defer inflight.Wait()
	var announcing atomic.Bool
	t := time.NewTicker(l.Renew)
	defer t.Stop()
	for {
		if announcing.CompareAndSwap(false, true) {
			inflight.Go(func() {
				defer announcing.Store(false)
				l.announce(ctx)
			})
		}
		l.mu.Lock()
		for slot, le := range l.held {
			if le.busy {
				le.due = true
				continue
			}
			var done bool
			select {
			case <-le.done:
				done = true
			default:
			}
			switch {
			case done && le.state == stateRelease:
				le.busy = true
				inflight.Go(func() { l.release(ctx, slot, le) })
			case done:
				// Lost, or its Work returned by itself: forgotten, its key
				// left to expire.
				l.stopFence(le)
				delete(l.held, slot)
			case le.state != stateLost:
				le.busy = true
				inflight.Go(func() { l.renew(ctx, slot, le) })
			}
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// announce writes this replica's alive key, and then deletes its
// starting key, which stood for it until then (Starting).
func (l *Leases) announce(ctx context.Context) {
	cctx, cancel := l.call(ctx)
	defer cancel()
	val := aliveValue(aliveInfo{alone: l.Alone, tools: l.Tools, settings: l.Settings}, time.Now())
	if _, err := l.KV.Put(cctx, aliveKey(l.Replica), val); err != nil {
		if ctx.Err() == nil {
			l.Log.Warn().Err(err).Msg("cluster: could not announce this replica; its leases end if this goes on")
		}
		return
	}
	if l.Starting && l.announced.CompareAndSwap(false, true) {
		// Left to expire (the bucket's MaxAge) when this fails.
		_ = l.KV.Delete(cctx, startingKey(l.Replica))
	}
}

// aliveValue is the value of an alive or starting key (aliveOf reads it).
func aliveValue(a aliveInfo, now time.Time) []byte {
	val := now.UTC().Format(time.RFC3339)
	if a.settings != "" {
		val = "settings " + a.settings + " " + val
	}
	if a.tools != "" {
		val = "tools " + a.tools + " " + val
	}
	if a.alone != "" {
		val = "alone " + a.alone + " " + val
	}
	return []byte(val)
}

// Held lists the slots whose Work runs now, in order.
func (l *Leases) Held() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for i := range l.Slots {
		if le := l.held[i]; le != nil && le.state != stateLost {
			out = append(out, i)
		}
	}
	return out
}

// aliveInfo is what a replica's alive key says of it; each field is ""
// when the key does not say it.
type aliveInfo struct {
	alone    string // the store of a replica alone (Leases.Alone)
	tools    string // the digest of its tools (Leases.Tools)
	settings string // the digest of its settings (Leases.Settings)
}

// aliveOf reads an alive key's value:
// "[alone <store> ][tools <digest> ][settings <digest> ]<time>". A replica
// of a version before the settings' digest writes none, and one before the
// tools' digest neither; a version before this one reads the store and
// the tools' digest of this one's value.
func aliveOf(v []byte) aliveInfo {
	var a aliveInfo
	rest := string(v)
	for _, f := range []struct {
		name string
		to   *string
	}{{"alone ", &a.alone}, {"tools ", &a.tools}, {"settings ", &a.settings}} {
		if r, ok := strings.CutPrefix(rest, f.name); ok {
			*f.to, rest, _ = strings.Cut(r, " ")
		}
	}
	return a
}

func ownerKey(slot int) string       { return "owner." + strconv.Itoa(slot) }
func aliveKey(replica string) string { return "alive." + replica }

// startingKey names a replica that is starting (Open) and has not yet
// written its alive key: the replicas starting at the same instant find
// each other through it (checkPeers).
func startingKey(replica string) string { return "starting." + replica }

// call bounds one request to the bucket.
func (l *Leases) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.Renew)
}

// tick finds the leases lost, gives up those above the share and claims
// free slots up to it, once. Renewals are keep's, never held back by this.
func (l *Leases) tick(ctx context.Context) {
	owners, alive, err := l.snapshot(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.Log.Warn().Err(err).Msg("cluster: could not read the leases")
		}
		return
	}

	// A lease whose key another replica wrote after this one's claim is
	// lost. A key missing from the snapshot proves nothing: the read may
	// have ended early (snapshot). The renewal's CAS finds a lease gone
	// within Renew, and the fence is there whatever happens.
	l.mu.Lock()
	for slot, le := range l.held {
		select {
		case <-le.done:
			continue // forgotten or given up by keep
		default:
		}
		if le.state == stateLost {
			continue
		}
		if o, ok := owners[slot]; ok && o.replica != l.Replica && o.rev > le.claim {
			l.loseLocked(slot, le, "the lease was taken")
		}
	}
	l.mu.Unlock()
	if ctx.Err() != nil {
		return
	}

	// The share: ceil(slots / live replicas), this one counted.
	alive[l.Replica] = true
	share := (l.Slots + len(alive) - 1) / len(alive)
	l.mu.Lock()
	var active []int
	for slot, le := range l.held {
		if le.state == stateHeld {
			active = append(active, slot)
		}
	}
	if extra := len(active) - share; extra > 0 {
		// The highest slots go: each replica's choice is the same, and
		// they are the ones a newcomer claims first (below).
		slicesSortDesc(active)
		for _, slot := range active[:extra] {
			le := l.held[slot]
			le.state = stateRelease
			le.cancel()
			l.Log.Info().Int("slot", slot).Int("share", share).Msg("cluster: giving up a lease for a fair share")
		}
	}
	busy := len(l.held)
	l.mu.Unlock()

	// Claim free slots, highest first from a point of this replica's
	// own, to meet the share.
	want := share - busy
	if want <= 0 {
		return
	}
	start := int(hash32(l.Replica) % uint32(l.Slots))
	order := make([]int, 0, len(l.Prefer)+l.Slots)
	for _, slot := range l.Prefer {
		if slot >= 0 && slot < l.Slots {
			order = append(order, slot)
		}
	}
	for k := range l.Slots {
		order = append(order, (start+k)%l.Slots)
	}
	// The claims of a batch are sent together: taking a dead replica's
	// slots over costs one request's time, not one per slot.
	l.mu.Lock()
	var free []int
	for _, slot := range order {
		if _, taken := owners[slot]; taken {
			continue
		}
		if _, mine := l.held[slot]; mine || slices.Contains(free, slot) {
			continue
		}
		free = append(free, slot)
	}
	l.mu.Unlock()
	for want > 0 && len(free) > 0 && ctx.Err() == nil {
		batch := free[:min(want, len(free))]
		free = free[len(batch):]
		var claims sync.WaitGroup
		var won atomic.Int32
		for _, slot := range batch {
			claims.Go(func() {
				if l.claim(ctx, slot) {
					won.Add(1)
				}
			})
		}
		claims.Wait()
		want -= int(won.Load())
	}
}

// owner is a slot's lease as the bucket has it.
type owner struct {
	replica string
	rev     uint64
}

// snapshot reads the keys of the bucket. A read while the bucket is
// written may end before every key was delivered: nats.go's watch sends
// its marker of the initial values when a message says nothing more is
// pending, and under concurrent writes that count can reach 0 before the
// replay is over (nats-server#4824, nats.py#995). So a key missing here is
// not known to be gone: it costs a claim that fails (ErrKeyExists), or,
// for an alive key, a share too large until the next read, never a lease.
func (l *Leases) snapshot(ctx context.Context) (map[int]owner, map[string]bool, error) {
	cctx, cancel := l.call(ctx)
	defer cancel()
	w, err := l.KV.WatchAll(cctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, err
	}
	// Stop deletes the watch's consumer, a request with nats.go's own
	// timeout (5 s) and no context: it is not waited for here.
	defer l.stopping.Go(func() { _ = w.Stop() })
	owners := map[int]owner{}
	alive := map[string]bool{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, errors.New("cluster: the lease watch ended early")
			}
			if e == nil {
				return owners, alive, nil
			}
			k := e.Key()
			switch {
			case strings.HasPrefix(k, "owner."):
				if slot, err := strconv.Atoi(k[len("owner."):]); err == nil && slot >= 0 && slot < l.Slots {
					owners[slot] = owner{replica: string(e.Value()), rev: e.Revision()}
				}
			case strings.HasPrefix(k, "alive."):
				alive[k[len("alive."):]] = true
			}
		case <-cctx.Done():
			return nil, nil, cctx.Err()
		}
	}
}

// claim creates slot's key; on success Work starts.
func (l *Leases) claim(ctx context.Context, slot int) bool {
	sent := time.Now()
	cctx, cancel := l.call(ctx)
	rev, err := l.KV.Create(cctx, ownerKey(slot), []byte(l.Replica))
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			l.Log.Warn().Err(err).Int("slot", slot).Msg("cluster: could not claim a lease")
		}
		return false
	}
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	le := &lease{rev: rev, claim: rev, until: sent.Add(l.Deadline), cancel: wcancel, done: make(chan struct{})}
	l.mu.Lock()
	l.held[slot] = le
	le.fence = time.AfterFunc(l.Deadline-time.Since(sent), func() { l.fenced(slot, le) })
	l.mu.Unlock()
	l.Log.Info().Int("slot", slot).Uint64("token", rev).Msg("cluster: lease claimed")
	go func() {
		defer close(le.done)
		l.Work(wctx, slot, Hold{l: l, le: le})
	}()
	return true
}

// renew rewrites slot's key with a CAS on the revision le last wrote, and
// again at once while the next renewal came due meanwhile; le.busy is set,
// and cleared here.
func (l *Leases) renew(ctx context.Context, slot int, le *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		rev, unsure, until := le.rev, le.unsure, le.until
		le.due = false
		l.mu.Unlock()
		next, sent, err := l.update(ctx, slot, rev)
		if unsure && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// The renewal that failed without a verdict may have been
			// written. Before the fence the key cannot have expired since
			// the last renewal known written, nor been created by anyone
			// else, so a newer revision holding this replica's id is that
			// renewal's: renew on it.
			if cur, ok := l.written(ctx, slot, rev, until); ok {
				next, sent, err = l.update(ctx, slot, cur)
			}
		}
		l.mu.Lock()
		if !l.renewedLocked(slot, le, next, sent, err) || !le.due || ctx.Err() != nil {
			le.busy = false
			return
		}
		select {
		case <-le.done:
			le.busy = false
			return // keep forgets it, or deletes its key
		default:
		}
	}
}

// update sends one renewal of slot.
func (l *Leases) update(ctx context.Context, slot int, rev uint64) (next uint64, sent time.Time, err error) {
	cctx, cancel := l.call(context.WithoutCancel(ctx))
	defer cancel()
	sent = time.Now()
	next, err = l.KV.Update(cctx, ownerKey(slot), []byte(l.Replica), rev)
	return next, sent, err
}

// written returns the revision of slot's key when it holds this
// replica's id, is newer than rev, and was read before until (the fence).
func (l *Leases) written(ctx context.Context, slot int, rev uint64, until time.Time) (uint64, bool) {
	cctx, cancel := l.call(context.WithoutCancel(ctx))
	defer cancel()
	e, err := l.KV.Get(cctx, ownerKey(slot))
	if err != nil || string(e.Value()) != l.Replica || e.Revision() <= rev || !time.Now().Before(until) {
		return 0, false
	}
	return e.Revision(), true
}

// renewedLocked records the outcome of a renewal of le sent at sent, and
// reports whether le is still held.
func (l *Leases) renewedLocked(slot int, le *lease, next uint64, sent time.Time, err error) bool {
	if l.held[slot] != le || le.state == stateLost {
		return false
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			l.loseLocked(slot, le, "the lease was taken")
			return false
		}
		l.Log.Warn().Err(err).Int("slot", slot).Msg("cluster: could not renew a lease")
		le.unsure = true
		return true // the fence cancels Work if this goes on
	}
	le.unsure = false
	le.rev = next
	le.until = sent.Add(l.Deadline)
	le.fence.Reset(l.Deadline - time.Since(sent))
	return true
}

// release deletes the key of a slot given up whose Work has returned, and
// forgets the slot; le.busy is set.
func (l *Leases) release(ctx context.Context, slot int, le *lease) {
	l.mu.Lock()
	rev := le.rev
	l.mu.Unlock()
	cctx, cancel := l.call(context.WithoutCancel(ctx))
	defer cancel()
	err := l.KV.Delete(cctx, ownerKey(slot), jetstream.LastRevision(rev))
	l.mu.Lock()
	le.busy = false
	l.stopFence(le)
	if l.held[slot] == le {
		delete(l.held, slot)
	}
	l.mu.Unlock()
	if err != nil {
		l.Log.Warn().Err(err).Int("slot", slot).Msg("cluster: could not give up a lease; it expires by itself")
	}
}

// fenced cancels a slot's Work when its lease may be about to expire.
func (l *Leases) fenced(slot int, le *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[slot] != le || le.state == stateLost {
		return
	}
	l.loseLocked(slot, le, "not renewed in time")
}

// loseLocked cancels the Work of a slot that is not this replica's any
// more; the slot is forgotten (and may be claimed again) once Work has
// returned.
func (l *Leases) loseLocked(slot int, le *lease, why string) {
	le.state = stateLost
	le.cancel()
	l.Log.Warn().Int("slot", slot).Str("reason", why).Msg("cluster: lease lost; its work stops")
}

func (l *Leases) stopFence(le *lease) {
	if le.fence != nil {
		le.fence.Stop()
	}
}

// stop cancels every Work, waits for them, and deletes this replica's keys.
func (l *Leases) stop() {
	l.mu.Lock()
	held := l.held
	for _, le := range held {
		le.cancel()
		l.stopFence(le)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.TTL)
	defer cancel()
	for slot, le := range held {
		<-le.done
		l.mu.Lock()
		lost := le.state == stateLost
		l.mu.Unlock()
		if !lost {
			_ = l.KV.Delete(ctx, ownerKey(slot), jetstream.LastRevision(le.rev))
		}
	}
	_ = l.KV.Delete(ctx, aliveKey(l.Replica))
	if l.Starting && !l.announced.Load() {
		_ = l.KV.Delete(ctx, startingKey(l.Replica))
	}
	l.mu.Lock()
	l.held = map[int]*lease{}
	l.mu.Unlock()
}

// validID reports whether s may be a replica id (a KV key token).
func validID(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

func slicesSortDesc(s []int) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] > s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// NewReplicaID returns an id for this process: the host name's safe
// characters and a random suffix.
func NewReplicaID(host string) string {
	var b strings.Builder
	for _, c := range host {
		if validID(string(c)) && b.Len() < 40 {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		b.WriteString("talon")
	}
	fmt.Fprintf(&b, "-%08x", rand.Uint32())
	return b.String()
}
