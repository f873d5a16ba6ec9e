package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Group commit. A turn's writes that must be durable before the turn goes
// on (the message accepted, the turn started, the reply in the outbox, the
// delivered mark) each wait for a commit, which waits for the WAL to reach
// the disk. Concurrent sessions' writes are therefore sent together, as
// one transaction in one or two round trips, and share that commit: each
// caller still returns only after its writes are durable, so every
// guarantee of a write on its own holds, but a busy replica pays one flush
// and a few round trips for many of them instead of one each.
//
// There is no committer goroutine and no added delay: a caller whose
// write finds fewer than maxGroups groups in flight (one per connection of
// the pool) sends the queued writes (its own among them) at once; the
// others wait for a group to end and then do the same, so writes queue
// only while every connection is busy with earlier ones, and a group holds
// whatever queued meanwhile.

// maxGroup bounds the writes of one group (its statements, its locks).
const maxGroup = 64

// groupTimeout bounds a group's transaction; its writers' own contexts
// bound only their wait to join one.
const groupTimeout = 30 * time.Second

// lazyCommit makes the transaction it is sent in commit without waiting
// for its WAL to reach the disk (synchronous_commit off, for this
// transaction only; set_config rather than SET LOCAL, as it also holds in
// the implicit transaction of a batch sent without BEGIN). It is for the writes a crash of the database server
// may lose without losing anything accepted: a turn's start, whose turn
// then starts again (the message is still queued). A later commit that
// waits for the disk, the turn's reply among them, flushes the WAL up to
// itself, so the start is durable before anything the turn sent out
// is; and the change is seen by every other transaction at once, as any
// commit's.
const lazyCommit = `SELECT set_config('synchronous_commit', 'off', true)`

// errGroupAbort is returned by a write's then to make its group roll back;
// every write of the group is then done on its own.
var errGroupAbort = errors.New("postgres: group aborted")

// groupWrite is one caller's writes (or reads, in a grouper of reads),
// run with others' in a group or on its own. first and then record their results in the caller's variables;
// alone must set all of them again, as the group's may be discarded.
type groupWrite struct {
	ctx context.Context
	// first queues the first statements on b.
	first func(b *pgx.Batch)
	// then, if not nil, is called when the first statements of the group
	// have run, and queues the rest on b; errGroupAbort rolls the group
	// back.
	then func(b *pgx.Batch) error
	// alone does the same writes on their own (one job: it is not worth a
	// transaction, or its group failed).
	alone func(ctx context.Context) error
	// lazy says that the writes need not wait for the WAL's flush: a
	// group of lazy writes only commits without it (lazyCommit).
	lazy bool

	queued, done bool // guarded by the grouper's mu
	err          error
}

// groupShare is the bound on groups in flight that a store's groupers
// share, and the lock that guards them all: one group per connection of
// the pool, whether it holds writes or reads. With a bound each, reads
// and writes together could hold twice as many groups as connections, and
// a group sent while every connection was busy would wait in the pool
// instead of collecting the writes that queue meanwhile: three replicas
// on two cores sent 2–3 times more, smaller groups. With one shared
// bound they ran 976 → 1,023 turns/s (medians of 6 rounds, 4 December;
// docs/scale.md).
type groupShare struct {
	mu        sync.Mutex
	maxGroups int
	running   int           // groups in flight; guarded by mu
	ended     chan struct{} // closed when a group ends; guarded by mu
}

func newGroupShare(maxGroups int) *groupShare {
	return &groupShare{maxGroups: max(1, maxGroups), ended: make(chan struct{})}
}

// grouper sends concurrent writes in groups.
type grouper struct {
	*groupShare
	pool *pgxpool.Pool
	// reads makes the groups reads: their statements are sent in one
	// round trip without a transaction of their own, and a group that
	// fails is read again one by one.
	reads bool

	queue []*groupWrite // guarded by mu

	// groups and grouped count the groups of two writes or more sent, and
	// their writes (for tests and the bench).
	groups, grouped int64 // guarded by mu
}

