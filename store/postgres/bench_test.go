package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

// The console's conversation search on PostgreSQL, with the trigram index
// of migration 0022 and (the reference, in the same run) without it: a
// word in 11 messages (of 11 sessions) of benchSearchMessages, and a word in every one (the
// newest 50 sessions are listed). Run with
//
//	TALON_TEST_POSTGRES=… go test ./store/postgres -run '^$' -bench ConversationSearch -benchtime 20x
const (
	benchSearchSessions = 10_000
	benchSearchMessages = 200_000
)

func BenchmarkConversationSearch(b *testing.B) {
	ctx := context.Background()
	u := pgtest.URL(b)
	db, err := postgres.Open(ctx, u)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	p := pgtest.Pool(b, u)
	var trgm bool
	if err := p.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'messages_content_trgm')`).Scan(&trgm); err != nil {
		b.Fatal(err)
	}
	if !trgm {
		b.Skip("pg_trgm is not installed on this server")
	}
	for _, q := range []string{
		`INSERT INTO principals (platform, workspace, "user", created_at) SELECT 'slack', 'T1', 'U' || i, 0 FROM generate_series(1, $1) i`,
		`INSERT INTO sessions (principal_id, channel, created_at) SELECT id, 'C1', id FROM principals`,
		`INSERT INTO messages (session_id, role, content, created_at)
			SELECT 1 + i % $1, 'user', '{"role":"user","content":"note ' || i || ' about ' || md5(i::text) ||
				CASE WHEN i % 19997 = 7 THEN ' the Quokka report' ELSE '' END || '"}', i
			FROM generate_series(1, $2) i`,
		`ANALYZE`,
	} {
		args := []any{}
		switch {
		case strings.HasPrefix(q, `INSERT INTO principals`):
			args = []any{benchSearchSessions}
		case strings.HasPrefix(q, `INSERT INTO messages`):
			args = []any{benchSearchSessions, benchSearchMessages}
		}
		if _, err := p.Exec(ctx, q, args...); err != nil {
			b.Fatalf("%.40s: %v", q, err)
		}
	}
	search := func(b *testing.B, text string, want int) {
		for b.Loop() {
			cs, err := db.Conversations(ctx, store.ConversationFilter{Search: text, Limit: 50})
			if err != nil {
				b.Fatal(err)
			}
			if len(cs) != want {
				b.Fatalf("search %q: %d conversations, want %d", text, len(cs), want)
			}
		}
	}
	run := func(name string) {
		b.Run(name+"/rare", func(b *testing.B) { search(b, "quokka", 11) })
		b.Run(name+"/common", func(b *testing.B) { search(b, "about", 50) })
	}
	run("trigram")
	if _, err := p.Exec(ctx, `DROP INDEX messages_content_trgm`); err != nil {
		b.Fatal(err)
	}
	run("scan")
}
