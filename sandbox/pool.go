package sandbox

import (
	"context"
	"sync"
	"time"

	"github.com/talonhq/talon/agent"
)

// pool keeps up to size pre-initialised instances of one tool. One filler
// goroutine, owned by the Runtime, makes an instance for each token in
// need; each instance is taken once and closed after its call, and its
// token is given back when the call has returned, so that making its
// replacement does not compete with the call for the CPU.
//
// A new pool holds its tokens back (held) until a first call of the tool
// has returned: a tool's first call after a start, which the pool cannot
// serve yet, then does not share the CPU with the pool's filling, nor
// does the next tool's first call with this one's (they raced before,
// p99 up to 97 ms for three first calls in a row). The warming
// (WarmAfter) makes one instance of each tool with one of these tokens,
// so that the first call finds it ready (see Runtime.warmPool).
//
// Pooled instances are charged to the quota like running ones, but never
// ahead of a call: the filler makes one only when the budget has room and
// no call waits, and a call that needs memory evicts idle ones first
// (Runtime.evict), after the linear memories kept for reuse (slots). The
// filler makes its instances on those kept memories when there are any,
// so a refill costs no page faults. The token of an evicted instance is kept aside and
// given back when a call of the tool that found the pool empty has
// returned, so an evicted pool refills on demand, not at once. After the
// tool's last call, its instances are closed once the pool has been idle
// for poolIdle.
type pool struct {
	ch chan *instance // ready instances
	// need is the instances to make: len(ch) + len(need) + evicted + held
	// + the instances being made or in use <= size.
	need chan struct{}

	mu      sync.Mutex
	evicted int       // tokens of evicted instances, not yet given back; guarded by mu
	held    int       // tokens held until a first call has returned; guarded by mu
	last    time.Time // when a call last took, or missed, an instance; guarded by mu
}

// take returns a pooled instance of t if one is ready, else a fresh one
// made for p (waiting for memory if need be). Call done when the call has
// returned.
//
// While the call waits in the memory queue, its clock b is stopped and
// the wait is bounded by wait, the caller's context (the turn's deadline),
// not by the tool's deadline: like an approval, the wait is none of the
// tool's own work, and under a burst of calls the queue is longer than a
// tool's few seconds (1,000 users calling at once failed hundreds of
// calls that only waited their turn).
func (r *Runtime) take(ctx context.Context, t *loaded, p agent.Principal, wait context.Context, b *budget) (inst *instance, done func(), err error) {
	done = func() {}
	if pl := r.pool(t); pl != nil {
		select {
		case inst := <-pl.ch:
			n := pl.touch(false)
			return inst, func() { pl.give(n + 1) }, nil
		default:
			r.poolMisses.Add(1)
			n := pl.touch(true)
			done = func() { pl.give(n) }
		}
	}
	inst, err = r.instantiate(ctx, t, func(n uint64) error {
		if r.quota.tryAcquire(n) {
			return nil
		}
		if !b.pause() {
			return r.quota.acquire(ctx, p, n) // the budget is spent: fails at once
		}
		defer b.resume()
		return r.quota.acquire(wait, p, n)
	})
	if err != nil {
		done() // the tokens are given back all the same
		return nil, func() {}, err
	}
	return inst, done, err
}

// touch records a call, and returns the tokens to give back once it has
// returned: the held ones, and on a miss the evicted ones.
func (p *pool) touch(missed bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = time.Now()
	n := p.held
	p.held = 0
	if missed {
		n += p.evicted
		p.evicted = 0
	}
	return n
}

// give asks the filler for n more instances.
func (p *pool) give(n int) {
	for range n {
		p.refill()
	}
}

// refill asks the filler for one more instance.
func (p *pool) refill() {
	select {
	case p.need <- struct{}{}:
	default:
	}
}

// pool returns t's pool, creating it (every token held, see pool) and
// starting its filler on first use. It returns nil when pooling is off or
// the runtime is closed.
func (r *Runtime) pool(t *loaded) *pool {
	if r.poolSize <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	name := t.manifest.Name
	if p, ok := r.pools[name]; ok {
		return p
	}
	p := &pool{ch: make(chan *instance, r.poolSize), need: make(chan struct{}, r.poolSize), held: r.poolSize, last: time.Now()}
	r.pools[name] = p
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.fill(t, p)
	}()
	return p
}

