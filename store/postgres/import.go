package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// importTables are the tables Import copies, each after the tables it
// refers to. A test keeps it equal to the tables of the migrations.
var importTables = []string{
	"principals", "sessions", "inbound", "turns", "messages", "turn_steps", "tool_calls",
	"outbound", "outbound_parts", "stream_previews", "approvals",
	"vault_entries", "vault_meta", "vault_audit",
	"followed_threads", "channel_cursors", "mcp_tools", "console_audit", "turn_files",
	"usage_daily", "console_sessions", "denied_principals",
	"memories", "routines", "routine_runs", "principal_zones",
	"console_oidc_states", "oauth_states", "oauth_clients", "oauth_connections",
}

// derivedColumns are columns that only this store has, computed from the
// copied ones after the copy (memories.words, the full-text index).
var derivedColumns = map[string][]string{"memories": {"words"}}

// Imported is what Import copied.
type Imported struct {
	// Tables are the tables copied, in order; Rows counts their rows.
	Tables []string
	Rows   map[string]int64
	// Skipped are the source's tables with rows that this store has no
	// table for (a feature not on PostgreSQL yet), with their row counts.
	Skipped map[string]int64
}

// Import copies every row of src, a read transaction on a database of the
// SQLite store (the same tables and columns), into db, which must hold no
// data yet, in one transaction: all or nothing. Ids are kept, so every
// reference stays valid, and vault entries are copied as the sealed bytes
// they are: the vault opens them from db with the same key. The identity
// sequences continue after the largest id copied. A source with a row
// that names a row it does not have (DB.Orphans's references, whose
// foreign keys refused it before migration 0031) is refused.
func (db *DB) Import(ctx context.Context, src *sql.Tx) (Imported, error) {
	out := Imported{Tables: importTables, Rows: map[string]int64{}, Skipped: map[string]int64{}}
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		for _, t := range importTables {
			var any bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+pgx.Identifier{t}.Sanitize()+`)`).Scan(&any); err != nil {
				return err
			}
			if any {
				return fmt.Errorf("table %s already holds rows: the copy goes into an empty database only (a new database, or drop this one's tables first)", t)
			}
		}
		for _, t := range importTables {
			n, err := copyTable(ctx, tx, src, t)
			if err != nil {
				return fmt.Errorf("table %s: %w", t, err)
			}
			out.Rows[t] = n
		}
		if err := indexMemories(ctx, tx); err != nil {
			return fmt.Errorf("table memories: index: %w", err)
		}
		// inbound.turn_id was copied empty (the turns came after it): each
		// started inbound points at its one turn.
		if _, err := tx.Exec(ctx, `UPDATE inbound SET turn_id = t.id FROM turns t WHERE t.inbound_id = inbound.id`); err != nil {
			return err
		}
		// What the foreign keys migration 0031 dropped refused in the
		// copy: a row that names a row the source does not have.
		lines, err := orphans(ctx, tx)
		if err != nil {
			return err
		}
		if len(lines) > 0 {
			return fmt.Errorf("the source's rows name rows it does not have: %s", strings.Join(lines, "; "))
		}
		rows, err := tx.Query(ctx, `SELECT table_name FROM information_schema.columns
			WHERE table_schema = current_schema() AND column_name = 'id' AND is_identity = 'YES'`)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		used, err := sqliteSequences(ctx, src)
		if err != nil {
			return err
		}
		for _, t := range ids {
			q := pgx.Identifier{t}.Sanitize()
			if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, 'id'), greatest(coalesce(max(id), 0), $2) + 1, false) FROM `+q, q, used[t]); err != nil {
				return fmt.Errorf("table %s: sequence: %w", t, err)
			}
		}
		return nil
	})
	if err != nil {
		return Imported{}, fmt.Errorf("postgres: import: %w", err)
	}
	if err := skippedTables(ctx, src, out.Skipped); err != nil {
		return out, fmt.Errorf("postgres: import: %w", err)
	}
	return out, nil
}

// sqliteSequences returns, by table, the largest id src ever gave in a
// table whose ids are never reused (AUTOINCREMENT: the memory's), so that
// the sequence here does not give a forgotten entry's number again.
func sqliteSequences(ctx context.Context, src *sql.Tx) (map[string]int64, error) {
	out := map[string]int64{}
	var exists int
	if err := src.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'`).Scan(&exists); err != nil || exists == 0 {
		return out, err
	}
	rows, err := src.QueryContext(ctx, `SELECT name, seq FROM sqlite_sequence`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name string
			seq  int64
		)
		if err := rows.Scan(&name, &seq); err != nil {
			return nil, err
		}
		out[name] = seq
	}
	return out, rows.Err()
}

