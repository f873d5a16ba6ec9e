package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxBatch bounds how many write transactions share one commit.
const maxBatch = 256

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// txReq is one write transaction waiting for the writer.
type txReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *wtx) error
	done chan error
}

// wtx is the transaction a write runs in. It binds each prepared statement
// to the transaction once, for all the writes of a batch.
type wtx struct {
	*sql.Tx
	bound map[*sql.Stmt]*sql.Stmt
}

func newWtx(tx *sql.Tx) *wtx { return &wtx{Tx: tx, bound: make(map[*sql.Stmt]*sql.Stmt)} }

// StmtContext returns st bound to the transaction, binding it on first use.
func (t *wtx) StmtContext(ctx context.Context, st *sql.Stmt) *sql.Stmt {
	b := t.bound[st]
	if b == nil {
		b = t.Tx.StmtContext(ctx, st)
		t.bound[st] = b
	}
	return b
}

// writer runs every write transaction on the single writer connection, and
// commits the transactions that arrive together as one SQLite transaction
// (group commit): each runs inside its own SAVEPOINT, so it still succeeds
// or fails on its own, but the commit cost is shared. A caller returns only
// after the commit that contains its work.
type writer struct {
	mu     sync.RWMutex // guards closed; held for reading while sending
	closed bool
	reqs   chan *txReq
	done   chan struct{}
}

func (db *DB) startWriter() {
	db.wr = &writer{reqs: make(chan *txReq, maxBatch), done: make(chan struct{})}
	go db.writeLoop()
}

func (db *DB) stopWriter() {
	if db.wr == nil {
		return
	}
	db.wr.mu.Lock()
	if !db.wr.closed {
		db.wr.closed = true
		close(db.wr.reqs)
	}
	db.wr.mu.Unlock()
	<-db.wr.done
}

// inTx runs fn in a write transaction and returns once it is committed (or
// rolled back, when fn fails). fn must do all its work through tx.
//
// fn receives a context that is never cancelled: once the writer takes a
// transaction it runs to its end (SQLite statements watching a cancellable
// context cost a goroutine each, on the one writer every turn waits for).
func (db *DB) inTx(ctx context.Context, fn func(ctx context.Context, tx *wtx) error) error {
	r := &txReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	db.wr.mu.RLock()
	if db.wr.closed {
		db.wr.mu.RUnlock()
		return ErrClosed
	}
	select {
	case db.wr.reqs <- r:
	case <-ctx.Done():
		db.wr.mu.RUnlock()
		return ctx.Err()
	}
	db.wr.mu.RUnlock()
	return <-r.done
}

func (db *DB) writeLoop() {
	defer close(db.wr.done)
	batch := make([]*txReq, 0, maxBatch)
	for r := range db.wr.reqs {
		batch = append(batch[:0], r)
	more:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-db.wr.reqs:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		db.runBatch(batch)
	}
}

func (db *DB) runBatch(batch []*txReq) {
	if len(batch) == 1 {
		r := batch[0]
		r.done <- db.runOne(r)
		return
	}
	errs := make([]error, len(batch))
	stx, err := db.w.BeginTx(context.Background(), nil)
	if err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	tx := newWtx(stx)
	savepoint, rollbackTo, release := stx.Stmt(db.ws.savepoint), stx.Stmt(db.ws.rollbackTo), stx.Stmt(db.ws.release)
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if _, err := savepoint.Exec(); err != nil {
			errs[i] = err
			continue
		}
		if err := r.fn(context.WithoutCancel(r.ctx), tx); err != nil {
			errs[i] = err
			_, _ = rollbackTo.Exec()
		}
		if _, err := release.Exec(); err != nil && errs[i] == nil {
			errs[i] = err
		}
	}
	err = stx.Commit()
	if err == nil {
		db.ck.committed()
	}
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// runOne runs a lone transaction without savepoints.
func (db *DB) runOne(r *txReq) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	tx, err := db.w.BeginTx(context.Background(), nil)
	if err != nil {
		return err
	}
	if err := r.fn(context.WithoutCancel(r.ctx), newWtx(tx)); err != nil {
		_ = tx.Rollback() // the error that matters is fn's
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.ck.committed()
	return nil
}

// exec runs one statement as a write transaction of its own.
func (db *DB) exec(ctx context.Context, st *sql.Stmt, args ...any) (sql.Result, error) {
	var res sql.Result
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var err error
		res, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		return err
	})
	return res, err
}

// execSQL runs one SQL statement as a write transaction of its own.
func (db *DB) execSQL(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var err error
		res, err = tx.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
}
