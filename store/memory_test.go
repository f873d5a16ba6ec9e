package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

// The driver has FTS5 compiled in: the migration creates the index, and a
// MATCH query runs against it.
func TestMemoryFTS5IsCompiledIn(t *testing.T) {
	db, _ := open(t)
	var opt int
	store.QueryRow(t, db, `SELECT sqlite_compileoption_used('ENABLE_FTS5')`, nil, &opt)
	if opt != 1 {
		t.Fatal("modernc.org/sqlite was built without FTS5")
	}
	var n int
	store.QueryRow(t, db, `SELECT count(*) FROM memories_fts WHERE memories_fts MATCH '"x"'`, nil, &n)
}

func saveMemory(t *testing.T, db *store.DB, space, author, text string) store.Memory {
	t.Helper()
	m, err := db.SaveMemory(context.Background(), store.Memory{Space: space, Author: author, Text: text}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func memoryTexts(ms []store.Memory) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Text
	}
	return out
}

func TestMemorySaveSearchForget(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	const alice, bob = "user:slack:T1:UA", "user:slack:T1:UB"
	a1 := saveMemory(t, db, alice, "slack:T1:UA", "Our staging host is staging.internal.example")
	saveMemory(t, db, alice, "slack:T1:UA", "Standup is at 9:30 in the small room")
	saveMemory(t, db, bob, "slack:T1:UB", "Bob's staging host is secret-staging.example")

	got, err := db.SearchMemories(ctx, []string{alice}, "staging HOST", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Our staging host is staging.internal.example"}, memoryTexts(got)); diff != "" {
		t.Errorf("alice's search (-want +got):\n%s", diff)
	}
	// Diacritics and case fold; every word must appear.
	got, _ = db.SearchMemories(ctx, []string{alice}, "stándup ROOM", 10)
	if len(got) != 1 || got[0].Text != "Standup is at 9:30 in the small room" {
		t.Errorf("folded search: got %q", memoryTexts(got))
	}
	if got, _ := db.SearchMemories(ctx, []string{alice}, "staging room", 10); len(got) != 0 {
		t.Errorf("a search for two words found entries with only one: %q", memoryTexts(got))
	}
	// No words: the newest entries.
	got, _ = db.SearchMemories(ctx, []string{alice}, "  ", 10)
	if diff := cmp.Diff([]string{"Standup is at 9:30 in the small room", "Our staging host is staging.internal.example"}, memoryTexts(got)); diff != "" {
		t.Errorf("empty search (-want +got):\n%s", diff)
	}
	// Another space's entry is neither found nor forgotten by id.
	if ok, err := db.ForgetMemory(ctx, a1.ID, bob); err != nil || ok {
		t.Errorf("forget alice's entry from bob's space: %v, %v; want false", ok, err)
	}
	if ok, err := db.ForgetMemory(ctx, a1.ID, alice); err != nil || !ok {
		t.Errorf("forget alice's entry: %v, %v; want true", ok, err)
	}
	if got, _ := db.SearchMemories(ctx, []string{alice}, "staging", 10); len(got) != 0 {
		t.Errorf("a forgotten entry is still found: %q", memoryTexts(got))
	}
	if _, err := db.GetMemory(ctx, a1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get forgotten: %v, want ErrNotFound", err)
	}
	// After a reopen the index still answers.
	db.Close()
	db = openAt(t, path)
	got, _ = db.SearchMemories(ctx, []string{alice, bob}, "staging", 10)
	if diff := cmp.Diff([]string{"Bob's staging host is secret-staging.example"}, memoryTexts(got)); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
}