// fill makes an instance for each token of p.need until the runtime
// closes, when the quota has room for it. If an instance cannot be made,
// it removes p and returns: calls then instantiate directly (and see the
// error), and the next call starts a new filler. It closes p's instances
// once the tool has not been called for r.poolIdle.
func (r *Runtime) fill(t *loaded, p *pool) {
	var idle <-chan time.Time
	if r.poolIdle > 0 {
		tick := time.NewTicker(max(r.poolIdle/4, 10*time.Millisecond))
		defer tick.Stop()
		idle = tick.C
	}
	for {
		select {
		case <-p.need:
		case <-idle:
			r.slots.drop(0, time.Now().Add(-r.poolIdle))
			p.mu.Lock()
			expired := time.Since(p.last) >= r.poolIdle
			p.mu.Unlock()
			if expired {
				r.evictPool(p, ^uint64(0))
			}
			continue
		case <-r.ctx.Done():
			return
		}
		inst, err := r.fillOne(t)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			if r.pools[t.manifest.Name] == p {
				delete(r.pools, t.manifest.Name)
			}
			r.mu.Unlock()
			p.drain(context.Background())
			return
		}
		select {
		case p.ch <- inst:
		case <-r.ctx.Done():
			inst.mod.Close(context.Background())
			return
		}
	}
}

// instantiateIfRoom makes an instance of t for a pool, charged to the
// quota only if it has room now (errQuotaFull otherwise: it waits for
// none). _initialize is guest code: it is bound by the tool's deadline.
func (r *Runtime) instantiateIfRoom(t *loaded) (*instance, error) {
	ctx, cancel := context.WithTimeout(r.ctx, t.manifest.Limits.Deadline)
	defer cancel()
	return r.instantiate(ctx, t, func(n uint64) error {
		if !r.quota.tryAcquire(n) {
			return errQuotaFull
		}
		return nil
	})
}

// fillOne makes one instance of t for a pool, once the quota has room for
// it and no call waits for memory.
func (r *Runtime) fillOne(t *loaded) (*instance, error) {
	for {
		freed := r.quota.released()
		inst, err := r.instantiateIfRoom(t)
		if err != errQuotaFull {
			return inst, err
		}
		select {
		case <-freed:
		case <-r.ctx.Done():
			return nil, errClosed
		}
	}
}

// evict gives back the kept linear memories, then closes idle pooled
// instances, of any tool, until need bytes are given back to the quota or
// nothing idle is left.
func (r *Runtime) evict(need uint64) {
	need -= min(need, r.slots.drop(need, time.Time{}))
	if need == 0 {
		return
	}
	r.mu.Lock()
	pools := make([]*pool, 0, len(r.pools))
	for _, p := range r.pools {
		pools = append(pools, p)
	}
	r.mu.Unlock()
	for _, p := range pools {
		if need == 0 {
			return
		}
		need -= min(need, r.evictPool(p, need))
	}
}

// evictPool closes p's ready instances until need bytes are freed, keeps
// their tokens aside (see pool), and returns the bytes freed.
func (r *Runtime) evictPool(p *pool, need uint64) uint64 {
	var freed uint64
	for freed < need {
		select {
		case inst := <-p.ch:
			freed += inst.mem.charged.Load()
			inst.mod.Close(context.Background())
			p.mu.Lock()
			p.evicted++
			p.mu.Unlock()
		default:
			return freed
		}
	}
	return freed
}

// drain closes the instances left in p. Only after the filler stopped.
func (p *pool) drain(ctx context.Context) {
	for {
		select {
		case inst := <-p.ch:
			inst.mod.Close(ctx)
		default:
			return
		}
	}
}

// warmPool makes one instance of t for its first call, with one of the
// pool's held tokens, unless t's pool already exists (the tool was called)
// or pooling is off. It tries once: when the budget has no room, or a call
// waits for memory, it makes none and the token stays held. The instance
// is charged to the quota, closed after poolIdle if no call takes it, and
// evicted like any pooled one when a call needs the memory.
func (r *Runtime) warmPool(t *loaded) {
	if r.poolSize <= 0 {
		return
	}
	r.mu.Lock()
	_, exists := r.pools[t.manifest.Name]
	r.mu.Unlock()
	if exists {
		return
	}
	p := r.pool(t)
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.held == 0 { // a call came meanwhile
		p.mu.Unlock()
		return
	}
	p.held--
	p.mu.Unlock()
	inst, err := r.instantiateIfRoom(t)
	if err != nil {
		p.mu.Lock()
		p.held++
		p.mu.Unlock()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed && r.pools[t.manifest.Name] != p { // its filler failed and dropped it
		inst.mod.Close(context.Background())
		return
	}
	p.ch <- inst // room: the token was held, so len(p.ch) < size; Close drains it
}
