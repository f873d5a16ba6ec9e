package store

import "testing"

// QueryRow runs q on the writer connection (so it sees everything
// committed) and scans its one row into dest. Tests use it to look at
// columns the public API does not return.
func QueryRow(tb testing.TB, db *DB, q string, args []any, dest ...any) {
	tb.Helper()
	if err := db.w.QueryRow(q, args...).Scan(dest...); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

// CountRows counts the rows of every table the API writes.
func CountRows(tb testing.TB, db *DB) map[string]int {
	tb.Helper()
	counts := map[string]int{}
	for _, table := range []string{"principals", "sessions", "inbound", "turns", "messages",
		"turn_steps", "tool_calls", "outbound", "approvals", "followed_threads", "channel_cursors", "schema_migrations"} {
		var n int
		QueryRow(tb, db, "SELECT count(*) FROM "+table, nil, &n)
		counts[table] = n
	}
	return counts
}

// CheckpointerConnections is the number of connections the checkpointer
// has open.
func CheckpointerConnections(db *DB) int { return db.ck.conn.Stats().OpenConnections }
