package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/storetest"
	"github.com/talonhq/talon/vault"
)

// EnvURL names the database the tests use, e.g.
// postgres://root@127.0.0.1:5432/test?sslmode=disable. Each test works in
// a schema of its own, dropped afterwards.
const EnvURL = "TALON_TEST_POSTGRES"

// testURL returns the URL of a fresh schema of the test database, dropped
// when the test ends; the test is skipped when EnvURL is not set.
func testURL(t *testing.T) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		t.Skip(EnvURL + " is not set: set it to a PostgreSQL URL (postgres://root@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL store's tests")
	}
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, base)
	if err != nil {
		t.Fatalf("%s: %v", EnvURL, err)
	}
	t.Cleanup(admin.Close)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "talon_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: want a postgres:// URL: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	// The tests do not crash the server: a commit need not wait for the
	// disk, which makes the suite several times faster on a busy machine.
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	return u.String()
}

// placeholders turns the suite's ? placeholders into $1, $2, ….
func placeholders(q string) string {
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func TestConformance(t *testing.T) {
	if os.Getenv(EnvURL) == "" {
		t.Skip(EnvURL + " is not set: set it to a PostgreSQL URL (postgres://root@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL store's tests")
	}
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		u := testURL(t)
		var raw *pgxpool.Pool
		t.Cleanup(func() {
			if raw != nil {
				raw.Close()
			}
		})
		return storetest.Harness{
			Open: func(tb testing.TB, now func() time.Time) storetest.Store {
				db, err := postgres.Open(context.Background(), u)
				if err != nil {
					tb.Fatal(err)
				}
				db.Now = now
				tb.Cleanup(func() { db.Close() })
				return db
			},
			Vault: func(s storetest.Store) vault.Storage { return s.(*postgres.DB).VaultStorage() },
			Query: func(tb testing.TB, q string, args []any, dest ...any) {
				tb.Helper()
				if raw == nil {
					var err error
					if raw, err = pgxpool.New(context.Background(), u); err != nil {
						tb.Fatal(err)
					}
				}
				if err := raw.QueryRow(context.Background(), placeholders(q), args...).Scan(dest...); err != nil {
					tb.Fatalf("%s: %v", q, err)
				}
			},
		}
	})
}

func agentCall(id string) llm.ToolCall { return llm.ToolCall{ID: id, Name: "fetch", Arguments: "{}"} }
