package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

func pool(t *testing.T, u string) *pgxpool.Pool { return pgtest.Pool(t, u) }

// Replicas starting together on an empty database migrate it once, to the
// latest version; a database migrated by a newer Talon is refused.
func TestMigrations(t *testing.T) {
	ctx := context.Background()
	u := testURL(t)
	if in, err := postgres.Inspect(ctx, u); err != nil || in.Version != 0 || in.Latest != postgres.Latest() {
		t.Fatalf("Inspect of an empty schema: %+v, %v", in, err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			db, err := postgres.Open(ctx, u)
			if err != nil {
				t.Error(err)
				return
			}
			db.Close()
		})
	}
	wg.Wait()
	p := pool(t, u)
	var n, newest int64
	if err := p.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &newest); err != nil {
		t.Fatal(err)
	}
	if n != int64(postgres.Latest()) || newest != int64(postgres.Latest()) || postgres.Latest() < 16 {
		t.Errorf("%d migrations recorded, newest %d; want %d of them", n, newest, postgres.Latest())
	}
	in, err := postgres.Inspect(ctx, u)
	if err != nil || in.Version != postgres.Latest() || in.VaultEntries != 0 || in.VaultKeyCheck != nil {
		t.Errorf("Inspect after migrating: %+v, %v", in, err)
	}

	if _, err := p.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Open(ctx, u); !errors.Is(err, postgres.ErrSchemaTooNew) {
		t.Errorf("Open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

// A version that would migrate the schema while Talon processes run on it
// (an older replica left running during an upgrade) is refused, naming
// them, and migrates nothing; once they stop it starts. A replica of the
// same version opens beside them as before.
func TestUpgradeRefusedWhileTalonRuns(t *testing.T) {
	ctx := context.Background()
	u := testURL(t)
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old, err := db.LockRuntime(ctx, true, "d1", "talon test old replica", func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	same, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatalf("a replica of the same version beside a running one: %v", err)
	}
	same.Close()

	// The schema one version behind this Talon's, as an older one left it.
	p := pool(t, u)
	latest := postgres.Latest()
	var name string
	var at int64
	if err := p.QueryRow(ctx, `DELETE FROM schema_migrations WHERE version = $1 RETURNING name, applied_at`, latest).Scan(&name, &at); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(ctx, u)
	want := fmt.Sprintf("the schema is at version %d and this Talon migrates it to %d", latest-1, latest)
	if !errors.Is(err, postgres.ErrUpgradeWhileRunning) || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), `"talon test old replica" from`) || !strings.Contains(err.Error(), "Stop every replica") {
		t.Fatalf("an upgrade while an older replica runs: %v", err)
	}
	var n int
	if err := p.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, latest).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused upgrade migrated: %d rows of version %d, %v", n, latest, err)
	}

	// Stopped: this version starts. (Its migration is already in the
	// schema here, so its record is put back rather than run again.)
	old.Close()
	if _, err := p.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`, latest, name, at); err != nil {
		t.Fatal(err)
	}
	db2, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatalf("once the old replica stopped: %v", err)
	}
	db2.Close()
}

// A connection that fails names what to fix and never the password.
func TestOpenErrorsHideThePassword(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{
		"postgres://talon:s3cretPassw0rd@127.0.0.1:1/talon?sslmode=disable&connect_timeout=2",
		"postgres://talon:s3cretPassw0rd@127.0.0.1:5432/talon?sslmode=bogus",
		"host=127.0.0.1 port=1 password=s3cretPassw0rd sslmode=disable connect_timeout=2",
	} {
		_, err := postgres.Open(ctx, u)
		if err == nil {
			t.Errorf("Open succeeded")
			continue
		}
		if strings.Contains(err.Error(), "s3cretPassw0rd") {
			t.Errorf("the error shows the password: %v", err)
		}
		_, err = postgres.Inspect(ctx, u)
		if err == nil || strings.Contains(err.Error(), "s3cretPassw0rd") {
			t.Errorf("Inspect: %v", err)
		}
	}
}

// Text PostgreSQL cannot hold (a NUL byte, which a platform message or a
// tool's output may carry) is stored with U+FFFD in its place instead of
// failing the message or the turn.
func TestTextWithNULIsStored(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}, Conversation: agent.Conversation{Channel: "C1"}}
	q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "k\x00", Key: key, Text: "a\x00b"})
	if err != nil {
		t.Fatal(err)
	}
	turn, _, _, err := db.StartTurn(ctx, q.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.StartToolCall(ctx, turn, 1, agentCall("c1")); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishToolCall(ctx, turn, "c1", "out\x00put", false); err != nil {
		t.Fatal(err)
	}
	res, err := db.ToolResults(ctx, turn)
	if err != nil || res["c1"].Content != "out\uFFFDput" {
		t.Errorf("tool result %+v, %v", res, err)
	}
	qs, err := db.Pending(ctx)
	if err != nil || len(qs) != 1 || qs[0].Text != "a\uFFFDb" {
		t.Errorf("Pending: %+v, %v", qs, err)
	}
	// The same platform message again is still a duplicate.
	if _, dup, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "k\x00", Key: key, Text: "a\x00b"}); err != nil || !dup {
		t.Errorf("the same key again: dup=%v, %v", dup, err)
	}
}

// Import copies every table the migrations create (a table added later
// must be added to its list, parents first), but the schema's own
// bookkeeping: the migrations applied and the generation of settled usage
// (0025), which start as the migrations make them, the settled days' usage
// kept under that generation (0028) and the console's periods (0029), derived
// from usage_daily, and the
// fencing tokens (0027), which belong to the NATS deployment's leases.
func TestImportCopiesEveryTable(t *testing.T) {
	ctx := context.Background()
	u := testURL(t)
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	rows, err := pool(t, u).Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_name NOT IN ('schema_migrations', 'usage_generation', 'usage_days', 'usage_periods', 'fences') ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
	}
	want := slices.Clone(postgres.ImportTables())
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tables Import copies (-list +schema):\n%s", diff)
	}
}

// Where pg_trgm is installed (pgtest installs it in public), the
// conversation search has its trigram index, and the planner uses it.
func TestConversationSearchIndex(t *testing.T) {
	ctx := context.Background()
	u := testURL(t)
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	p := pool(t, u)
	var installed bool
	if err := p.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')`).Scan(&installed); err != nil {
		t.Fatal(err)
	}
	if !installed {
		t.Skip("pg_trgm is not installed on this server: the search scans the messages")
	}
	var def string
	if err := p.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'messages_content_trgm'`).Scan(&def); err != nil {
		t.Fatalf("the trigram index of messages.content: %v", err)
	}
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `EXPLAIN SELECT id FROM messages WHERE content ILIKE '%quokka%'`)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if all := strings.Join(lines, "\n"); !strings.Contains(all, "messages_content_trgm") {
		t.Errorf("the search's plan does not use the trigram index:\n%s", all)
	}
}

// The pool has as many connections as CPUs this process may use (at
// least 2) unless the URL sets pool_max_conns.
func TestPoolSize(t *testing.T) {
	for conn, want := range map[string]bool{
		"postgres://talon@db:5432/talon?sslmode=disable":                  false,
		"postgres://talon@db:5432/talon?sslmode=disable&pool_max_conns=3": true,
		"postgresql://talon@db/talon?pool_max_conns=3":                    true,
		"postgres://pool_max_conns:x@db/talon":                            false,
		"host=db user=talon sslmode=disable":                              false,
		"host=db pool_max_conns=3 user=talon":                             true,
		"pool_max_conns = 3 host=db":                                      true,
		"host=db password=pool_max_conns=3":                               false,
	} {
		if got := postgres.PoolSizeSet(conn); got != want {
			t.Errorf("PoolSizeSet(%q) = %v, want %v", conn, got, want)
		}
	}
	ctx := context.Background()
	u := testURL(t)
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, want := postgres.PoolSize(db), postgres.DefaultPoolSize(); got != want || want != int32(max(2, runtime.GOMAXPROCS(0))) {
		t.Errorf("pool of %d connections, want %d (GOMAXPROCS %d)", got, want, runtime.GOMAXPROCS(0))
	}
	db3, err := postgres.Open(ctx, u+"&pool_max_conns=3")
	if err != nil {
		t.Fatal(err)
	}
	defer db3.Close()
	if got := postgres.PoolSize(db3); got != 3 {
		t.Errorf("pool_max_conns=3: a pool of %d connections", got)
	}

	// WithPoolSize sets the size, unless the string sets its own.
	for _, c := range []struct {
		conn, want string
		set        bool
	}{
		{"postgres://talon@db:5432/talon?sslmode=disable", "postgres://talon@db:5432/talon?pool_max_conns=1&sslmode=disable", false},
		{"postgres://talon@db/talon?pool_max_conns=3", "postgres://talon@db/talon?pool_max_conns=3", true},
		{"host=db user=talon", "host=db user=talon pool_max_conns=1", false},
		{"host=db pool_max_conns=3", "host=db pool_max_conns=3", true},
	} {
		if got, set := postgres.WithPoolSize(c.conn, 1); got != c.want || set != c.set {
			t.Errorf("WithPoolSize(%q, 1) = %q, %v; want %q, %v", c.conn, got, set, c.want, c.set)
		}
	}
	u1, _ := postgres.WithPoolSize(u, 1)
	db1, err := postgres.Open(ctx, u1)
	if err != nil {
		t.Fatal(err)
	}
	defer db1.Close()
	if got := postgres.PoolSize(db1); got != 1 {
		t.Errorf("WithPoolSize(…, 1): a pool of %d connections", got)
	}
}
