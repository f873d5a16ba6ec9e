package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

// Limits holds the runtime's turn limits across the replicas of a
// deployment (agent.Limiter), in two JetStream KV buckets:
//
//   - "<prefix>_slots": one key per turn running anywhere, in two sets of
//     numbered slots: "g.<i>" for the global bound (i < the bound) and
//     "u.<principal hash>.<i>" for one person's (i < the per-user bound).
//     A turn takes a free key of each with kv.Create, which fails when the
//     key exists, and deletes both when it ends. The bucket's MaxAge is the
//     lease TTL and the holder rewrites its keys every TTL/4 (a
//     compare-and-set on the revision it wrote), so the slots of a replica
//     that dies free themselves within the TTL, by the server's clock.
//     A replica whose turn waits for a slot of a set writes
//     "w.<set>.<replica>" ("w.g.<replica>", "w.u.<principal hash>.<replica>")
//     and renews it while it waits: the others then give up the set's slots
//     as their turns end, rather than keep them for their own next turns,
//     and a turn of theirs that starts meanwhile lets the waiter go first.
//     Without it a replica with a stream of one person's turns kept that
//     person's slot for as long as the stream lasted (seconds, in
//     TestChaosNATSRestartUnderLoad) while the person's turn on another
//     replica waited.
//   - "<prefix>_rates": one key per person, "r.<principal hash>", holding a
//     token bucket (tokens and the time they were counted), changed with a
//     compare-and-set. Its MaxAge is a minute: a bucket untouched for a
//     minute is full again, the same as no key.
//
// Limits are a bound on load, not a safety property: a replica cut off
// from NATS for longer than the TTL may still run turns whose slots have
// been taken by others meanwhile, so the bound can be passed for that
// long. A failing bucket makes the runtime fall back to its own bounds.
type Limits struct {
	slots   jetstream.KeyValue
	rates   jetstream.KeyValue
	replica string
	ttl     time.Duration
	log     zerolog.Logger
	// js, prefix and replicas make the buckets again (reopen): they are
	// kept in the server's memory, and a NATS server that restarts comes
	// back without them.
	js       jetstream.JetStream
	prefix   string
	replicas int
	// downUntil is when the buckets are tried again after one failed
	// (unix nanoseconds): until then a turn is told at once that the
	// limits cannot be checked, rather than each waiting for the failure.
	downUntil atomic.Int64
	// rewatch tells the watch to start again on the buckets made anew.
	rewatch chan struct{}
	// reopenMu serialises reopen; reopened and reopenOK are its last
	// time and outcome, guarded by reopenMu.
	reopenMu   sync.Mutex
	reopened   time.Time
	reopenOK   bool
	reconnects uint64 // the connection's reconnects last seen by Run
	// Now is the clock of the rate buckets (time.Now when nil).
	Now func() time.Time

	mu   sync.Mutex
	held map[*slot]struct{} // slots held here, renewed; guarded by mu
	// view is the last state of each slot key seen (a watch of the
	// bucket, and this replica's own writes), so that a free slot is
	// taken with one compare-and-set; guarded by mu.
	view map[string]seen
	// freed is closed (and replaced) when the watch sees a slot freed;
	// guarded by mu.
	freed chan struct{}
	// rateWrites are the rate buckets this replica wrote lately, swept
	// at ratesSwept; guarded by mu.
	rateWrites map[string]rateWrite
	ratesSwept time.Time
	// kept are slots freed by their turn and kept for the next turn here
	// that takes a slot of the same set (by key prefix), for at most
	// keepFor: freeing a slot and taking one cost two writes to the
	// bucket, reusing one costs none. guarded by mu.
	kept map[string][]*slot
	// keep is how long a slot is kept (keepFor; tests change it before
	// Run).
	keep time.Duration
	// wants are the "w." keys seen (the watch, and this replica's own
	// writes): set → replica → when it was written; guarded by mu.
	wants map[string]map[string]time.Time
}