// do runs w, in a group with the writes that queue meanwhile when there
// are any. It returns w's error once w's transaction has ended. A caller
// whose ctx ends while w waits to be sent returns ctx's error, w not sent;
// once sent, it waits for the outcome.
func (g *grouper) do(w *groupWrite) error {
	g.mu.Lock()
	w.queued = true
	g.queue = append(g.queue, w)
	for {
		if w.done {
			g.mu.Unlock()
			return w.err
		}
		if w.queued && g.running < g.maxGroups {
			n := min(len(g.queue), maxGroup)
			ws := g.queue[:n:n]
			g.queue = g.queue[n:]
			for _, x := range ws {
				x.queued = false
			}
			g.running++
			if len(ws) > 1 {
				g.groups++
				g.grouped += int64(len(ws))
			}
			g.mu.Unlock()
			g.run(w.ctx, ws)
			g.mu.Lock()
			g.running--
			close(g.ended)
			g.ended = make(chan struct{})
			continue
		}
		ended := g.ended
		g.mu.Unlock()
		select {
		case <-ended:
		case <-w.ctx.Done():
			g.mu.Lock()
			if w.queued {
				for i, x := range g.queue {
					if x == w {
						g.queue = append(g.queue[:i:i], g.queue[i+1:]...)
						break
					}
				}
				w.queued = false
				g.mu.Unlock()
				return w.ctx.Err()
			}
			// Sent: its outcome comes with the group's end.
			for !w.done {
				ended := g.ended
				g.mu.Unlock()
				<-ended
				g.mu.Lock()
			}
			g.mu.Unlock()
			return w.err
		}
		g.mu.Lock()
	}
}

// run sends ws and records each one's outcome (under g.mu).
func (g *grouper) run(ctx context.Context, ws []*groupWrite) {
	errs := make([]error, len(ws))
	if len(ws) == 1 {
		errs[0] = ws[0].alone(ws[0].ctx)
	} else {
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupTimeout)
		err := g.send(gctx, ws)
		cancel()
		for i, w := range ws {
			errs[i] = err
			if errors.Is(err, errGroupAbort) {
				// Nothing of the group was written: each on its own.
				errs[i] = w.alone(w.ctx)
			}
		}
	}
	g.mu.Lock()
	for i, w := range ws {
		w.err, w.done = errs[i], true
	}
	g.mu.Unlock()
}

// send runs ws in one transaction: BEGIN and their first statements in one
// round trip, then the rest and COMMIT in another (in the first when no
// write has more). It returns errGroupAbort when the transaction rolled
// back (a statement failed, or a write's then asked for it); any other
// error leaves its outcome unknown, as a failed commit on its own does.
func (g *grouper) send(ctx context.Context, ws []*groupWrite) error {
	c, err := g.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection left in a transaction (a ROLLBACK that failed) is
	// closed by the pool on release, not reused.
	defer c.Release()
	if g.reads {
		b := &pgx.Batch{}
		for _, w := range ws {
			w.first(b)
		}
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			return errGroupAbort
		}
		return nil
	}
	rollback := func() error {
		_, _ = c.Exec(ctx, "ROLLBACK")
		return errGroupAbort
	}
	twoTrips := false
	for _, w := range ws {
		twoTrips = twoTrips || w.then != nil
	}
	lazy := true
	for _, w := range ws {
		lazy = lazy && w.lazy
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if lazy {
		b.Queue(lazyCommit)
	}
	for _, w := range ws {
		w.first(b)
	}
	if !twoTrips {
		b.Queue("COMMIT")
		return endBatch(c.SendBatch(ctx, b).Close(), rollback)
	}
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		return rollback()
	}
	b = &pgx.Batch{}
	for _, w := range ws {
		if w.then == nil {
			continue
		}
		if err := w.then(b); err != nil {
			return rollback()
		}
	}
	b.Queue("COMMIT")
	return endBatch(c.SendBatch(ctx, b).Close(), rollback)
}

// endBatch is the outcome of a batch that ends with COMMIT: a statement
// the server refused means it skipped the rest, COMMIT included, and the
// transaction is rolled back; another error (the connection lost) leaves
// the outcome unknown.
func endBatch(err error, rollback func() error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return rollback()
	}
	return err
}

// GroupStats returns how many groups of two writes or more were sent
// together (group commit) and the writes they held, since Open.
func (db *DB) GroupStats() (groups, writes int64) {
	db.group.mu.Lock()
	defer db.group.mu.Unlock()
	return db.group.groups, db.group.grouped
}
