package sandbox

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/talonhq/talon/agent"
)

// quota is the Runtime's budget of sandbox memory (Config.MaxMemoryMiB).
// Every live instance is charged for its linear memory and tables at
// their size, pooled idle instances included, and the sum never exceeds
// limit: an instance is charged before its memory exists, and memory.grow
// past the charge is granted only while the budget has room.
//
// A call whose instance does not fit waits, after idle pooled instances
// were evicted to make room, in a queue served one user at a time in
// turn: the next user with a waiting call is served first, then that user
// goes to the back of the line, so one user's flood of calls delays
// another user's single call by at most one instance of each. Within a
// user, calls are served in order of arrival. A waiter at the head that
// does not fit holds the line: smaller calls behind it do not overtake it,
// so a large instance is not starved by small ones.
type quota struct {
	limit uint64
	// evict closes idle pooled instances until need more bytes are free
	// (or none is left). It is called without mu held: closing an
	// instance releases its charge.
	evict func(need uint64)

	mu      sync.Mutex
	used    uint64                           // guarded by mu
	peak    uint64                           // the highest used so far; guarded by mu
	queues  map[agent.Principal][]*memWaiter // waiting calls per user, oldest first; guarded by mu
	turn    []agent.Principal                // users with waiting calls, next served first; guarded by mu
	growers []*memWaiter                     // running instances waiting to grow, served first; guarded by mu
	waiting int                              // calls waiting, growers included; guarded by mu
	// freed is closed (and replaced) whenever memory is released, so the
	// pool fillers, which never queue, can try again. Guarded by mu.
	freed     chan struct{}
	waits     int64         // calls that had to wait, so far; guarded by mu
	waitTotal time.Duration // their time waiting; guarded by mu
	// onGrant, for tests, is called with mu held when a waiting call of p
	// is granted its memory.
	onGrant func(p agent.Principal)
}

var (
	// errQuotaFull: the quota had no room for an instance's memory, and
	// the instance could not wait (a pool's, or a memory.grow).
	errQuotaFull = errors.New("sandbox: memory budget full")
	// errQuotaTooSmall: an instance needs more than the whole budget.
	errQuotaTooSmall = errors.New("sandbox: instance larger than the memory budget")
)

// quotaWaitError is a call that waited for memory until its context
// ended.
type quotaWaitError struct{ cause error }

func (e *quotaWaitError) Error() string { return "sandbox: waited for memory: " + e.cause.Error() }
func (e *quotaWaitError) Unwrap() error { return e.cause }

// memWaiter is one call waiting for n bytes.
type memWaiter struct {
	n       uint64
	ready   chan struct{} // closed when the bytes are granted
	granted bool          // guarded by quota.mu
}

func newQuota(limit uint64) *quota {
	return &quota{limit: limit, evict: func(uint64) {}, queues: map[agent.Principal][]*memWaiter{}, freed: make(chan struct{})}
}

// acquire charges n bytes for a call of p, waiting in the queue until
// they fit or ctx ends (then it returns a *quotaWaitError with ctx's
// cause). It never waits for
// n above the whole budget: it returns errQuotaTooSmall at once.
func (q *quota) acquire(ctx context.Context, p agent.Principal, n uint64) error {
	if n > q.limit {
		return errQuotaTooSmall
	}
	if q.tryAcquire(n) {
		return nil
	}
	q.mu.Lock()
	free := q.limit - q.used
	q.mu.Unlock()
	if n > free {
		q.evict(n - free)
	}
	q.mu.Lock()
	if q.waiting == 0 && q.used+n <= q.limit {
		q.chargeLocked(n)
		q.mu.Unlock()
		return nil
	}
	w := &memWaiter{n: n, ready: make(chan struct{})}
	if len(q.queues[p]) == 0 {
		q.turn = append(q.turn, p)
	}
	q.queues[p] = append(q.queues[p], w)
	q.waiting++
	q.grantLocked() // memory may have been freed since the eviction
	q.mu.Unlock()

	granted := q.await(ctx, w)
	defer q.mu.Unlock()
	if granted {
		return nil
	}
	q.removeLocked(p, w)
	q.grantLocked() // w may have held the line
	return &quotaWaitError{cause: context.Cause(ctx)}
}