// keepFor is how long a slot freed by its turn is kept for the next turn
// of this replica before it is freed in the bucket (up to twice that: the
// sweep runs every keepFor). The limits still hold (a kept slot counts as
// taken), and another replica does not wait for it: its turn's "w." key,
// seen through the watch, frees the set's kept slots at once. A second
// covers a person's next message under load, when a turn's reply, the
// next message and its turn take a few hundred milliseconds (before, 50
// ms: nearly every turn freed its person's slot and took one again, two
// writes that every replica's watch receives).
const keepFor = time.Second

// seen is a slot key's state as last seen.
type seen struct {
	rev  uint64
	free bool      // its value is "": released
	at   time.Time // when it was written, by the server's clock
}

// slot is one key this replica holds.
type slot struct {
	key    string
	prefix string     // the set it belongs to: "g." or "u.<principal hash>."
	index  int        // its number in the set
	mu     sync.Mutex // serialises its renewal and its release
	rev    uint64     // guarded by mu
	gone   bool       // released or lost; guarded by mu
	keptAt time.Time  // when its turn freed it and it was kept; guarded by Limits.mu
}

// OpenLimits makes sure the two buckets exist (with their MaxAge) and
// returns the Limits of replica. Run must run for the slots it holds to
// be renewed.
func OpenLimits(ctx context.Context, js jetstream.JetStream, prefix, replica string, ttl time.Duration, replicas int, log zerolog.Logger) (*Limits, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	l := &Limits{replica: replica, ttl: ttl, log: log, js: js, prefix: prefix, replicas: replicas,
		held: map[*slot]struct{}{}, view: map[string]seen{}, wants: map[string]map[string]time.Time{}, freed: make(chan struct{}), keep: keepFor,
		rewatch: make(chan struct{}, 1)}
	if err := l.open(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// open makes sure the two buckets exist, with their settings.
func (l *Limits) open(ctx context.Context) error {
	slots, err := createKV(ctx, l.js, jetstream.KeyValueConfig{
		Bucket:      l.prefix + "_slots",
		Description: "Talon: the turns running in the deployment, g.<i> and u.<principal hash>.<i> = replica id; keys expire after the lease TTL",
		History:     1,
		TTL:         l.ttl,
		Storage:     jetstream.MemoryStorage,
		Replicas:    max(l.replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("cluster: turn slots bucket: %w", err)
	}
	rates, err := createKV(ctx, l.js, jetstream.KeyValueConfig{
		Bucket:      l.prefix + "_rates",
		Description: "Talon: each person's turns a minute, r.<principal hash> = tokens and when they were counted; a key untouched for a minute expires (full)",
		History:     1,
		TTL:         time.Minute,
		Storage:     jetstream.MemoryStorage,
		Replicas:    max(l.replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("cluster: turn rate bucket: %w", err)
	}
	l.slots, l.rates = slots, rates
	return nil
}

// errLimitsDown is returned while the buckets are taken as unavailable.
var errLimitsDown = errors.New("cluster: the turn limit buckets did not answer lately; tried again shortly")

// opTimeout bounds one operation on a bucket: NATS answers within
// milliseconds, and a turn that waits on a missing bucket waits for this.
func (l *Limits) opTimeout() time.Duration { return min(l.ttl/4, time.Second) }

// down reports whether the buckets failed lately and are not tried yet.
func (l *Limits) down() bool { return time.Now().UnixNano() < l.downUntil.Load() }

// failed records that an operation on a bucket failed other than by the
// caller's context (and reopening the buckets did not help): turns are
// told at once for a quarter of the TTL, and Run reopens the buckets
// meanwhile.
func (l *Limits) failed(ctx context.Context) {
	if ctx.Err() == nil {
		l.downUntil.Store(time.Now().Add(l.ttl / 4).UnixNano())
	}
}

// retry runs op, and when it fails other than by ctx, reopens the buckets
// and runs it once more: the first turns after a NATS server restarted
// find the buckets gone, make them again and take their slots in them.
func retry[T any](ctx context.Context, l *Limits, op func() (T, error)) (T, error) {
	v, err := op()
	if err != nil && ctx.Err() == nil && !errors.Is(err, errRateContended) {
		if l.reopen(ctx) {
			v, err = op()
		}
		if err != nil && !errors.Is(err, errRateContended) {
			l.failed(ctx)
		}
	}
	return v, err
}

// reopen makes the buckets again (a NATS server that restarted has lost
// them; making them when they exist changes nothing) and forgets what was
// seen of the old ones: a bucket made anew numbers its revisions from 1
// again. Callers at once share one try (within opTimeout of the last).
func (l *Limits) reopen(ctx context.Context) bool {
	l.reopenMu.Lock()
	defer l.reopenMu.Unlock()
	if time.Since(l.reopened) < l.opTimeout() {
		return l.reopenOK
	}
	octx, cancel := context.WithTimeout(ctx, l.opTimeout())
	defer cancel()
	err := l.open(octx)
	l.reopened, l.reopenOK = time.Now(), err == nil
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn().Err(err).Msg("cluster: the turn limit buckets do not answer; turns run under this process's limits meanwhile")
		}
		return false
	}
	l.mu.Lock()
	l.view = map[string]seen{}
	l.wants = map[string]map[string]time.Time{}
	l.rateWrites = nil
	l.mu.Unlock()
	select {
	case l.rewatch <- struct{}{}:
	default:
	}
	if l.downUntil.Swap(0) != 0 {
		l.log.Info().Msg("cluster: the turn limit buckets answer again")
	}
	return true
}

// reconnected reports whether the connection to NATS was made again since
// the last call (the server may have restarted without the buckets).
func (l *Limits) reconnected() bool {
	n := l.js.Conn().Stats().Reconnects
	if n == l.reconnects {
		return false
	}
	l.reconnects = n
	return true
}

// Run watches the slots and renews those held here every TTL/4 until ctx
// ends.
func (l *Limits) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { l.watch(ctx) })
	t := time.NewTicker(l.ttl / 4)
	defer t.Stop()
	sweep := time.NewTicker(min(l.keep, l.ttl/4))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			// The kept slots are free for the other replicas at once.
			l.freeKept(time.Time{})
			return
		case <-sweep.C:
			l.freeKept(time.Now().Add(-l.keep))
		case <-t.C:
			if l.downUntil.Load() != 0 || l.reconnected() {
				l.reopen(ctx)
			}
			l.renew(ctx)
		}
	}
}

