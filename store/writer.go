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
	fn   func(ctx context.Context, tx *sql.Tx) error
	done chan error
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
func (db *DB) inTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
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
	tx, err := db.w.BeginTx(context.Background(), nil)
	if err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if _, err := tx.Stmt(db.ws.savepoint).Exec(); err != nil {
			errs[i] = err
			continue
		}
		if err := r.fn(context.WithoutCancel(r.ctx), tx); err != nil {
			errs[i] = err
			_, _ = tx.Stmt(db.ws.rollbackTo).Exec()
		}
		if _, err := tx.Stmt(db.ws.release).Exec(); err != nil && errs[i] == nil {
			errs[i] = err
		}
	}
	if err := tx.Commit(); err != nil {
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
	if err := r.fn(context.WithoutCancel(r.ctx), tx); err != nil {
		_ = tx.Rollback() // the error that matters is fn's
		return err
	}
	return tx.Commit()
}

// exec runs one statement as a write transaction of its own.
func (db *DB) exec(ctx context.Context, st *sql.Stmt, args ...any) (sql.Result, error) {
	var res sql.Result
	err := db.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		res, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		return err
	})
	return res, err
}

// execSQL runs one SQL statement as a write transaction of its own.
func (db *DB) execSQL(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := db.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
}