// copyTable copies table t's rows from src with COPY, converting each
// value to the column's type here.
func copyTable(ctx context.Context, tx pgx.Tx, src *sql.Tx, t string) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, t)
	if err != nil {
		return 0, err
	}
	type column struct{ name, typ string }
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		err := r.Scan(&c.name, &c.typ)
		return c, err
	})
	if err != nil {
		return 0, err
	}
	if len(cols) == 0 {
		return 0, errors.New("not in this database")
	}
	cols = slices.DeleteFunc(cols, func(c column) bool { return slices.Contains(derivedColumns[t], c.name) })
	names := make([]string, len(cols))
	sel := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
		sel[i] = `"` + c.name + `"`
		if t == "inbound" && c.name == "turn_id" {
			sel[i] = "NULL"
		}
	}
	srcRows, err := src.QueryContext(ctx, `SELECT `+strings.Join(sel, ", ")+` FROM "`+t+`"`)
	if err != nil {
		return 0, fmt.Errorf("read the source (is it a Talon SQLite database of this version?): %w", err)
	}
	defer srcRows.Close()
	typs := make([]string, len(cols))
	for i, c := range cols {
		typs[i] = c.typ
	}
	return tx.CopyFrom(ctx, pgx.Identifier{t}, names, &rowSource{rows: srcRows, typs: typs})
}

// rowSource streams the source's rows into COPY.
type rowSource struct {
	rows *sql.Rows
	typs []string
	err  error
}

func (s *rowSource) Next() bool { return s.err == nil && s.rows.Next() }

func (s *rowSource) Values() ([]any, error) {
	vals := make([]any, len(s.typs))
	ptrs := make([]any, len(s.typs))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := s.rows.Scan(ptrs...); err != nil {
		s.err = err
		return nil, err
	}
	for i, v := range vals {
		c, err := convert(v, s.typs[i])
		if err != nil {
			s.err = fmt.Errorf("column %d: %w", i+1, err)
			return nil, s.err
		}
		vals[i] = c
	}
	return vals, nil
}

func (s *rowSource) Err() error {
	if s.err != nil {
		return s.err
	}
	return s.rows.Err()
}

// convert turns a value as the SQLite driver returns it (int64, float64,
// string, []byte or nil) into the PostgreSQL column type typ.
func convert(v any, typ string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case "boolean":
		if n, ok := v.(int64); ok {
			return n != 0, nil
		}
	case "bigint", "integer", "smallint":
		if n, ok := v.(int64); ok {
			return n, nil
		}
	case "text":
		switch x := v.(type) {
		case string:
			return text(x), nil
		case []byte:
			return text(string(x)), nil
		}
	case "bytea":
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			return []byte(x), nil
		}
	}
	return nil, fmt.Errorf("a %T where PostgreSQL has %s", v, typ)
}

// skippedTables counts the rows of src's tables that Import does not copy:
// tables of features not on PostgreSQL yet. SQLite's own tables, the
// migrations' record and the full-text indexes with their shadow tables
// (which hold a copy of another table's text, copied itself: PostgreSQL
// indexes it its own way) are not counted.
func skippedTables(ctx context.Context, src *sql.Tx, out map[string]int64) error {
	rows, err := src.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return err
	}
	var names []string
	var fts []string
	for rows.Next() {
		var name string
		var ddl sql.NullString
		if err := rows.Scan(&name, &ddl); err != nil {
			rows.Close()
			return err
		}
		if strings.Contains(strings.ToUpper(ddl.String), "VIRTUAL TABLE") {
			fts = append(fts, name)
		}
		names = append(names, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, name := range names {
		// fences: fencing tokens of a NATS deployment's leases, which a
		// new deployment claims again from its own bucket. usage_days:
		// settled days' usage derived from usage_daily, read again there;
		// usage_periods: what the console derived from them.
		if strings.HasPrefix(name, "sqlite_") || name == "schema_migrations" || name == "fences" || name == "usage_days" || name == "usage_periods" || slices.Contains(importTables, name) {
			continue
		}
		shadow := false
		for _, f := range fts {
			if name == f || strings.HasPrefix(name, f+"_") {
				shadow = true
			}
		}
		if shadow {
			continue
		}
		var n int64
		if err := src.QueryRowContext(ctx, `SELECT count(*) FROM "`+strings.ReplaceAll(name, `"`, `""`)+`"`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			out[name] = n
		}
	}
	return nil
}

// ImportTables are the tables Import copies, in the order it copies them.
func ImportTables() []string { return slices.Clone(importTables) }