// freeKept frees in the bucket the kept slots kept before until (all of
// them when until is zero).
func (l *Limits) freeKept(until time.Time) {
	var old []*slot
	l.mu.Lock()
	for prefix, ss := range l.kept {
		i := 0
		for i < len(ss) && (until.IsZero() || ss[i].keptAt.Before(until)) {
			i++
		}
		old = append(old, ss[:i]...)
		if i == len(ss) {
			delete(l.kept, prefix)
		} else {
			l.kept[prefix] = ss[i:]
		}
	}
	l.mu.Unlock()
	for _, s := range old {
		l.free(s)
	}
}

func (l *Limits) renew(ctx context.Context) {
	l.mu.Lock()
	held := make([]*slot, 0, len(l.held))
	for s := range l.held {
		held = append(held, s)
	}
	l.mu.Unlock()
	for _, s := range held {
		s.mu.Lock()
		if !s.gone {
			octx, cancel := context.WithTimeout(ctx, l.opTimeout())
			rev, err := l.slots.Update(octx, s.key, []byte(l.replica), s.rev)
			cancel()
			switch {
			case err == nil:
				s.rev = rev
				l.saw(s.key, seen{rev: rev, at: time.Now()})
			case ctx.Err() != nil:
			case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) || isWrongSequence(err):
				// Expired and perhaps taken: the turn goes on, and the
				// bound may be passed by one until it ends.
				s.gone = true
				l.forget(s)
				l.log.Warn().Str("slot", s.key).Msg("cluster: a running turn's slot expired before it was renewed; the turn limits may be passed by one until it ends")
			default:
				l.log.Warn().Err(err).Str("slot", s.key).Msg("cluster: renew a running turn's slot")
			}
		}
		s.mu.Unlock()
	}
}

