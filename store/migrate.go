package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"
)

// migrationFiles holds the schema migrations, named NNNN_name.sql and
// numbered from 0001 without gaps. A migration, once released, is never
// edited: changes come as a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrationName is compiled when a database is opened, not at start-up.
var migrationName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`) })

// loadMigrations reads the migrations/ folder of fsys, sorted by version. It
// refuses a file whose name does not follow NNNN_name.sql, two files with the
// same version, and gaps in the numbering.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		m := migrationName().FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("store: migrations: file %q: want NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(m[1])
		if err != nil {
			return nil, fmt.Errorf("store: migrations: file %q: %w", e.Name(), err)
		}
		body, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("store: migrations: %w", err)
		}
		ms = append(ms, migration{version: v, name: m[2], sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migrations: version %04d (%s) where %04d was expected: versions must run from 0001 without gaps or repeats", m.version, m.name, i+1)
		}
	}
	return ms, nil
}

// migrate applies, in order, the migrations of ms not yet recorded in
// schema_migrations, each in its own transaction together with its record.
// It refuses a database that has a version ms does not know. It returns the
// versions it applied.
func migrate(ctx context.Context, w *sql.DB, ms []migration, now func() time.Time) ([]int, error) {
	if _, err := w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	var (
		count          int
		oldest, newest sql.NullInt64
	)
	if err := w.QueryRowContext(ctx, `SELECT count(*), min(version), max(version) FROM schema_migrations`).
		Scan(&count, &oldest, &newest); err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	if newest.Valid && int(newest.Int64) > len(ms) {
		return nil, fmt.Errorf("store: migrate: the database has schema version %d, this program knows up to %d; run a newer Talon or restore a backup: %w",
			newest.Int64, len(ms), ErrSchemaTooNew)
	}
	// Versions are distinct integers (the primary key): len(ms) of them
	// from 1 to len(ms) are every version of ms. The usual open, of a
	// database that is up to date, ends here without a write transaction
	// per migration.
	if count == len(ms) && oldest.Valid && oldest.Int64 == 1 && newest.Int64 == int64(len(ms)) {
		return nil, nil
	}

	var applied []int
	for _, m := range ms {
		done, err := applyMigration(ctx, w, m, now)
		if err != nil {
			return applied, fmt.Errorf("store: migrate to %04d_%s: %w", m.version, m.name, err)
		}
		if done {
			applied = append(applied, m.version)
		}
	}
	return applied, nil
}

// applyMigration applies m unless it is recorded already (another process
// may have applied it since migrate looked). It reports whether it applied.
func applyMigration(ctx context.Context, w *sql.DB, m migration, now func() time.Time) (bool, error) {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, toMS(now())); err != nil {
		return false, err
	}
	return true, tx.Commit()
}
