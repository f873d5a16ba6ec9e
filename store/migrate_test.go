package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testClock = func() time.Time { return time.UnixMilli(1_700_000_000_000) }

// rawWriter opens path as the writer does, without migrating.
func rawWriter(t testing.TB, path string) *sql.DB {
	t.Helper()
	w, err := sql.Open("sqlite", writerDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	t.Cleanup(func() { w.Close() })
	return w
}

func TestEmbeddedMigrationsAreStrictlyOrdered(t *testing.T) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no embedded migrations")
	}
	for i, m := range ms {
		if m.version != i+1 {
			t.Errorf("migration %d has version %d, want %d", i, m.version, i+1)
		}
		if strings.TrimSpace(m.sql) == "" {
			t.Errorf("migration %04d_%s is empty", m.version, m.name)
		}
	}
	if ms[0].name != "init" {
		t.Errorf("first migration is %q, want init", ms[0].name)
	}
}

func TestLoadMigrationsRefusesBadSets(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name  string
		files fstest.MapFS
		want  string // substring of the error
	}{
		{"gap", fstest.MapFS{
			"migrations/0001_a.sql": file("SELECT 1"),
			"migrations/0003_c.sql": file("SELECT 1"),
		}, "version 0003"},
		{"repeat", fstest.MapFS{
			"migrations/0001_a.sql": file("SELECT 1"),
			"migrations/0001_b.sql": file("SELECT 1"),
		}, "where 0002 was expected"},
		{"not from one", fstest.MapFS{
			"migrations/0002_b.sql": file("SELECT 1"),
		}, "version 0002"},
		{"bad name", fstest.MapFS{
			"migrations/1_a.sql": file("SELECT 1"),
		}, "want NNNN_name.sql"},
		{"no folder", fstest.MapFS{}, "migrations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadMigrations(tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("loadMigrations: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestMigrateAppliesInOrderAndOnce(t *testing.T) {
	ctx := context.Background()
	w := rawWriter(t, filepath.Join(t.TempDir(), "m.db"))
	fsys := fstest.MapFS{
		"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);")},
		// Fails unless 0001 ran first.
		"migrations/0002_b.sql": {Data: []byte("CREATE TABLE b AS SELECT x + 1 AS y FROM a;")},
	}
	ms, err := loadMigrations(fsys)
	if err != nil {
		t.Fatal(err)
	}
	got, err := migrate(ctx, w, ms, testClock)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{1, 2}, got); diff != "" {
		t.Errorf("first migrate applied (-want +got):\n%s", diff)
	}
	got, err = migrate(ctx, w, ms, testClock)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("second migrate applied %v, want nothing", got)
	}

	fsys["migrations/0003_c.sql"] = &fstest.MapFile{Data: []byte("INSERT INTO a VALUES (2);")}
	ms, err = loadMigrations(fsys)
	if err != nil {
		t.Fatal(err)
	}
	got, err = migrate(ctx, w, ms, testClock)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{3}, got); diff != "" {
		t.Errorf("migrate after adding 0003 applied (-want +got):\n%s", diff)
	}
	var rowsA, y int
	if err := w.QueryRow("SELECT count(*) FROM a").Scan(&rowsA); err != nil {
		t.Fatal(err)
	}
	if err := w.QueryRow("SELECT y FROM b").Scan(&y); err != nil {
		t.Fatal(err)
	}
	if rowsA != 2 || y != 2 {
		t.Errorf("got %d rows in a and y=%d, want 2 and 2", rowsA, y)
	}
	var recorded []int
	rows, err := w.Query("SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		recorded = append(recorded, v)
	}
	if diff := cmp.Diff([]int{1, 2, 3}, recorded); diff != "" {
		t.Errorf("schema_migrations (-want +got):\n%s", diff)
	}
}