// watch keeps view up to date until ctx ends, watching again after an
// error. (A key that expires leaves no trace in a watch: a slot seen held
// for longer than the TTL is tried as if it were free.)
func (l *Limits) watch(ctx context.Context) {
	for ctx.Err() == nil {
		// Each watch ends with the buckets made anew (reopen).
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-l.rewatch:
				cancel()
			case <-wctx.Done():
			}
		}()
		w, err := l.slots.WatchAll(wctx)
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				l.log.Warn().Err(err).Msg("cluster: watch the turn slots; slots are taken by trying them meanwhile")
			}
			if !sleepCtx(ctx, l.ttl/4) {
				return
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				continue // the end of the initial values
			}
			if set, replica, ok := parseWantKey(e.Key()); ok {
				l.sawWant(set, replica, e.Created(), e.Operation() != jetstream.KeyValuePut)
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				l.saw(e.Key(), seen{rev: e.Revision(), free: true, at: e.Created()})
				continue
			}
			l.saw(e.Key(), seen{rev: e.Revision(), free: len(e.Value()) == 0, at: e.Created()})
		}
		cancel()
		_ = w.Stop()
	}
}

// sleepCtx waits d, or less if ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// saw records a slot's state, unless a newer one is known.
func (l *Limits) saw(key string, st seen) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.view[key]; ok && cur.rev >= st.rev {
		return
	}
	l.view[key] = st
	if st.free {
		close(l.freed)
		l.freed = make(chan struct{})
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

func (l *Limits) forget(s *slot) {
	l.mu.Lock()
	delete(l.held, s)
	l.mu.Unlock()
}

// principalHash names a principal in keys: the first 16 bytes of the
// SHA-256 of its string, in hex (keys allow few characters, and the bucket
// need not show who talks to Talon).
func principalHash(p agent.Principal) string {
	h := sha256.Sum256([]byte(p.String()))
	return hex.EncodeToString(h[:16])
}

// Acquire waits for one of p's perUser slots and one of the global slots
// (agent.Limiter). It polls while they are all taken, at most every half
// second.
func (l *Limits) Acquire(ctx context.Context, p agent.Principal, perUser, global int) (func(), error) {
	if perUser <= 0 || global <= 0 {
		return nil, errors.New("cluster: turn limits must be positive")
	}
	if l.down() {
		return nil, errLimitsDown
	}
	return retry(ctx, l, func() (func(), error) { return l.acquire(ctx, p, perUser, global) })
}

func (l *Limits) acquire(ctx context.Context, p agent.Principal, perUser, global int) (func(), error) {
	user, err := l.take(ctx, "u."+principalHash(p)+".", perUser)
	if err != nil {
		return nil, err
	}
	all, err := l.take(ctx, "g.", global)
	if err != nil {
		l.release(user)
		return nil, err
	}
	return func() {
		l.release(all)
		l.release(user)
	}, nil
}

// take claims a free key among prefix0 … prefix(n-1), starting at a
// random one, and waits while there is none: until the watch sees one
// freed, or a quarter of the TTL (a slot whose holder died expires
// without a trace in the watch).
func (l *Limits) take(ctx context.Context, prefix string, n int) (*slot, error) {
	set := strings.TrimSuffix(prefix, ".")
	var (
		yieldUntil time.Time // a turn waits at most yieldFor for another replica's waiting turn
		wanted     uint64    // the revision of this replica's "w." key, once written
		wantedAt   time.Time
	)
	defer func() {
		if wanted != 0 {
			l.unwant(set, wanted)
		}
	}()
	for {
		l.mu.Lock()
		other := l.wantedElsewhere(set)
		if other && yieldUntil.IsZero() {
			yieldUntil = time.Now().Add(yieldFor)
		}
		if other && time.Now().Before(yieldUntil) {
			// Another replica's turn waits for this set: it goes first
			// (the slot it waits for is freed, not kept, when its
			// holder's turn ends), unless it has not taken it within
			// yieldFor.
			freed := l.freed
			l.mu.Unlock()
			if err := waitFreed(ctx, freed, time.Until(yieldUntil)); err != nil {
				return nil, err
			}
			continue
		}
		if s := l.reuse(prefix, n); s != nil {
			l.mu.Unlock()
			return s, nil
		}
		freed := l.freed
		l.mu.Unlock()
		start := rand.IntN(n)
		for i := range n {
			key := prefix + strconv.Itoa((start+i)%n)
			rev, ok, err := l.claim(ctx, key)
			if err != nil {
				return nil, err
			}
			if ok {
				s := &slot{key: key, prefix: prefix, index: (start + i) % n, rev: rev}
				l.mu.Lock()
				l.held[s] = struct{}{}
				l.mu.Unlock()
				return s, nil
			}
		}
		// Every slot of the set is taken: this replica waits, and says so
		// (again every TTL/4, the key's MaxAge being the TTL).
		if time.Since(wantedAt) >= l.ttl/4 {
			if rev, err := l.want(ctx, set); err == nil {
				wanted, wantedAt = rev, time.Now()
			}
		}
		if err := waitFreed(ctx, freed, l.ttl/4); err != nil {
			return nil, err
		}
	}
}

// waitFreed waits until freed is closed (a slot was seen freed) or d has
// passed; it returns ctx's error if ctx ends first.
func waitFreed(ctx context.Context, freed <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-freed:
	case <-t.C:
	}
	return nil
}

