package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/talonhq/talon/agent"
)

var _ agent.Fencer = (*DB)(nil)

// AdvanceFence records token as the newest of name (agent.Fencer).
func (db *DB) AdvanceFence(ctx context.Context, name string, token uint64) error {
	if token > math.MaxInt64 {
		return fmt.Errorf("store: fencing token %d of %q: too large", token, name)
	}
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT token FROM fences WHERE name = ?`, name).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO fences (name, token) VALUES (?, ?)`, name, int64(token))
			return err
		case err != nil:
			return err
		case cur > int64(token):
			return fmt.Errorf("%w: %q is at %d, not %d", agent.ErrFenced, name, cur, token)
		case cur < int64(token):
			_, err = tx.ExecContext(ctx, `UPDATE fences SET token = ? WHERE name = ?`, int64(token), name)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: advance fence: %w", err)
	}
	return nil
}

// fenceOf returns the check of ctx's fence for a write transaction: nil
// when ctx carries none.
func fenceOf(ctx context.Context) func(ctx context.Context, tx *wtx) error {
	f, ok := agent.FenceOf(ctx)
	if !ok {
		return nil
	}
	return func(ctx context.Context, tx *wtx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT token FROM fences WHERE name = ?`, f.Name).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		case f.Token > math.MaxInt64 || cur > int64(f.Token):
			return fmt.Errorf("%w: %q is at %d, this write has %d", agent.ErrFenced, f.Name, cur, f.Token)
		}
		return nil
	}
}

// fencedExec runs st as a write transaction of its own, after the check of
// ctx's fence when it carries one.
func (db *DB) fencedExec(ctx context.Context, st *sql.Stmt, args ...any) (sql.Result, error) {
	check := fenceOf(ctx)
	if check == nil {
		return db.exec(ctx, st, args...)
	}
	var res sql.Result
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if err := check(ctx, tx); err != nil {
			return err
		}
		var err error
		res, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		return err
	})
	return res, err
}