// Whatever a query holds, it is words to look for, never FTS5 syntax: no
// error, no entry of another space, no SQL in an error.
func TestMemorySearchQuerySyntaxIsInert(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	const alice, bob = "user:discord::1", "user:discord::2"
	saveMemory(t, db, alice, "discord::1", "the deploy key lives near the ops vault")
	saveMemory(t, db, bob, "discord::2", "bob's private note about the deploy")
	queries := []string{
		`"`, `""`, `"deploy`, `deploy"`, `'`, `deploy' OR 1=1 --`, `*`, `deploy*`, `* OR *`,
		`NEAR(deploy vault)`, `NEAR(deploy vault, 2)`, `deploy NEAR vault`, `text: deploy`, `tag: m00`, `{text tag}: deploy`,
		`- deploy`, `^deploy`, `deploy AND`, `OR`, `NOT deploy`, `AND OR NOT`, `(deploy`, `deploy)`, `)(`, `+`, `:`,
		`bob`, "deploy\x00vault", "\xff\xfe deploy", "d\xc3", strings.Repeat("deploy ", 1000), strings.Repeat("x", 10000),
		`memories_fts MATCH 'bob'`, `rank:bm25`, `"deploy" "vault"`,
	}
	for _, q := range queries {
		got, err := db.SearchMemories(ctx, []string{alice}, q, 5)
		if err != nil {
			t.Errorf("query %.40q: %v", q, err)
			continue
		}
		for _, m := range got {
			if m.Space != alice {
				t.Errorf("query %.40q found an entry of %s", q, m.Space)
			}
		}
	}
	got, _ := db.SearchMemories(ctx, []string{alice}, `NEAR(deploy vault)`, 5)
	if len(got) != 1 {
		t.Errorf("NEAR(deploy vault) read as words: got %d entries, want 1", len(got))
	}
}

func TestMemoryTerms(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"staging host", []string{"staging", "host"}},
		{`"quoted" NEAR(a b) col:x *`, []string{"quoted", "NEAR", "a", "b", "col", "x"}},
		{"Host host HOST", []string{"Host"}},
		{"café straße 東京", []string{"café", "straße", "東京"}},
		{"a\xffb", []string{"a", "b"}},
		{strings.Repeat("y", 65) + " ok", []string{"ok"}},
		{strings.Repeat("w ", 3) + strings.Repeat("a b c d e f g h i j k l m n o p q r ", 2), []string{"w", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o"}},
	}
	for _, c := range cases {
		if diff := cmp.Diff(c.want, store.MemoryTerms(c.in)); diff != "" {
			t.Errorf("MemoryTerms(%q) (-want +got):\n%s", c.in, diff)
		}
	}
}

func TestMemorySpaceBound(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	for i := range 3 {
		if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:a:b:c", Author: "a:b:c", Text: strings.Repeat("n", i+1)}, 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:a:b:c", Author: "a:b:c", Text: "four"}, 3); !errors.Is(err, store.ErrMemoryFull) {
		t.Errorf("fourth entry: %v, want ErrMemoryFull", err)
	}
	if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:a:b:c", Author: "a:b:c", Text: "bad \xff"}, 0); err == nil {
		t.Error("invalid UTF-8 saved")
	}
	ms, err := db.ListMemories(ctx, store.MemoryFilter{Author: "a:b:c"}, 2)
	if err != nil || len(ms) != 2 || ms[0].Text != "nnn" {
		t.Errorf("list by author: %q, %v", memoryTexts(ms), err)
	}
	ms, _ = db.ListMemories(ctx, store.MemoryFilter{Space: "user:a:b:c", Before: ms[1].ID}, 10)
	if diff := cmp.Diff([]string{"n"}, memoryTexts(ms)); diff != "" {
		t.Errorf("next page (-want +got):\n%s", diff)
	}
	sp, err := db.MemorySpaces(ctx)
	if err != nil || len(sp) != 1 || sp[0].Entries != 3 {
		t.Errorf("spaces: %+v, %v", sp, err)
	}
}

// A forgotten entry's number is never given to another entry.
func TestMemoryIDsAreNotReused(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	a := saveMemory(t, db, "user:a:b:c", "a:b:c", "first")
	if ok, err := db.ForgetMemory(ctx, a.ID, "user:a:b:c"); !ok || err != nil {
		t.Fatalf("forget: %v, %v", ok, err)
	}
	if b := saveMemory(t, db, "user:x:y:z", "x:y:z", "second"); b.ID <= a.ID {
		t.Errorf("the next entry got #%d, after #%d was forgotten", b.ID, a.ID)
	}
}