// claim tries to take key: with a compare-and-set on the revision of its
// release when it was seen free, else by creating it, unless it was seen
// held within the TTL.
func (l *Limits) claim(ctx context.Context, key string) (uint64, bool, error) {
	l.mu.Lock()
	st, known := l.view[key]
	l.mu.Unlock()
	me := []byte(l.replica)
	octx, cancel := context.WithTimeout(ctx, l.opTimeout())
	defer cancel()
	if known && st.free {
		rev, err := l.slots.Update(octx, key, me, st.rev)
		if err == nil {
			l.saw(key, seen{rev: rev, at: time.Now()})
			return rev, true, nil
		}
		if ctx.Err() != nil {
			return 0, false, ctx.Err()
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return 0, false, fmt.Errorf("cluster: take a turn slot: %w", err)
		}
		// Taken since, or expired: creating it tells which.
	} else if known && time.Since(st.at) < l.ttl {
		return 0, false, nil // held, and renewed lately
	}
	rev, err := l.slots.Create(octx, key, me)
	if err == nil {
		l.saw(key, seen{rev: rev, at: time.Now()})
		return rev, true, nil
	}
	if ctx.Err() != nil {
		return 0, false, ctx.Err()
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("cluster: take a turn slot: %w", err)
}

// reuse returns a kept slot of prefix numbered below n, the newest, or
// nil. l.mu must be held.
func (l *Limits) reuse(prefix string, n int) *slot {
	ss := l.kept[prefix]
	for i := len(ss) - 1; i >= 0; i-- {
		s := ss[i]
		_, held := l.held[s] // not held: expired before a renewal
		if !held || s.index < n {
			ss = append(ss[:i:i], ss[i+1:]...)
			if held {
				l.setKept(prefix, ss)
				return s
			}
		}
	}
	l.setKept(prefix, ss)
	return nil
}

func (l *Limits) setKept(prefix string, ss []*slot) {
	if len(ss) == 0 {
		delete(l.kept, prefix)
		return
	}
	l.kept[prefix] = ss
}

// release ends a turn's hold of s: it is kept for this replica's next
// turn of the same set for l.keep (still held and renewed), then freed;
// freed at once when another replica's turn waits for the set.
func (l *Limits) release(s *slot) {
	l.mu.Lock()
	if _, held := l.held[s]; !held {
		l.mu.Unlock()
		return // lost (expired before a renewal)
	}
	if l.wantedElsewhere(strings.TrimSuffix(s.prefix, ".")) {
		l.mu.Unlock()
		l.free(s)
		return
	}
	defer l.mu.Unlock()
	if l.kept == nil {
		l.kept = map[string][]*slot{}
	}
	s.keptAt = time.Now()
	l.kept[s.prefix] = append(l.kept[s.prefix], s)
}

// free marks a slot free (its value ""), if it is still the one this
// replica wrote: the next taker needs one compare-and-set.
func (l *Limits) free(s *slot) {
	l.forget(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return
	}
	s.gone = true
	ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout())
	defer cancel()
	rev, err := l.slots.Update(ctx, s.key, nil, s.rev)
	switch {
	case err == nil:
		l.saw(s.key, seen{rev: rev, free: true, at: time.Now()})
	case errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err):
		// Expired, and perhaps taken since: not ours to free.
	default:
		l.log.Warn().Err(err).Str("slot", s.key).Msg("cluster: free a turn slot; it frees itself after the lease TTL")
	}
}

