package sandbox

import (
	"context"
)

// pool keeps up to size pre-initialised instances of one tool. One filler
// goroutine, owned by the Runtime, makes an instance for each token in
// need; each instance is taken once and closed after its call, and its
// token is given back when the call has returned, so that making its
// replacement does not compete with the call for the CPU.
type pool struct {
	ch   chan *instance // ready instances
	need chan struct{}  // instances to make; len(ch) + len(need) <= size
}

// take returns a pooled instance of t if one is ready, else a fresh one.
// Call done when the call has returned.
func (r *Runtime) take(ctx context.Context, t *loaded) (inst *instance, done func(), err error) {
	if p := r.pool(t); p != nil {
		select {
		case inst := <-p.ch:
			return inst, p.refill, nil
		default:
		}
	}
	inst, err = r.instantiate(ctx, t)
	return inst, func() {}, err
}

// refill asks the filler for one more instance.
func (p *pool) refill() {
	select {
	case p.need <- struct{}{}:
	default:
	}
}

// pool returns t's pool, creating it and starting its filler on first use.
// It returns nil when pooling is off or the runtime is closed.
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
	p := &pool{ch: make(chan *instance, r.poolSize), need: make(chan struct{}, r.poolSize)}
	for range r.poolSize {
		p.need <- struct{}{}
	}
	r.pools[name] = p
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.fill(t, p)
	}()
	return p
}

// fill makes an instance for each token of p.need until the runtime
// closes. If an instance cannot be made, it removes p and returns: calls
// then instantiate directly (and see the error), and the next call starts
// a new filler.
func (r *Runtime) fill(t *loaded, p *pool) {
	for {
		select {
		case <-p.need:
		case <-r.ctx.Done():
			return
		}
		// _initialize is guest code: bound it by the tool's deadline.
		ctx, cancel := context.WithTimeout(r.ctx, t.manifest.Limits.Deadline)
		inst, err := r.instantiate(ctx, t)
		cancel()
		if err != nil {
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