// tryAcquire charges n bytes if they fit now and nobody is waiting. The
// pool fillers use it: a pooled instance never takes memory a waiting
// call could have.
func (q *quota) tryAcquire(n uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting > 0 || q.used+n > q.limit {
		return false
	}
	q.chargeLocked(n)
	return true
}

// grow charges n more bytes for an instance that is running (its
// memory.grow), after evicting idle pooled instances if need be. If the
// budget has no room even then, it waits until ctx ends, served ahead of
// the calls waiting to start (a running call releases its memory when it
// ends; a call waiting to start holds none). It returns false when ctx
// ended first or n is above the whole budget.
func (q *quota) grow(ctx context.Context, n uint64) bool {
	if n > q.limit {
		return false
	}
	q.mu.Lock()
	if q.used+n <= q.limit {
		q.chargeLocked(n)
		q.mu.Unlock()
		return true
	}
	need := q.used + n - q.limit
	q.mu.Unlock()
	q.evict(need)
	q.mu.Lock()
	if q.used+n <= q.limit && len(q.growers) == 0 {
		q.chargeLocked(n)
		q.mu.Unlock()
		return true
	}
	w := &memWaiter{n: n, ready: make(chan struct{})}
	q.growers = append(q.growers, w)
	q.waiting++
	q.grantLocked()
	q.mu.Unlock()
	granted := q.await(ctx, w)
	defer q.mu.Unlock()
	if granted {
		return true
	}
	for i, x := range q.growers {
		if x == w {
			q.growers = append(q.growers[:i:i], q.growers[i+1:]...)
			break
		}
	}
	q.waiting--
	q.grantLocked()
	return false
}

// await waits, without q.mu, until w is granted or ctx ends, counts the
// wait, and returns with q.mu held whether w was granted (a grant racing
// with ctx's end counts: the caller then owns the bytes).
func (q *quota) await(ctx context.Context, w *memWaiter) bool {
	start := time.Now()
	select {
	case <-w.ready:
	case <-ctx.Done():
	}
	q.mu.Lock()
	q.waits++
	q.waitTotal += time.Since(start)
	return w.granted
}

// release gives back n bytes and serves the waiting calls.
func (q *quota) release(n uint64) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.used -= n
	q.grantLocked()
	close(q.freed)
	q.freed = make(chan struct{})
}

// released returns a channel closed the next time memory is released.
func (q *quota) released() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.freed
}

func (q *quota) chargeLocked(n uint64) {
	q.used += n
	q.peak = max(q.peak, q.used)
}

// grantLocked serves the instances waiting to grow, then the calls
// waiting to start, one user at a time in turn, while the one at the head
// of the line fits.
func (q *quota) grantLocked() {
	for len(q.growers) > 0 {
		w := q.growers[0]
		if q.used+w.n > q.limit {
			return
		}
		q.chargeLocked(w.n)
		w.granted = true
		close(w.ready)
		q.waiting--
		q.growers = q.growers[1:]
	}
	for len(q.turn) > 0 {
		p := q.turn[0]
		ws := q.queues[p]
		w := ws[0]
		if q.used+w.n > q.limit {
			return
		}
		q.chargeLocked(w.n)
		w.granted = true
		close(w.ready)
		if q.onGrant != nil {
			q.onGrant(p)
		}
		q.waiting--
		q.turn = q.turn[1:]
		if len(ws) > 1 {
			q.queues[p] = ws[1:]
			q.turn = append(q.turn, p)
		} else {
			delete(q.queues, p)
		}
	}
}

// removeLocked takes w, which was not granted, out of p's queue.
func (q *quota) removeLocked(p agent.Principal, w *memWaiter) {
	ws := q.queues[p]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	q.waiting--
	if len(ws) > 0 {
		q.queues[p] = ws
		return
	}
	delete(q.queues, p)
	for i, x := range q.turn {
		if x == p {
			q.turn = append(q.turn[:i:i], q.turn[i+1:]...)
			break
		}
	}
}

// quotaStats is a snapshot of q.
type quotaStats struct {
	used, peak, limit uint64
	waiting           int
	waits             int64
	waitTotal         time.Duration
}

func (q *quota) stats() quotaStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return quotaStats{used: q.used, peak: q.peak, limit: q.limit, waiting: q.waiting, waits: q.waits, waitTotal: q.waitTotal}
}
