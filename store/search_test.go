package store

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// searchDB opens a database with one session per text, each holding the
// text as a user message, and returns the sessions in the order of texts.
func searchDB(t *testing.T, texts ...string) (*DB, []agent.SessionID) {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The test indexes new messages itself (indexAll), so that it knows
	// which of them the search reads from the index.
	db.stopIndexer()
	var ids []agent.SessionID
	for i, text := range texts {
		s, err := db.ActiveSession(ctx, agent.SessionKey{
			Principal:    agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprintf("U%d", i%2)},
			Conversation: agent.Conversation{Channel: fmt.Sprintf("C%d", i)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.AppendMessages(ctx, s.ID, 0, llm.Message{Role: llm.RoleUser, Content: text}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	return db, ids
}

// indexAll indexes every message not indexed yet, as the background
// indexer does, and checks the index.
func indexAll(t *testing.T, db *DB) {
	t.Helper()
	ctx := context.Background()
	for {
		more, err := db.indexPendingStep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
	}
	if n := pendingCount(t, db); n != 0 {
		t.Fatalf("%d messages not indexed after indexAll", n)
	}
	if _, err := db.execSQL(ctx, `INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')`); err != nil {
		t.Fatalf("index integrity: %v", err)
	}
}

func pendingCount(t *testing.T, db *DB) int {
	t.Helper()
	var n int
	if err := db.r.QueryRow(`SELECT count(*) FROM messages_fts_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func sessionsOf(t *testing.T, db *DB, f ConversationFilter) []agent.SessionID {
	t.Helper()
	list, err := db.Conversations(context.Background(), f)
	if err != nil {
		t.Fatalf("Conversations(%+v): %v", f, err)
	}
	var out []agent.SessionID
	for _, c := range list {
		out = append(out, c.Session)
	}
	return out
}

// TestConversationSearchMatchesLikeSubstring checks the matching rule on
// each path (the index, and the newest messages for short text): a
// substring of the stored text, without ASCII case, % and _ literal.
func TestConversationSearchMatchesLikeSubstring(t *testing.T) {
	texts := []string{
		"The Weather is fine",         // 0
		"weatherproof boots",          // 1
		"we offer 100% refunds",       // 2
		"we offer 1000 refunds",       // 3
		"file_name.txt",               // 4
		"fileXname.txt",               // 5
		`say "hi" <script>x</script>`, // 6
		"Ünïcode straße",              // 7
		"ok",                          // 8
	}
	db, ids := searchDB(t, texts...)
	pick := func(is ...int) []agent.SessionID {
		var out []agent.SessionID
		for _, i := range is {
			out = append(out, ids[i])
		}
		slices.Reverse(out) // newest first
		return out
	}
	// First with every message stored but not indexed yet (the search
	// reads them), then with all of them in the index.
	for _, phase := range []string{"stored", "indexed"} {
		if phase == "indexed" {
			indexAll(t, db)
		} else if n := pendingCount(t, db); n != len(texts) {
			t.Fatalf("%d messages wait for the index, want %d", n, len(texts))
		}
		for _, tt := range []struct {
			name, q string
			want    []agent.SessionID
		}{
			{"word any case", "WEATHER", pick(0, 1)},
			{"inside a word", "therpro", pick(1)},
			{"percent literal", "100%", pick(2)},
			{"underscore literal", "file_name", pick(4)},
			{"underscore short run", "e_n", pick(4)},
			{"nothing", "zebra", nil},
			{"short", "ok", pick(8)},
			{"one character", "%", pick(2)},
			{"non-ASCII", "straße", pick(7)},
			{"inside markup", "script", pick(6)},
			{"invalid UTF-8", "weath\xff", nil},
		} {
			t.Run(phase+"/"+tt.name, func(t *testing.T) {
				got := sessionsOf(t, db, ConversationFilter{Search: tt.q})
				if !slices.Equal(got, tt.want) {
					t.Errorf("search %q: got sessions %v, want %v", tt.q, got, tt.want)
				}
			})
		}
	}
	// The search narrows with the other filters and pages.
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "weather", Principal: "slack:T1:U1"}), pick(1); !slices.Equal(got, want) {
		t.Errorf("search with user: got %v, want %v", got, want)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "refunds", Limit: 1}), pick(3); !slices.Equal(got, want) {
		t.Errorf("first page: got %v, want %v", got, want)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "refunds", Limit: 1, Before: ids[3]}), pick(2); !slices.Equal(got, want) {
		t.Errorf("second page: got %v, want %v", got, want)
	}
}

// TestConversationSearchManyMatches checks the search of a word in more
// messages than the index is read for: the newest sessions, paged.
func TestConversationSearchManyMatches(t *testing.T) {
	ctx := context.Background()
	db, ids := searchDB(t, "first", "second", "third")
	msgs := make([]llm.Message, searchProbe+10)
	for i := range msgs {
		msgs[i] = llm.Message{Role: llm.RoleUser, Content: fmt.Sprintf("common word %d", i)}
	}
	if err := db.AppendMessages(ctx, ids[0], 0, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendMessages(ctx, ids[2], 0, llm.Message{Role: llm.RoleUser, Content: "a COMMON word"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.searchSessions(ctx, "common"); err != nil || ok {
		t.Fatalf("searchSessions(common): ok=%v err=%v, want the newest sessions read (ok=false)", ok, err)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "common"}), []agent.SessionID{ids[2], ids[0]}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "common", Limit: 1, Before: ids[2]}), []agent.SessionID{ids[0]}; !slices.Equal(got, want) {
		t.Errorf("second page: got %v, want %v", got, want)
	}
}

// TestConversationSearchShortReadsNewestMessages checks that text too
// short for the index is looked for in the newest ShortSearchMessages
// messages only, and that longer text finds every message.
func TestConversationSearchShortReadsNewestMessages(t *testing.T) {
	ctx := context.Background()
	db, ids := searchDB(t, "xy old", "filler")
	msgs := make([]llm.Message, ShortSearchMessages)
	for i := range msgs {
		msgs[i] = llm.Message{Role: llm.RoleUser, Content: "filler"}
	}
	if err := db.AppendMessages(ctx, ids[1], 0, msgs...); err != nil {
		t.Fatal(err)
	}
	if got := sessionsOf(t, db, ConversationFilter{Search: "xy"}); len(got) != 0 {
		t.Errorf("short search beyond the newest messages: got %v, want none", got)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "xy old"}), ids[:1]; !slices.Equal(got, want) {
		t.Errorf("long search: got %v, want %v", got, want)
	}
	for q, want := range map[string]bool{"": true, "ab": true, "a%bc": true, "a_b_c": true, "abc": false, "%%abc": false, "ßßß": false} {
		if got := ShortSearch(q); got != want {
			t.Errorf("ShortSearch(%q) = %v, want %v", q, got, want)
		}
	}
}

// TestSearchIndexBackfill opens a database made before the index, with
// more messages than one step of the backfill indexes: search answers
// while the backfill runs, and once it is done from the index, which then
// holds every message and follows new ones.
func TestSearchIndexBackfill(t *testing.T) {
	ctx := context.Background()
	all, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	var before []migration
	for _, m := range all {
		if m.name == "messages_search" {
			break
		}
		before = append(before, m)
	}
	path := filepath.Join(t.TempDir(), "talon.db")
	w := rawWriter(t, path)
	if _, err := migrate(ctx, w, before, testClock); err != nil {
		t.Fatal(err)
	}
	const n = 2*indexBatch + 500
	if _, err := w.Exec(`INSERT INTO principals (id, platform, workspace, user, created_at) VALUES (1, 'slack', 'T1', 'U1', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec(`INSERT INTO sessions (id, principal_id, channel, created_at) VALUES (1, 1, 'C1', 0), (2, 1, 'C2', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec(`WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
		INSERT INTO messages (session_id, role, content, created_at)
		SELECT CASE WHEN i = 7 THEN 2 ELSE 1 END, 'user', '{"role":"user","content":"message ' || i || CASE WHEN i = 7 THEN ' needle' ELSE '' END || '"}', i FROM k`, n); err != nil {
		t.Fatal(err)
	}
	w.Close()

	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Whether or not the backfill has reached it, the old message is found.
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "needle"}), []agent.SessionID{2}; !slices.Equal(got, want) {
		t.Errorf("during backfill: got %v, want %v", got, want)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		indexing, err := db.SearchIndexing(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !indexing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the search index backlog is not empty after 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, ok, err := db.searchSessions(ctx, "needle"); err != nil || !ok {
		t.Fatalf("searchSessions after backfill: ok=%v err=%v, want the index read", ok, err)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "needle"}), []agent.SessionID{2}; !slices.Equal(got, want) {
		t.Errorf("after backfill: got %v, want %v", got, want)
	}
	if err := db.AppendMessages(ctx, 1, 0, llm.Message{Role: llm.RoleUser, Content: "a new haystack"}); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	var indexed, hay int
	if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM messages_fts WHERE content LIKE '%message%'`).Scan(&indexed); err != nil {
		t.Fatal(err)
	}
	if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM messages_fts WHERE content LIKE '%haystack%'`).Scan(&hay); err != nil {
		t.Fatal(err)
	}
	if indexed != n || hay != 1 {
		t.Errorf("index: %d old messages and %d new, want %d and 1", indexed, hay, n)
	}
	if _, err := db.execSQL(ctx, `INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')`); err != nil {
		t.Errorf("index integrity: %v", err)
	}
}

// waitIndexed waits until the background indexer has indexed every new
// message.
func waitIndexed(t *testing.T, db *DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for pendingCount(t, db) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("new messages not indexed after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSearchIndexNewMessages checks that a new message is found as soon
// as it is stored, then from the index once the background indexer has
// added it, and that deleting or editing a message, indexed or not yet,
// keeps the index in step with the messages.
func TestSearchIndexNewMessages(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := db.ActiveSession(ctx, agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"},
		Conversation: agent.Conversation{Channel: "C1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AppendMessages(ctx, s.ID, 0, llm.Message{Role: llm.RoleUser, Content: "the pelican report"}); err != nil {
		t.Fatal(err)
	}
	// Found at once, whether or not the indexer has run yet.
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "pelican"}), []agent.SessionID{s.ID}; !slices.Equal(got, want) {
		t.Errorf("just stored: got %v, want %v", got, want)
	}
	waitIndexed(t, db) // the background indexer, not the test, indexes it
	var hits int
	if err := db.r.QueryRow(`SELECT count(*) FROM messages_fts WHERE content LIKE '%pelican%'`).Scan(&hits); err != nil {
		t.Fatal(err)
	}
	if hits != 1 {
		t.Fatalf("index: %d messages with pelican, want 1", hits)
	}
	if got, want := sessionsOf(t, db, ConversationFilter{Search: "pelican"}), []agent.SessionID{s.ID}; !slices.Equal(got, want) {
		t.Errorf("indexed: got %v, want %v", got, want)
	}

	// Deleted and edited, indexed or not: the triggers of 0029.
	db.stopIndexer()
	if err := db.AppendMessages(ctx, s.ID, 0, llm.Message{Role: llm.RoleUser, Content: "the walrus report"},
		llm.Message{Role: llm.RoleUser, Content: "the heron report"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DELETE FROM messages WHERE content LIKE '%pelican%'`,                                           // indexed
		`DELETE FROM messages WHERE content LIKE '%walrus%'`,                                            // pending
		`UPDATE messages SET content = replace(content, 'heron', 'egret') WHERE content LIKE '%heron%'`, // pending
	} {
		if _, err := db.execSQL(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if n := pendingCount(t, db); n != 1 {
		t.Errorf("%d messages wait for the index, want 1 (the edited one)", n)
	}
	indexAll(t, db)
	if _, err := db.execSQL(ctx, `UPDATE messages SET content = replace(content, 'egret', 'stork') WHERE content LIKE '%egret%'`); err != nil {
		t.Fatal(err) // indexed
	}
	for q, want := range map[string]int{"pelican": 0, "walrus": 0, "heron": 0, "egret": 0, "stork": 1} {
		if got := len(sessionsOf(t, db, ConversationFilter{Search: q})); got != want {
			t.Errorf("search %q after the changes: %d sessions, want %d", q, got, want)
		}
		if err := db.r.QueryRow(`SELECT count(*) FROM messages_fts WHERE content LIKE ?`, "%"+q+"%").Scan(&hits); err != nil {
			t.Fatal(err)
		}
		if hits != want {
			t.Errorf("index: %d messages with %q, want %d", hits, q, want)
		}
	}
	if _, err := db.execSQL(ctx, `INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')`); err != nil {
		t.Errorf("index integrity: %v", err)
	}
}

// TestSearchIndexPendingBatch checks the bound of one step of the
// background indexer: pendingBytes of text, one message at least.
func TestSearchIndexPendingBatch(t *testing.T) {
	ctx := context.Background()
	db, ids := searchDB(t, strings.Repeat("big ", 20_000)) // 80 KB, more than pendingBytes alone
	small := make([]llm.Message, 10)
	for i := range small {
		small[i] = llm.Message{Role: llm.RoleUser, Content: strings.Repeat("x", 10_000)} // 10 KB each
	}
	if err := db.AppendMessages(ctx, ids[0], 0, small...); err != nil {
		t.Fatal(err)
	}
	var left []int
	for {
		more, err := db.indexPendingStep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		left = append(left, pendingCount(t, db))
	}
	// The big message alone, then as many of the 10 KB ones (stored as a
	// little more) as fit in 64 KB: 6, then the other 4.
	if want := []int{10, 4, 0}; !slices.Equal(left, want) {
		t.Errorf("messages left after each step: %v, want %v", left, want)
	}
}
