// Package pgtest gives tests a PostgreSQL schema of their own: the one
// set-up every test on the PostgreSQL store uses (store/postgres, cluster,
// cmd/talon). It is imported by tests only.
//
// The database is the one TALON_TEST_POSTGRES names, e.g.
// postgres://root@127.0.0.1:5432/test?sslmode=disable; without it the
// test is skipped with one line saying so.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL is the variable naming the test database.
const EnvURL = "TALON_TEST_POSTGRES"

// SkipLine is what a test without EnvURL says when it skips.
const SkipLine = EnvURL + " is not set: set it to a PostgreSQL URL (postgres://root@127.0.0.1:5432/test?sslmode=disable) to run the tests on PostgreSQL"

// Base returns EnvURL's value, or skips tb.
func Base(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		tb.Skip(SkipLine)
	}
	return base
}

var extensions sync.Once

// URL returns the URL of a fresh schema of the test database (its
// search_path), dropped when tb ends; tb is skipped when EnvURL is not
// set. Commits on it do not wait for the disk (synchronous_commit off:
// the tests do not crash the server, and the suites run several times
// faster on a busy machine).
func URL(tb testing.TB) string {
	tb.Helper()
	base := Base(tb)
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, base)
	if err != nil {
		tb.Fatalf("%s: %v", EnvURL, err)
	}
	defer admin.Close()
	// pg_trgm (the conversation search's index) is installed once for the
	// database, in public: installed by a migration in a test's schema it
	// would go, with the other tests' indexes, when that schema is dropped.
	extensions.Do(func() {
		_, _ = admin.Exec(ctx, `SELECT pg_advisory_lock(7411); CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public; SELECT pg_advisory_unlock(7411)`)
	})
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "talon_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		admin, err := pgxpool.New(context.Background(), base)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("%s: want a postgres:// URL: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	return u.String()
}

// Pool returns a pool on url (from URL), closed when tb ends.
func Pool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}
