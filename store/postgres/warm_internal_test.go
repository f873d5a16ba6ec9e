package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/store/postgres/pgtest"
)

// TestWarmPreparesATurnsStatementsOnEveryConnection: after Warm every
// connection of the pool is open and has the turn's statements prepared,
// and nothing was written.
func TestWarmPreparesATurnsStatementsOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, pgtest.URL(t)+"&pool_max_conns=3")
	if err := db.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	if got := db.pool.Stat().TotalConns(); got != 3 {
		t.Errorf("%d connections open, want the pool's 3", got)
	}
	var conns []*pgxpool.Conn
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range 3 {
		c, err := db.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		rows, err := c.Query(ctx, `SELECT statement FROM pg_prepared_statements`)
		if err != nil {
			t.Fatal(err)
		}
		var prepared []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			prepared = append(prepared, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for _, q := range turnStatements {
			if !slices.Contains(prepared, q) {
				t.Errorf("connection %d has not prepared %.60q…", len(conns), q)
			}
		}
		if tx := c.Conn().PgConn().TxStatus(); tx != 'I' {
			t.Errorf("connection %d left in a transaction (%c)", len(conns), tx)
		}
	}
	var n int
	if err := conns[0].QueryRow(ctx, `SELECT (SELECT count(*) FROM fences) + (SELECT count(*) FROM inbound) + (SELECT count(*) FROM principals) + (SELECT count(*) FROM sessions)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("warming wrote %d rows", n)
	}
}

// TestWarmPreparesNothingInAnotherExecMode: a URL that asks pgx not to
// prepare statements (as behind PgBouncer in transaction mode) gets none
// from Warm either.
func TestWarmPreparesNothingInAnotherExecMode(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, pgtest.URL(t)+"&default_query_exec_mode=exec")
	if err := db.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'stmt\_%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d statements prepared by name in exec mode", n)
	}
}

// TestWarmReadiesConnectionsOpenedLater: once warmed, a pool readies the
// connections it opens later (past a connection's lifetime, after an
// outage) as it opens them; before Warm it does not.
func TestWarmReadiesConnectionsOpenedLater(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, pgtest.URL(t))
	prepared := func() int {
		t.Helper()
		var n int
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE statement = ANY($1)`, turnStatements).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	db.pool.Reset() // every connection closed; the next one is new
	if n := prepared(); n != 0 {
		t.Fatalf("a new connection before Warm has %d of the turn's statements prepared", n)
	}
	if err := db.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	db.pool.Reset()
	if n := prepared(); n != len(turnStatements) {
		t.Errorf("a connection opened after Warm has %d of the turn's %d statements prepared", n, len(turnStatements))
	}
}

// openDB opens the store at url, closed when t ends.
func openDB(t *testing.T, url string) *DB {
	t.Helper()
	db, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
