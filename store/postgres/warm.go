package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// turnStatements are the statements of a turn, in the order a turn sends
// them (Warm).
var turnStatements = []string{
	acceptInsert, principalAdd, pendingUpTo, fenceCheck, lazyCommit, sessionAdd, startQueued, recentMessages,
	stepUpsert, messageInsert, finishQueued, outboundInsert, markDelivered,
}

// Warm opens every connection of the pool and readies each for a turn:
// it prepares the turn's statements there and has the server plan each
// once, and call the fence's function, so that the first messages after a
// start do not pay for a new server process's empty caches (parsing,
// planning and the function's compilation took 2–42 ms a statement on a
// new connection, against well under 1 ms after) nor for a round trip to
// prepare each statement. Nothing is written. Each connection the pool
// opens afterwards is readied the same way as it opens. talon run calls
// it before it serves; a failure is only logged (the statements are then
// prepared on first use, as without it).
func (db *DB) Warm(ctx context.Context) error {
	n := int(db.pool.Config().MaxConns)
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	// Held together, so that each is another connection.
	for range n {
		c, err := db.pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("postgres: warm the pool: %w", err)
		}
		conns = append(conns, c)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { errs[i] = warm(ctx, c.Conn()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("postgres: warm the pool: %w", err)
		}
	}
	db.warmNew.Store(true)
	return nil
}

// warm prepares the turn's statements on c, then plans each (a generic
// plan: no parameter's value is needed) in a transaction it rolls back,
// with the fence's function called once.
func warm(ctx context.Context, c *pgx.Conn) error {
	if c.Config().DefaultQueryExecMode != pgx.QueryExecModeCacheStatement {
		// A URL that asks for another mode (default_query_exec_mode=exec
		// or simple_protocol, as behind PgBouncer in transaction mode)
		// gets no prepared statement: pgx would use them in any mode.
		return nil
	}
	names := make([]string, len(turnStatements))
	params := make([]int, len(turnStatements))
	for i, q := range turnStatements {
		// With the SQL as its name, the statement is used whenever the
		// same SQL is sent on c, in a batch too (pgx.Conn.Prepare).
		sd, err := c.Prepare(ctx, q, q)
		if err != nil {
			return err
		}
		names[i], params[i] = sd.Name, len(sd.ParamOIDs)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL plan_cache_mode = force_generic_plan")
	b.Queue(`SELECT talon_fence('', 0)`)
	for i, name := range names {
		args := ""
		if params[i] > 0 {
			args = "(" + strings.TrimSuffix(strings.Repeat("NULL, ", params[i]), ", ") + ")"
		}
		b.Queue("EXPLAIN EXECUTE " + pgx.Identifier{name}.Sanitize() + args)
	}
	err := c.SendBatch(ctx, b).Close()
	_, rerr := c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	if err != nil {
		return err
	}
	return rerr
}
