package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	neturl "net/url"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// ErrSchemaTooNew is wrapped by Open's error when the database was migrated
// by a newer version of Talon than this one.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this program")

// ErrUpgradeWhileRunning is wrapped by Open's error when the schema needs
// migrations this version brings while other Talon processes run turns on
// it (they hold the runtime lock): they run an older version, which would
// go on beside a schema it does not know.
var ErrUpgradeWhileRunning = errors.New("postgres: Talon processes run on this database; stop them before upgrading")

var (
	_ agent.Store         = (*DB)(nil)
	_ agent.ThreadCursors = (*DB)(nil)
	_ agent.TurnFileStore = (*DB)(nil)
	_ agent.UsageMeter    = (*DB)(nil)
	_ agent.ServerMeter   = (*DB)(nil)
)

// DB is Talon's store on PostgreSQL. Every method is safe for concurrent
// use, by this process and by others on the same database.
type DB struct {
	// Now is the clock used for every timestamp written. Open sets it to
	// time.Now; tests may replace it before the first call.
	Now func() time.Time

	pool  *pgxpool.Pool
	group grouper // sends concurrent writes together (group.go)
	reads grouper // and the turn's reads
	// users keeps the settled days' totals of UsersByUsage.
	users store.UsersCache
	// warmNew, set by Warm, readies each connection the pool opens later
	// as Warm did the first ones (one that replaced a connection past its
	// lifetime, or after an outage).
	warmNew atomic.Bool
}

// Open connects to the database at url (a postgres:// URL or key=value
// string, as libpq takes them) and applies the embedded migrations not yet
// applied, under an advisory lock so that replicas starting together
// migrate once. It refuses a database migrated by a newer version
// (ErrSchemaTooNew). Its errors never include the URL, which may hold a
// password.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: the connection URL does not parse (want postgres://user@host:5432/db?sslmode=…): %w", scrub(err))
	}
	if !poolSizeSet(url) {
		cfg.MaxConns = DefaultPoolSize()
	}
	db := &DB{Now: time.Now}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if db.warmNew.Load() {
			_ = warm(ctx, c) // best effort: a cold connection still works
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", scrub(err))
	}
	db.pool = pool
	// As many groups in flight as connections, reads' and writes'
	// together (groupShare): writes go on their own while the pool has
	// room, and are grouped only when they would otherwise wait for a
	// connection. (Half as many groups for writes alone made writes wait
	// for one another at moderate load: p95 of a turn's overhead 48–322
	// ms against 19–22 ms, 40 people pausing ~1 s, same runs.)
	share := newGroupShare(int(cfg.MaxConns))
	db.group = grouper{groupShare: share, pool: pool}
	db.reads = grouper{groupShare: share, pool: pool, reads: true}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// DefaultPoolSize is the pool's size when the URL does not set
// pool_max_conns: the CPUs this process may use (GOMAXPROCS), at least 2,
// where pgx's default is 4 or the CPU count if higher. More connections
// than CPUs gain nothing once the writes are grouped (a busy pool makes the
// groups larger, one commit for more writes) and cost the host's CPU when
// PostgreSQL or other replicas run on it: three replicas on one 2-core
// host kept 12 backends busy with 4 each.
func DefaultPoolSize() int32 {
	return int32(max(2, runtime.GOMAXPROCS(0)))
}

// poolSizeSet reports whether the connection string, a URL or key=value
// pairs, sets pool_max_conns.
func poolSizeSet(conn string) bool {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := neturl.Parse(conn)
		return err == nil && u.Query().Has("pool_max_conns")
	}
	return poolSizeKV.MatchString(conn)
}

var poolSizeKV = regexp.MustCompile(`(^|\s)pool_max_conns\s*=`)

