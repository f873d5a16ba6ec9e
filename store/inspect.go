package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Inspection is what Inspect reads from a database file.
type Inspection struct {
	// Exists is false when there is no database file yet: the first Open
	// creates it.
	Exists bool
	// Version is the file's schema version; Latest is the version Open
	// migrates it to. Version > Latest is a database of a newer Talon,
	// which Open refuses.
	Version, Latest int
	// VaultKeyCheck is the vault's stored key check, nil when none.
	VaultKeyCheck []byte
	// VaultEntries is how many vault entries are stored.
	VaultEntries int
}

// Inspect reads the schema version and the vault's key check and entry
// count of the database at path, read-only: unlike Open it applies no
// migration and creates nothing (talon doctor uses it). It may run while
// another process serves the database.
func Inspect(ctx context.Context, path string) (Inspection, error) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return Inspection{}, err
	}
	in := Inspection{Latest: len(ms)}
	abs, err := filepath.Abs(path)
	if err != nil {
		return in, fmt.Errorf("store: inspect: %w", err)
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return in, nil
	} else if err != nil {
		return in, fmt.Errorf("store: inspect: %w", err)
	}
	in.Exists = true
	db, err := sql.Open("sqlite", readerDSN(abs))
	if err != nil {
		return in, fmt.Errorf("store: inspect: %w", err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&tables); err != nil {
		return in, fmt.Errorf("store: inspect %s: %w", abs, err)
	}
	if tables == 0 {
		return in, nil // created but never migrated: version 0
	}
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return in, fmt.Errorf("store: inspect %s: %w", abs, err)
	}
	in.Version = int(v.Int64)
	if in.Version < 2 { // the vault's tables come with 0002
		return in, nil
	}
	err = db.QueryRowContext(ctx, `SELECT v FROM vault_meta WHERE k = 'key_check'`).Scan(&in.VaultKeyCheck)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("store: inspect %s: vault key check: %w", abs, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM vault_entries`).Scan(&in.VaultEntries); err != nil {
		return in, fmt.Errorf("store: inspect %s: vault entries: %w", abs, err)
	}
	return in, nil
}