// yieldFor bounds how long a turn lets another replica's waiting turn
// take a set's slot first: the holder frees it as its turn ends, and the
// waiter hears of that through its watch and takes it with one write,
// milliseconds on a working NATS. A waiter that has not taken it by then
// (it stopped, or its key is stale) delays the turn no longer.
const yieldFor = 100 * time.Millisecond

// wantKey is the key saying that replica waits for a slot of set.
func wantKey(set, replica string) string { return "w." + set + "." + replica }

// parseWantKey splits a "w.<set>.<replica>" key.
func parseWantKey(key string) (set, replica string, ok bool) {
	rest, ok := strings.CutPrefix(key, "w.")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// want writes this replica's key for set: one of its turns waits for a
// slot of it.
func (l *Limits) want(ctx context.Context, set string) (uint64, error) {
	octx, cancel := context.WithTimeout(ctx, l.opTimeout())
	defer cancel()
	rev, err := l.slots.Put(octx, wantKey(set, l.replica), []byte{1})
	if err == nil {
		l.sawWant(set, l.replica, time.Now(), false)
	}
	return rev, err
}

// unwant deletes this replica's key for set, if it is still the one
// written at rev (another turn of this replica may wait for the set, and
// have written it since).
func (l *Limits) unwant(set string, rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout())
	defer cancel()
	_ = l.slots.Delete(ctx, wantKey(set, l.replica), jetstream.LastRevision(rev))
}

// sawWant records a "w." key written (or deleted, gone) at at; a deleted
// one wakes the turns that let its replica go first.
func (l *Limits) sawWant(set, replica string, at time.Time, gone bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gone {
		if m := l.wants[set]; m != nil {
			delete(m, replica)
			if len(m) == 0 {
				delete(l.wants, set)
			}
		}
		close(l.freed)
		l.freed = make(chan struct{})
		return
	}
	m := l.wants[set]
	if m == nil {
		m = map[string]time.Time{}
		l.wants[set] = m
	}
	m[replica] = at
	if replica == l.replica {
		return
	}
	// Another replica's turn waits for a slot of set: the ones kept here
	// are freed now, not at the sweep.
	if ss := l.kept[set+"."]; len(ss) > 0 {
		delete(l.kept, set+".")
		go func() {
			for _, s := range ss {
				l.free(s)
			}
		}()
	}
}

// wantedElsewhere reports whether another replica's turn waits for a slot
// of set: its key was written within half the TTL (it is written again
// every TTL/4 while the turn waits). l.mu must be held.
func (l *Limits) wantedElsewhere(set string) bool {
	for replica, at := range l.wants[set] {
		if replica != l.replica && time.Since(at) < l.ttl/2 {
			return true
		}
	}
	return false
}

// Allow takes a token from p's bucket of perMinute turns a minute
// (agent.Limiter), with a compare-and-set that is retried when another
// replica changed the bucket meanwhile. The bucket as this replica last
// wrote it is remembered for a while, so that the next turn of p here (a
// person's sessions often run at one replica) takes a token with that one
// write.
func (l *Limits) Allow(ctx context.Context, p agent.Principal, perMinute int) (bool, error) {
	if perMinute <= 0 {
		return true, nil
	}
	if l.down() {
		return false, errLimitsDown
	}
	return retry(ctx, l, func() (bool, error) { return l.allow(ctx, p, perMinute) })
}

