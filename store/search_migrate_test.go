package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkMigrateMessagesSearch opens a database of 1,000,000 messages
// (10,000 sessions of 100 messages, the console benchmark's shape, each
// text with a number of its own) made before migration 0025, and reports
// how long Open takes (the migration) and how long until the background
// backfill has indexed every message, and the index's size on disk. Run:
// go test ./store -run '^$' -bench MigrateMessagesSearch -benchtime 1x
func BenchmarkMigrateMessagesSearch(b *testing.B) {
	ctx := context.Background()
	all, err := loadMigrations(migrationFiles)
	if err != nil {
		b.Fatal(err)
	}
	var before []migration
	for _, m := range all {
		if m.name == "messages_search" {
			break
		}
		before = append(before, m)
	}
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "talon.db")
		w := rawWriter(b, path)
		if _, err := migrate(ctx, w, before, testClock); err != nil {
			b.Fatal(err)
		}
		tx, err := w.Begin()
		if err != nil {
			b.Fatal(err)
		}
		exec := func(q string, args ...any) {
			if _, err := tx.Exec(q, args...); err != nil {
				b.Fatal(err)
			}
		}
		exec(`CREATE TEMP TABLE series_n (value INTEGER PRIMARY KEY)`)
		exec(`WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 500000) INSERT INTO series_n SELECT value FROM n`)
		exec(`INSERT INTO principals (id, platform, workspace, user, created_at) SELECT value, 'slack', 'T1', 'U' || value, 0 FROM series_n WHERE value <= 10000`)
		exec(`INSERT INTO sessions (id, principal_id, channel, created_at) SELECT value, value, 'C1', 0 FROM series_n WHERE value <= 10000`)
		exec(`INSERT INTO messages (session_id, role, content, created_at)
			SELECT 1 + value % 10000, 'user', '{"role":"user","content":"hello, what is the weather like today? order ' || value || '"}', value FROM series_n`)
		exec(`INSERT INTO messages (session_id, role, content, created_at)
			SELECT 1 + value % 10000, 'assistant', '{"role":"assistant","content":"It is sunny. Your order ' || value || ' is on its way."}', value FROM series_n`)
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		sizeBefore := dbSize(b, w)
		w.Close()
		b.StartTimer()
		start := time.Now()
		db, err := Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Since(start)
		for {
			indexing, err := db.SearchIndexing(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if !indexing {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		indexed := time.Since(start)
		b.StopTimer()
		sizeAfter := dbSize(b, db.w)
		db.Close()
		b.ReportMetric(opened.Seconds(), "open-s")
		b.ReportMetric(indexed.Seconds(), "indexed-s")
		b.ReportMetric(float64(sizeBefore)/1e6, "db-before-MB")
		b.ReportMetric(float64(sizeAfter-sizeBefore)/1e6, "index-MB")
		b.StartTimer()
	}
}

// dbSize checkpoints the WAL into the file and returns the bytes its
// pages in use take.
func dbSize(b *testing.B, w *sql.DB) int64 {
	b.Helper()
	if _, err := w.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		b.Fatal(err)
	}
	var pages, free, size int64
	if err := w.QueryRow(`SELECT (SELECT page_count FROM pragma_page_count), (SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size)`).Scan(&pages, &free, &size); err != nil {
		b.Fatal(err)
	}
	return (pages - free) * size
}
