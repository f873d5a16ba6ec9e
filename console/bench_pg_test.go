package console

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

// pgBenchSchema keeps BenchmarkPagesPostgres's database between runs (in
// the database TALON_TEST_POSTGRES names): made once, it is used again
// while its seed version matches and it is less than a week old.
const (
	pgBenchSchema = "h_console"
	pgBenchSeed   = 1
)

// BenchmarkPagesPostgres is BenchmarkPages on the PostgreSQL store: the
// same 1,000,000 messages of 10,000 users over a year, written by the
// server itself (generate_series) and kept in the schema h_console for
// the next run. Run: TALON_TEST_POSTGRES=postgres://… go test ./console
// -run '^$' -bench PagesPostgres -benchtime 50x
func BenchmarkPagesPostgres(b *testing.B) {
	ctx := context.Background()
	base := pgtest.Base(b)
	u, err := url.Parse(base)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", pgBenchSchema)
	u.RawQuery = q.Encode()
	if err := pgBenchSeedSchema(ctx, base, u.String()); err != nil {
		b.Fatal(err)
	}
	db, err := postgres.Open(ctx, u.String()) // migrates what main added since
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	fresh := func(b *testing.B, now func() time.Time) (Store, func()) {
		db, err := postgres.Open(ctx, u.String())
		if err != nil {
			b.Fatal(err)
		}
		db.Now = now
		return db, func() { db.Close() }
	}
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	forget := func(q string) func(b *testing.B) {
		return func(b *testing.B) {
			if _, err := conn.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
	}
	benchPages(b, db, func(now func() time.Time) { db.Now = now }, fresh, map[string]func(b *testing.B){
		// The first load of a day on PostgreSQL: the newest settled
		// day is not kept in usage_days yet (migration 0028), nor the
		// period that ends with it in usage_periods (0029).
		"usage-30d-cold-newday": forget(`DELETE FROM usage_days WHERE day = (SELECT max(day) FROM usage_days); DELETE FROM usage_periods`),
		// The first load of a period after the upgrade: none is.
		"usage-30d-cold-unkept": forget(`DELETE FROM usage_days; DELETE FROM usage_periods`),
	}, nil)
}

// pgBenchSeedSchema makes the benchmark's schema, unless a matching one is
// there.
func pgBenchSeedSchema(ctx context.Context, base, schemaURL string) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var seed, end int64
	err = conn.QueryRow(ctx, `SELECT version, end_ms FROM `+pgBenchSchema+`.bench_seed`).Scan(&seed, &end)
	if err == nil && seed == pgBenchSeed && time.Since(time.UnixMilli(end)) < 7*24*time.Hour {
		return nil
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgBenchSchema+` CASCADE`); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgBenchSchema); err != nil {
		return err
	}
	db, err := postgres.Open(ctx, schemaURL) // the schema as migrations make it
	if err != nil {
		return err
	}
	db.Close()
	end = time.Now().UnixMilli()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var trgm string
	_ = tx.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'messages_content_trgm'`, pgBenchSchema).Scan(&trgm)
	for _, q := range []string{
		`SET LOCAL search_path = ` + pgBenchSchema + `, public`,
		`SET LOCAL maintenance_work_mem = '256MB'`,
		`SET LOCAL synchronous_commit = off`,
		// Built after the rows, as a migrated database's is.
		`DROP INDEX IF EXISTS messages_content_trgm`,
		// As benchDB: user u has session u in channel C(u%200) of
		// workspace T(u%20), and 50 turns spread over the year.
		`INSERT INTO principals (id, platform, workspace, "user", created_at)
			SELECT u, 'slack', 'T' || (u % 20), 'U' || lpad(u::text, 5, '0'), $1::bigint - 31536000000 FROM generate_series(1, 10000) u`,
		`INSERT INTO sessions (id, principal_id, channel, created_at)
			SELECT u, u, 'C' || (u % 200), $1::bigint - 31536000000 FROM generate_series(1, 10000) u`,
		`CREATE TEMP TABLE bench_turns ON COMMIT DROP AS
			SELECT (u - 1) * 50 + i + 1 AS turn, u, 'C' || (u % 200) AS channel,
				$1::bigint - 31536000000 + 630720000 * i + (u * 997) % 630720000 AS at
			FROM generate_series(1::bigint, 10000) u, generate_series(0::bigint, 49) i`,
		`INSERT INTO inbound (id, dedupe_key, principal_id, channel, text, state, received_at, accepted_at)
			SELECT turn, 'k' || turn, u, channel, 'hello', 'done', at, at FROM bench_turns`,
		`INSERT INTO turns (id, session_id, inbound_id, state, started_at, finished_at)
			SELECT turn, u, turn, CASE WHEN turn % 50 = 0 THEN 'failed' ELSE 'done' END, at, at + 800 + turn % 3000 FROM bench_turns`,
		`UPDATE inbound SET turn_id = id`,
		`INSERT INTO messages (id, session_id, turn_id, role, content, created_at)
			SELECT 2 * turn - 1, u, turn, 'user', CASE WHEN turn % 100000 = 0
				THEN '{"role":"user","content":"where did I leave my umbrella?"}'
				ELSE '{"role":"user","content":"hello, what is the weather like today?"}' END, at FROM bench_turns
			UNION ALL
			SELECT 2 * turn, u, turn, 'assistant', '{"role":"assistant","content":"It is sunny."}', at + 800 FROM bench_turns`,
		`INSERT INTO turn_steps (turn_id, step, input_tokens, output_tokens, created_at, model)
			SELECT turn, 1, 500 + turn % 700, 50 + turn % 90, at + 800, CASE WHEN turn % 2 = 0 THEN 'gpt-big' ELSE 'small' END FROM bench_turns`,
		`INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens)
			SELECT ts.created_at / 86400000, s.principal_id, s.channel, ts.model, count(*), sum(ts.input_tokens), sum(ts.output_tokens)
			FROM turn_steps ts JOIN turns t ON t.id = ts.turn_id JOIN sessions s ON s.id = t.session_id GROUP BY 1, 2, 3, 4`,
		// The identities go on after the rows written with their ids.
		`SELECT setval(pg_get_serial_sequence(t, 'id'), 2000000) FROM unnest(ARRAY['principals', 'sessions', 'inbound', 'turns', 'messages']) t`,
		trgm,
		`CREATE TABLE bench_seed (version INT NOT NULL, end_ms BIGINT NOT NULL)`,
		`INSERT INTO bench_seed VALUES (` + strconv.Itoa(pgBenchSeed) + `, $1)`,
	} {
		if q == "" {
			continue
		}
		var args []any
		if strings.Contains(q, "$1") {
			args = []any{end}
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `ANALYZE `+pgBenchSchema+`.principals, `+pgBenchSchema+`.sessions, `+pgBenchSchema+`.inbound, `+
		pgBenchSchema+`.turns, `+pgBenchSchema+`.messages, `+pgBenchSchema+`.turn_steps, `+pgBenchSchema+`.usage_daily`)
	return err
}