// errRateContended: other replicas changed a person's bucket under every
// try (the bucket answers; it is not down).
var errRateContended = errors.New("cluster: turn rate: the bucket changed under every try")

func (l *Limits) allow(ctx context.Context, p agent.Principal, perMinute int) (bool, error) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	key := "r." + principalHash(p)
	rate := float64(perMinute)
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout())
	defer cancel()
	for try := range 20 {
		t := now()
		var (
			tokens float64
			last   time.Time
			rev    uint64
			cached bool
		)
		if try == 0 {
			tokens, last, rev, cached = l.wroteRate(key)
		}
		if !cached {
			e, err := l.rates.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				// A full bucket: take one.
				rev, err := l.rates.Create(ctx, key, bucketValue(rate-1, t))
				if err == nil {
					l.rememberRate(key, rate-1, t, rev)
					return true, nil
				}
				if errors.Is(err, jetstream.ErrKeyExists) {
					continue // another replica created it first
				}
				return false, fmt.Errorf("cluster: turn rate: %w", err)
			}
			if err != nil {
				return false, fmt.Errorf("cluster: turn rate: %w", err)
			}
			var ok bool
			if tokens, last, ok = parseBucket(e.Value()); !ok {
				tokens, last = rate, t // a value this version cannot read counts as full
			}
			rev = e.Revision()
		}
		if d := t.Sub(last); d > 0 {
			tokens = min(rate, tokens+d.Minutes()*rate)
		} else {
			// Another replica's clock runs ahead of ours: count from its time.
			t = last
		}
		if tokens < 1 {
			if cached {
				continue // what the bucket holds now decides
			}
			return false, nil
		}
		rev, err := l.rates.Update(ctx, key, bucketValue(tokens-1, t), rev)
		if err == nil {
			l.rememberRate(key, tokens-1, t, rev)
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return false, fmt.Errorf("cluster: turn rate: %w", err)
		}
		l.forgetRate(key)
	}
	return false, errRateContended
}

// rateWrite is a rate bucket as this replica last wrote it.
type rateWrite struct {
	tokens float64
	last   time.Time // the bucket's time
	rev    uint64
	at     time.Time // when it was written (the key expires a minute after)
}

// rateMemory is how long a bucket this replica wrote is used without
// reading it: less than the bucket's MaxAge, after which the key is gone.
const rateMemory = 50 * time.Second

func (l *Limits) wroteRate(key string) (tokens float64, last time.Time, rev uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.rateWrites[key]
	if !ok || time.Since(w.at) >= rateMemory {
		return 0, time.Time{}, 0, false
	}
	return w.tokens, w.last, w.rev, true
}

func (l *Limits) rememberRate(key string, tokens float64, last time.Time, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rateWrites == nil {
		l.rateWrites = map[string]rateWrite{}
	}
	if time.Since(l.ratesSwept) >= rateMemory {
		// Forget the old ones at most once per rateMemory: constant cost
		// per turn, a map as large as the recent senders.
		for k, w := range l.rateWrites {
			if time.Since(w.at) >= rateMemory {
				delete(l.rateWrites, k)
			}
		}
		l.ratesSwept = time.Now()
	}
	l.rateWrites[key] = rateWrite{tokens: tokens, last: last, rev: rev, at: time.Now()}
}

func (l *Limits) forgetRate(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.rateWrites, key)
}

func bucketValue(tokens float64, t time.Time) []byte {
	return []byte(strconv.FormatFloat(tokens, 'g', -1, 64) + " " + strconv.FormatInt(t.UnixNano(), 10))
}

func parseBucket(v []byte) (tokens float64, last time.Time, ok bool) {
	a, b, found := strings.Cut(string(v), " ")
	if !found {
		return 0, time.Time{}, false
	}
	tokens, err1 := strconv.ParseFloat(a, 64)
	ns, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, false
	}
	return tokens, time.Unix(0, ns), true
}
