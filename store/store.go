package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/talonhq/talon/agent"
)

// ErrNotFound is wrapped by errors about a row (inbound, turn, session,
// reply, tool call) that does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrFinished is wrapped by errors about an inbound whose turn has already
// ended (done or failed): it cannot be started or finished again.
var ErrFinished = errors.New("store: inbound already finished")

// ErrSchemaTooNew is wrapped by Open's error when the database was migrated
// by a newer version of Talon than this one.
var ErrSchemaTooNew = errors.New("store: database schema is newer than this program")

var _ agent.Store = (*DB)(nil)

// busyTimeoutMS bounds how long a connection waits for a lock held by
// another process (another Talon on the same file, a backup, the sqlite3
// shell) before failing with SQLITE_BUSY.
const busyTimeoutMS = 5000

// DB is Talon's SQLite database. It implements agent.Store; every method is
// safe for concurrent use.
type DB struct {
	// Now is the clock used for every timestamp written. Open sets it to
	// time.Now; tests may replace it before the first call (it is read
	// without synchronisation).
	Now func() time.Time

	path string
	// w is the writer: one connection, used for every write.
	w *sql.DB
	// r is the read-only pool.
	r *sql.DB

	ws writeStmts
	rs readStmts
	wr *writer
	ck *checkpointer
	ix *indexer

	usage usageCache
	// users keeps the settled days' totals of UsersByUsage.
	users UsersCache
}

// Open opens the database at path, creating the file (mode 0600) and its
// parent directory (mode 0700) if they do not exist, and applies the
// embedded migrations that have not been applied yet. It refuses a database
// migrated by a newer version (ErrSchemaTooNew). path must name a file:
// ":memory:" and URIs are not accepted.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("store: open %q: want the path of a database file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("store: open: create directory: %w", err)
	}
	// Create the file ourselves so that it (and the -wal and -shm files
	// SQLite derives from it) is private to the owner.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}

	db := &DB{Now: time.Now, path: abs}
	if err := db.open(ctx); err != nil {
		db.closeAll()
		return nil, err
	}
	return db, nil
}

func (db *DB) open(ctx context.Context) error {
	var err error
	db.w, err = sql.Open("sqlite", writerDSN(db.path))
	if err != nil {
		return fmt.Errorf("store: open writer: %w", err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)

	var mode string
	if err := db.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open writer: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store: open writer: journal mode is %q, want wal (is the file on a local file system?)", mode)
	}

	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return err
	}
	if _, err := migrate(ctx, db.w, ms, db.Now); err != nil {
		return err
	}

	// The readers open after the writer has created the schema and switched
	// the file to WAL: a mode=ro connection can do neither.
	db.r, err = sql.Open("sqlite", readerDSN(db.path))
	if err != nil {
		return fmt.Errorf("store: open readers: %w", err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	db.r.SetMaxOpenConns(n)
	db.r.SetMaxIdleConns(n)
	db.r.SetConnMaxLifetime(0)
	db.r.SetConnMaxIdleTime(0)
	if err := db.r.PingContext(ctx); err != nil {
		return fmt.Errorf("store: open readers: %w", err)
	}

	if err := db.ws.prepare(ctx, db.w); err != nil {
		return fmt.Errorf("store: prepare: %w", err)
	}
	if err := db.rs.prepare(ctx, db.r); err != nil {
		return fmt.Errorf("store: prepare: %w", err)
	}
	if err := db.startCheckpointer(); err != nil {
		return err
	}
	db.startWriter()
	db.startIndexer()
	return nil
}

// fileURI turns an absolute path into an SQLite file: URI with query.
func fileURI(abs string, query []string) string {
	u := url.URL{Path: filepath.ToSlash(abs)}
	return "file:" + u.EscapedPath() + "?" + strings.Join(query, "&")
}

// writerDSN is the DSN of the writer connection. Transactions begin
// IMMEDIATE, so a transaction that reads before it writes never has to
// upgrade its lock (and so never fails with SQLITE_BUSY halfway).
func writerDSN(abs string) string {
	return fileURI(abs, []string{
		"_txlock=immediate",
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
		fmt.Sprintf("_pragma=wal_autocheckpoint(%d)", backstopPages),
		"_pragma=foreign_keys(1)",
	})
}

// readerDSN is the DSN of the read-only pool: SQLite refuses every write on
// these connections (mode=ro), and query_only is a second guard.
func readerDSN(abs string) string {
	return fileURI(abs, []string{
		"mode=ro",
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS),
		"_pragma=query_only(1)",
		"_pragma=foreign_keys(1)",
	})
}

// Close closes the database. Calls in flight may fail.
func (db *DB) Close() error {
	return db.closeAll()
}

func (db *DB) closeAll() error {
	db.stopIndexer()
	db.stopWriter()
	var errs []error
	errs = append(errs, db.stopCheckpointer(), db.ws.close(), db.rs.close())
	if db.r != nil {
		errs = append(errs, db.r.Close())
	}
	if db.w != nil {
		errs = append(errs, db.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// now is the current time of db's clock in unix milliseconds.
func (db *DB) now() int64 { return toMS(db.Now()) }

// toMS stores a time as unix milliseconds; the zero time is 0.
func toMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS reads a time stored by toMS, in UTC.
func fromMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// nullID stores a zero id as NULL.
func nullID[T ~int64](id T) sql.NullInt64 {
	return sql.NullInt64{Int64: int64(id), Valid: id != 0}
}
