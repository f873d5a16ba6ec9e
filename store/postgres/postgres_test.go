package postgres_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
	"github.com/talonhq/talon/store/storetest"
	"github.com/talonhq/talon/vault"
)

// testURL returns the URL of a fresh schema of the test database, dropped
// when the test ends; the test is skipped when TALON_TEST_POSTGRES is not
// set.
func testURL(t *testing.T) string { return pgtest.URL(t) }

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
	pgtest.Base(t)
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		u := testURL(t)
		// Once the test's stores are closed (their cleanups, registered
		// later, run first), and before its schema is dropped.
		t.Cleanup(func() { checkOrphans(t, u) })
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

// checkOrphans fails t for each reference in the database at u that a
// foreign key dropped by migration 0031 would have refused (DB.Orphans):
// the suite's writes are held to them still.
func checkOrphans(t *testing.T, u string) {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Errorf("orphans: %v", err)
		return
	}
	defer db.Close()
	lines, err := db.Orphans(ctx)
	if err != nil {
		t.Errorf("orphans: %v", err)
	}
	for _, l := range lines {
		t.Errorf("a reference a dropped foreign key checked does not hold: %s", l)
	}
}

func agentCall(id string) llm.ToolCall { return llm.ToolCall{ID: id, Name: "fetch", Arguments: "{}"} }