// TestMigrateFillsAGap checks that a database recording as many versions as
// there are migrations, and the newest, is still given one it lacks.
func TestMigrateFillsAGap(t *testing.T) {
	ctx := context.Background()
	w := rawWriter(t, filepath.Join(t.TempDir(), "m.db"))
	ms := []migration{
		{version: 1, name: "a", sql: "CREATE TABLE a (x INTEGER);"},
		{version: 2, name: "b", sql: "INSERT INTO a VALUES (2);"},
		{version: 3, name: "c", sql: "INSERT INTO a VALUES (3);"},
	}
	if _, err := migrate(ctx, w, ms, testClock); err != nil {
		t.Fatal(err)
	}
	// Three rows, 1 to 3, but without 2: count and newest match ms.
	if _, err := w.Exec("DELETE FROM schema_migrations WHERE version = 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (0, 'odd', 0)"); err != nil {
		t.Fatal(err)
	}
	got, err := migrate(ctx, w, ms, testClock)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{2}, got); diff != "" {
		t.Errorf("migrate of a database without version 2 applied (-want +got):\n%s", diff)
	}
}

// TestMigrateUpToDateTakesNoWriteLock checks that opening a database that
// has every migration does not wait for another connection's write
// transaction (the writer's busy timeout is 5 s; this test allows 2 s).
func TestMigrateUpToDateTakesNoWriteLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	w := rawWriter(t, path)
	ms := []migration{
		{version: 1, name: "a", sql: "CREATE TABLE a (x INTEGER);"},
		{version: 2, name: "b", sql: "INSERT INTO a VALUES (2);"},
	}
	if _, err := migrate(ctx, w, ms, testClock); err != nil {
		t.Fatal(err)
	}
	other := rawWriter(t, path)
	tx, err := other.BeginTx(ctx, nil) // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // nothing to keep
	if _, err := tx.Exec("INSERT INTO a VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	got, err := migrate(mctx, w, ms, testClock)
	if err != nil {
		t.Fatalf("migrate while another connection writes: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("migrate applied %v, want nothing", got)
	}
}

func TestMigrateRollsBackAFailedMigration(t *testing.T) {
	ctx := context.Background()
	w := rawWriter(t, filepath.Join(t.TempDir(), "m.db"))
	ms := []migration{
		{version: 1, name: "a", sql: "CREATE TABLE a (x INTEGER);"},
		{version: 2, name: "b", sql: "CREATE TABLE b (y INTEGER); INSERT INTO nosuchtable VALUES (1);"},
	}
	applied, err := migrate(ctx, w, ms, testClock)
	if err == nil || !strings.Contains(err.Error(), "0002_b") {
		t.Fatalf("migrate: got %v, want an error naming 0002_b", err)
	}
	if diff := cmp.Diff([]int{1}, applied); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	var n int
	if err := w.QueryRow("SELECT count(*) FROM sqlite_schema WHERE name = 'b'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("table b of the failed migration exists")
	}
	if err := w.QueryRow("SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("schema_migrations has %d rows, want 1", n)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "talon.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, path)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open of a newer database: got %v, want ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), "9999") {
		t.Errorf("error %q does not name the database's version", err)
	}
}

func TestOpenSetsUpConnections(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "sub", "dir")
	path := filepath.Join(dir, "talon.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	if fi, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	} else if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode %o, want 700", got)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode %o, want 600", got)
	}

	pragmas := []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"synchronous", "1"}, // NORMAL
		{"foreign_keys", "1"},
		{"busy_timeout", "5000"},
	}
	for _, p := range pragmas {
		var got string
		if err := db.w.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != p.want {
			t.Errorf("writer PRAGMA %s = %q, want %q", p.pragma, got, p.want)
		}
	}
	if got := db.w.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("writer allows %d connections, want 1", got)
	}
	if got := db.r.Stats().MaxOpenConnections; got < 2 {
		t.Errorf("read pool allows %d connections, want several", got)
	}
	if _, err := db.r.ExecContext(ctx, "INSERT INTO principals (platform, workspace, user, created_at) VALUES ('x', '', 'y', 0)"); err == nil {
		t.Error("a write through the read pool succeeded")
	}
	// Turning query_only off does not help: the connection is read-only.
	conn, err := db.r.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA query_only = 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "INSERT INTO principals (platform, workspace, user, created_at) VALUES ('x', '', 'y', 0)"); err == nil {
		t.Error("a write on a read connection with query_only off succeeded")
	}
}

func TestOpenRefusesNonFiles(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db?mode=memory"} {
		if db, err := Open(context.Background(), path); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}
