package memory_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/memory"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
)

// pgBenchDB is BenchmarkSearch's database on PostgreSQL, in a schema of
// its own of the database TALON_TEST_POSTGRES names (dropped afterwards):
// the same entries, saved through the store, the table analysed as
// autovacuum would have it by then.
func pgBenchDB(b *testing.B, spread bool) (*postgres.DB, *corpus) {
	b.Helper()
	base := os.Getenv("TALON_TEST_POSTGRES")
	if base == "" {
		b.Skip("TALON_TEST_POSTGRES is not set: set it to a PostgreSQL URL (postgres://root@127.0.0.1:5432/test?sslmode=disable) to measure the memory on PostgreSQL")
	}
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, base)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(admin.Close)
	rb := make([]byte, 6)
	_, _ = rand.Read(rb)
	schema := "talon_bench_" + hex.EncodeToString(rb)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := postgres.Open(ctx, u.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })

	c := newCorpus(1)
	texts := make([]string, benchEntries)
	for i := range texts {
		texts[i] = c.entry()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const workers = 16
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(texts); i += workers {
				space := memory.UserSpace(alice)
				if spread && i%100 != 0 {
					space = memory.UserSpace(agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprintf("U%04d", i%1000)})
				}
				if _, err := db.SaveMemory(ctx, store.Memory{Space: space, Author: "slack:T1:UX", Text: texts[i]}, 0); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	if _, err := admin.Exec(ctx, "VACUUM ANALYZE "+schema+".memories"); err != nil {
		b.Fatal(err)
	}
	for _, q := range c.queries(200) {
		if _, err := db.SearchMemories(ctx, []string{memory.UserSpace(alice)}, q, 10); err != nil {
			b.Fatal(err)
		}
	}
	return db, c
}

// BenchmarkSearchPostgres is BenchmarkSearch on the PostgreSQL store (GIN
// index over the entries' words), with its reference measured in the same
// run on the same database: the newest entries by the space's index. Run
// both together to compare the stores:
//
//	TALON_TEST_POSTGRES=postgres://… go test ./memory -run '^$' -bench Search -benchtime 300x
func BenchmarkSearchPostgres(b *testing.B) {
	for _, spread := range []bool{false, true} {
		name := "one_memory"
		if spread {
			name = "spread_1000_users"
		}
		b.Run(name, func(b *testing.B) {
			db, c := pgBenchDB(b, spread)
			s := &memory.Service{Store: db, Log: zerolog.Nop()}
			qs := c.queries(1000)
			key := agent.SessionKey{Principal: alice, Conversation: inDM}
			search := func(q string) error {
				args, _ := json.Marshal(map[string]any{"query": q})
				res, err := s.Run(context.Background(), agent.ToolCall{Name: memory.ToolSearch, Args: args, Key: key})
				if err == nil && res.IsError {
					err = fmt.Errorf("search %q: %s", q, res.Content)
				}
				return err
			}
			b.Run("fts", func(b *testing.B) { measure(b, qs, search) })
			b.Run("ref_indexed_newest", func(b *testing.B) {
				measure(b, qs, func(string) error { return search("") })
			})
		})
	}
}
