package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// reference is a foreign key that migration 0031 dropped: column of table
// names a row of parent by its id (or is NULL).
type reference struct {
	table, column, parent string
	// noun is what a parent row is, with its article, in Orphans's lines.
	noun string
}

// constraint is the name PostgreSQL gave the foreign key (migration 0001
// or 0006 made it without a name).
func (r reference) constraint() string { return r.table + "_" + r.column + "_fkey" }

// droppedKeys are the foreign keys migration 0031 dropped: those a turn's
// writes checked. Orphans checks what they checked; a test keeps this list
// equal to the migration's.
var droppedKeys = []reference{
	{"inbound", "principal_id", "principals", "a principal"},
	{"inbound", "turn_id", "turns", "a turn"},
	{"sessions", "principal_id", "principals", "a principal"},
	{"turns", "session_id", "sessions", "a session"},
	{"turns", "inbound_id", "inbound", "an inbound message"},
	{"messages", "session_id", "sessions", "a session"},
	{"messages", "turn_id", "turns", "a turn"},
	{"turn_steps", "turn_id", "turns", "a turn"},
	{"tool_calls", "turn_id", "turns", "a turn"},
	{"outbound", "inbound_id", "inbound", "an inbound message"},
	{"outbound", "turn_id", "turns", "a turn"},
	{"outbound", "principal_id", "principals", "a principal"},
	{"outbound_parts", "outbound_id", "outbound", "a reply"},
	{"stream_previews", "inbound_id", "inbound", "an inbound message"},
}

// orphansQuery counts, for each of droppedKeys in order, the rows whose
// column is not NULL and names no row of its parent.
var orphansQuery = func() string {
	counts := make([]string, len(droppedKeys))
	for i, r := range droppedKeys {
		t, c, p := pgx.Identifier{r.table}.Sanitize(), pgx.Identifier{r.column}.Sanitize(), pgx.Identifier{r.parent}.Sanitize()
		counts[i] = fmt.Sprintf("(SELECT count(*) FROM %s x WHERE x.%s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM %s p WHERE p.id = x.%s))",
			t, c, p, c)
	}
	return "SELECT " + strings.Join(counts, ",\n\t")
}()

// Orphans checks the references that the foreign keys dropped by migration
// 0031 checked: for each, it counts the rows whose column names a parent
// row that does not exist, and returns one line for each count that is not
// zero, e.g. "outbound.turn_id: 3 rows name a turn that does not exist".
// None means every reference holds. It reads those tables whole, in one
// statement and so one snapshot: it may run while replicas write (a row
// and its parent, written before it or in its transaction, are seen
// together), but takes a while on a large database. The tests call it as
// they end, so that a write the foreign keys would have refused fails
// them.
func (db *DB) Orphans(ctx context.Context) ([]string, error) {
	lines, err := orphans(ctx, db.pool)
	if err != nil {
		return nil, fmt.Errorf("postgres: orphans: %w", err)
	}
	return lines, nil
}

// orphans is Orphans on q (the pool or a transaction).
func orphans(ctx context.Context, q querier) ([]string, error) {
	counts := make([]int64, len(droppedKeys))
	dest := make([]any, len(counts))
	for i := range counts {
		dest[i] = &counts[i]
	}
	if err := q.QueryRow(ctx, orphansQuery).Scan(dest...); err != nil {
		return nil, err
	}
	var lines []string
	for i, n := range counts {
		r := droppedKeys[i]
		switch {
		case n == 1:
			lines = append(lines, fmt.Sprintf("%s.%s: 1 row names %s that does not exist", r.table, r.column, r.noun))
		case n > 1:
			lines = append(lines, fmt.Sprintf("%s.%s: %d rows name %s that does not exist", r.table, r.column, n, r.noun))
		}
	}
	return lines, nil
}