// WithPoolSize returns the connection string conn (a URL or key=value
// pairs) with pool_max_conns n, unless it sets pool_max_conns itself
// (set is then true, and conn is returned as it is).
func WithPoolSize(conn string, n int) (out string, set bool) {
	if poolSizeSet(conn) {
		return conn, true
	}
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := neturl.Parse(conn)
		if err != nil {
			return conn, false // Open reports it
		}
		q := u.Query()
		q.Set("pool_max_conns", strconv.Itoa(n))
		u.RawQuery = q.Encode()
		return u.String(), false
	}
	return strings.TrimSpace(conn) + " pool_max_conns=" + strconv.Itoa(n), false
}

// Close closes the connections. Calls in flight may fail; closing again is
// harmless.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", scrub(err))
	}
	return nil
}

// scrub keeps err's message but drops what pgconn may quote from the
// connection string: a *pgconn.ParseConfigError holds it.
func scrub(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string")
	}
	return err
}

// now is the current time of db's clock in unix milliseconds.
func (db *DB) now() int64 { return toMS(db.Now()) }

func toMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// nullID is a zero id as NULL.
func nullID[T ~int64](id T) *int64 {
	if id == 0 {
		return nil
	}
	v := int64(id)
	return &v
}

// text returns s as PostgreSQL can store it: a TEXT value cannot hold a
// NUL byte, which becomes U+FFFD (invalid UTF-8 likewise). Everything else
// is kept as it is.
func text(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// inTx runs fn in a transaction, committed when fn returns nil.
func (db *DB) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, fn)
}

// oneRow turns a change of no row into store.ErrNotFound.
func oneRow(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// migrationFiles holds the schema migrations, NNNN_name.sql from 0001
// without gaps. 0001–0018 are numbered as the SQLite store's are; features
// that came to PostgreSQL later have the next free number here, whatever
// their number in SQLite (the tables and columns are the same). A released
// migration is never edited.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("postgres: migrations: file %q: want NNNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("postgres: migrations: %w", err)
		}
		ms = append(ms, migration{version: v, name: m[2], sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("postgres: migrations: version %04d (%s) where %04d was expected", m.version, m.name, i+1)
		}
	}
	return ms, nil
}

