package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/talonhq/talon/agent"
)

var _ agent.Fencer = (*DB)(nil)

// fenceLockClass is the first key of the advisory locks on fences ("talo").
const fenceLockClass = 1952541804

// AdvanceFence records token as the newest of name (agent.Fencer). It
// waits for the writes in progress under an older token (they hold the
// name's advisory lock shared), so that the caller's reads after it see
// them, and no write under an older token passes after it.
func (db *DB) AdvanceFence(ctx context.Context, name string, token uint64) error {
	if token > math.MaxInt64 {
		return fmt.Errorf("postgres: fencing token %d of %q: too large", token, name)
	}
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		var cur int64
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, fenceLockClass, name)
		b.Queue(`INSERT INTO fences (name, token) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET token = excluded.token WHERE fences.token < excluded.token`, name, int64(token))
		b.Queue(`SELECT token FROM fences WHERE name = $1`, name).QueryRow(func(row pgx.Row) error { return row.Scan(&cur) })
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if cur > int64(token) {
			return fmt.Errorf("%w: %q is at %d, not %d", agent.ErrFenced, name, cur, token)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: advance fence: %w", err)
	}
	return nil
}

// fenceCheck checks that fence $1 is not past token $2 (talon_fence), and
// holds the fence's lock shared until the transaction ends.
const fenceCheck = `SELECT talon_fence($1, $2)`

// queueFence queues on b the check of ctx's fence, when it carries one: in
// the batch's transaction (explicit, or the implicit one of a batch sent
// outside a transaction), before the writes it guards. A check of the same
// fence and token already queued on b covers them too (a group's writes
// of one partition, group.go): it passed earlier in the same transaction,
// whose lock it still holds, or failed it all.
func queueFence(ctx context.Context, b *pgx.Batch) {
	f, ok := agent.FenceOf(ctx)
	if !ok {
		return
	}
	token := int64(min(f.Token, math.MaxInt64))
	for _, q := range b.QueuedQueries {
		if q.SQL == fenceCheck && len(q.Arguments) == 2 && q.Arguments[0] == any(f.Name) && q.Arguments[1] == any(token) {
			return
		}
	}
	b.Queue(fenceCheck, f.Name, token)
}

// fenced wraps the error talon_fence raises as agent.ErrFenced.
func fenced(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "TF001" {
		return fmt.Errorf("%w: %s", agent.ErrFenced, pe.Message)
	}
	return err
}
