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