// Latest is the schema version this program migrates a database to.
func Latest() int {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrationLock is the key of the advisory lock migrations run under
// ("talon" in ASCII).
const migrationLock = 0x74616c6f6e

const createSchemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT PRIMARY KEY,
	name       TEXT   NOT NULL,
	applied_at BIGINT NOT NULL
)`

// migrate applies, in order and each in its own transaction with its
// record, the migrations not yet recorded in schema_migrations, holding an
// advisory lock: a second replica waits for the first, then finds them
// applied.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return err
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: connect: %w", scrub(err))
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock)) //nolint:errcheck // the session ends with the connection anyway
	if _, err := conn.Exec(ctx, createSchemaMigrations); err != nil {
		if cerr := creatable(ctx, conn); cerr != nil {
			return fmt.Errorf("%w (%w)", cerr, err)
		}
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	var count, oldest, newest int64
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(min(version), 0), coalesce(max(version), 0) FROM schema_migrations`).
		Scan(&count, &oldest, &newest); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if int(newest) > len(ms) {
		return fmt.Errorf("postgres: migrate: the database has schema version %d, this program knows up to %d; run a newer Talon or restore a backup: %w",
			newest, len(ms), ErrSchemaTooNew)
	}
	// Versions are distinct (the primary key): len(ms) of them from 1 to
	// len(ms) are all of ms, and the usual open ends here.
	if int(count) == len(ms) && oldest == 1 && int(newest) == len(ms) {
		return nil
	}
	// An upgrade: the processes that run turns here now (the runtime lock's
	// holders) are of an older version. Migrating under them could break
	// their statements, or let them write what this version does not
	// expect, with nothing to stop them; so they are stopped first.
	if count > 0 {
		if holders := runtimeHolders(ctx, conn.Conn()); holders != "" {
			return fmt.Errorf("%w: the schema is at version %d and this Talon migrates it to %d, but Talon processes run on it (%s). "+
				"Stop every replica and every talon run or chat on this database, then start this version: "+
				"an older one left running beside the new schema could fail or write what the new one does not expect",
				ErrUpgradeWhileRunning, newest, len(ms), holders)
		}
	}
	for _, m := range ms {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil || n > 0 {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`, m.version, m.name, db.now())
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migrate to %04d_%s: %w", m.version, m.name, err)
		}
	}
	return nil
}

// creatable says, with what to do, why Open cannot create its tables on
// q's connection: no schema of the search_path exists (PostgreSQL's "no
// schema has been selected to create in"), or the role may not create in
// the first one (on PostgreSQL 15 and later, public is its owner's only).
// It returns nil when it can, or when the question itself fails.
func creatable(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	var schema *string
	var path, role string
	var may bool
	err := q.QueryRow(ctx, `SELECT current_schema(), current_setting('search_path'), current_user,
		coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)`).Scan(&schema, &path, &role, &may)
	switch {
	case err != nil:
		return nil
	case schema == nil:
		return fmt.Errorf("%w: no schema of the search_path (%s) exists, or role %s may not use it: "+
			"create it (CREATE SCHEMA name AUTHORIZATION %s) or grant it (GRANT USAGE, CREATE ON SCHEMA name TO %s), "+
			"or name another with search_path in store.url", ErrCannotCreate, path, role, role, role)
	case !may:
		return fmt.Errorf("%w: role %s may not create tables in schema %s: "+
			"GRANT CREATE ON SCHEMA %s TO %s (or make %s the database's owner), or name a schema it may create in with search_path in store.url",
			ErrCannotCreate, role, *schema, *schema, role, role)
	}
	return nil
}

// ErrCannotCreate is wrapped by the errors of Open and Inspect for a
// database where Talon's tables cannot be created (the schema or the
// role's privileges); the message says what to do.
var ErrCannotCreate = errors.New("postgres: cannot create Talon's tables")

// Inspection is what Inspect reads from a database.
type Inspection struct {
	// Version is the database's schema version (0 for one never
	// migrated); Latest is the version Open migrates it to.
	Version, Latest int
	// VaultKeyCheck is the vault's stored key check, nil when none.
	VaultKeyCheck []byte
	// VaultEntries is how many vault entries are stored.
	VaultEntries int
	// Runtimes names the processes that run turns on the database now
	// (the runtime lock's holders, RuntimeLock): "held by …", or "".
	Runtimes string
}

// Inspect connects to the database at url and reads its schema version and
// the vault's key check and entry count, without migrating or writing
// anything (talon doctor uses it). It may run while replicas serve the
// database.
func Inspect(ctx context.Context, url string) (Inspection, error) {
	in := Inspection{Latest: Latest()}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return in, fmt.Errorf("postgres: the connection URL does not parse (want postgres://user@host:5432/db?sslmode=…): %w", scrub(err))
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return in, fmt.Errorf("postgres: connect: %w", scrub(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return in, fmt.Errorf("postgres: inspect: %w", err)
	}
	in.Runtimes = runtimeHolders(ctx, conn)
	if !exists {
		// Open would create the tables: say now if it cannot.
		return in, creatable(ctx, conn)
	}
	var v int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return in, fmt.Errorf("postgres: inspect: %w", err)
	}
	in.Version = int(v)
	if in.Version < 2 {
		return in, nil
	}
	err = conn.QueryRow(ctx, `SELECT v FROM vault_meta WHERE k = 'key_check'`).Scan(&in.VaultKeyCheck)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return in, fmt.Errorf("postgres: inspect: vault key check: %w", err)
	}
	var n int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM vault_entries`).Scan(&n); err != nil {
		return in, fmt.Errorf("postgres: inspect: vault entries: %w", err)
	}
	in.VaultEntries = int(n)
	return in, nil
}
