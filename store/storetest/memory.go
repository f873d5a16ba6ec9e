package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/talonhq/talon/store"
)

// MemoryStore is the memory's storage (memory.Store) and what `talon
// memory` reads.
type MemoryStore interface {
	SaveMemory(ctx context.Context, m store.Memory, max int) (store.Memory, error)
	SearchMemories(ctx context.Context, spaces []string, query string, limit int) ([]store.Memory, error)
	ForgetMemory(ctx context.Context, id int64, spaces ...string) (bool, error)
	ListMemories(ctx context.Context, f store.MemoryFilter, limit int) ([]store.Memory, error)
	GetMemory(ctx context.Context, id int64) (store.Memory, error)
	MemorySpaces(ctx context.Context) ([]store.MemorySpace, error)
}

var memoryTests = []test{
	{"MemorySaveSearchForget", testMemorySaveSearchForget},
	{"MemoryWordsAsFTS5FindsThem", testMemoryWords},
	{"MemoryQuerySyntaxIsInert", testMemoryQuerySyntax},
	{"MemorySpaceBound", testMemorySpaceBound},
	{"MemorySpaceBoundAcrossReplicas", testMemorySpaceBoundReplicas},
	{"MemoryIDsAreNotReused", testMemoryIDs},
}

func saveMemory(tb testing.TB, db Store, space, author, text string) store.Memory {
	tb.Helper()
	m, err := db.SaveMemory(context.Background(), store.Memory{Space: space, Author: author, Text: text}, 0)
	if err != nil {
		tb.Fatal(err)
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

// Entries are saved and found by their words, only in the spaces asked
// for, newest first; another space's entry is neither found nor forgotten
// through it; a forgotten entry is gone; everything survives a restart.
func testMemorySaveSearchForget(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	const alice, bob = "user:slack:T1:UA", "user:slack:T1:UB"
	a1 := saveMemory(t, db, alice, "slack:T1:UA", "Our staging host is staging.internal.example")
	a2 := saveMemory(t, db, alice, "slack:T1:UA", "Standup is at 9:30 in the small room")
	saveMemory(t, db, bob, "slack:T1:UB", "Bob's staging host is secret-staging.example")
	if a1.ID == 0 || a2.ID <= a1.ID || !a1.CreatedAt.Equal(t0) || a1.Space != alice || a1.Author != "slack:T1:UA" {
		t.Errorf("saved %+v then %+v; want increasing ids, the clock's time", a1, a2)
	}
	got, err := db.SearchMemories(ctx, []string{alice}, "staging HOST", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Our staging host is staging.internal.example"}, memoryTexts(got)); diff != "" {
		t.Errorf("alice's search (-want +got):\n%s", diff)
	}
	if len(got) == 1 && (got[0].ID != a1.ID || got[0].Author != "slack:T1:UA" || !got[0].CreatedAt.Equal(t0)) {
		t.Errorf("found %+v, want entry #%d as saved", got[0], a1.ID)
	}
	// Diacritics and case fold; every word must appear.
	got, _ = db.SearchMemories(ctx, []string{alice}, "stándup ROOM", 10)
	if len(got) != 1 || got[0].Text != "Standup is at 9:30 in the small room" {
		t.Errorf("folded search: got %q", memoryTexts(got))
	}
	if got, _ := db.SearchMemories(ctx, []string{alice}, "staging room", 10); len(got) != 0 {
		t.Errorf("a search for two words found entries with only one: %q", memoryTexts(got))
	}
	// Both spaces at once, newest first; the limit holds.
	got, _ = db.SearchMemories(ctx, []string{alice, bob}, "staging", 10)
	if diff := cmp.Diff([]string{"Bob's staging host is secret-staging.example", "Our staging host is staging.internal.example"}, memoryTexts(got)); diff != "" {
		t.Errorf("two spaces (-want +got):\n%s", diff)
	}
	if got, _ := db.SearchMemories(ctx, []string{alice, bob}, "staging", 1); len(got) != 1 || got[0].Space != bob {
		t.Errorf("limit 1: %q", memoryTexts(got))
	}
	if got, _ := db.SearchMemories(ctx, nil, "staging", 10); len(got) != 0 {
		t.Errorf("no spaces found %q", memoryTexts(got))
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
	if ok, err := db.ForgetMemory(ctx, a1.ID); err != nil || ok {
		t.Errorf("forget with no space: %v, %v; want false", ok, err)
	}
	if ok, err := db.ForgetMemory(ctx, a1.ID, alice); err != nil || !ok {
		t.Errorf("forget alice's entry: %v, %v; want true", ok, err)
	}
	if ok, err := db.ForgetMemory(ctx, a1.ID, alice); err != nil || ok {
		t.Errorf("forget it again: %v, %v; want false", ok, err)
	}
	if got, _ := db.SearchMemories(ctx, []string{alice}, "staging", 10); len(got) != 0 {
		t.Errorf("a forgotten entry is still found: %q", memoryTexts(got))
	}
	if _, err := db.GetMemory(ctx, a1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get forgotten: %v, want ErrNotFound", err)
	}
	if m, err := db.GetMemory(ctx, a2.ID); err != nil || m.Text != a2.Text || m.Space != alice {
		t.Errorf("get #%d: %+v, %v", a2.ID, m, err)
	}
	// After a restart the index still answers.
	db = e.reopen(t)
	got, _ = db.SearchMemories(ctx, []string{alice, bob}, "staging", 10)
	if diff := cmp.Diff([]string{"Bob's staging host is secret-staging.example"}, memoryTexts(got)); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	// A replica finds what this one saved.
	saveMemory(t, db, alice, "slack:T1:UA", "the release train leaves on Thursdays")
	if got, _ := e.replica(t).SearchMemories(ctx, []string{alice}, "release", 10); len(got) != 1 {
		t.Errorf("a replica's search: %q", memoryTexts(got))
	}
}

// Words are what FTS5's unicode61 tokenizer finds on both stores: host
// names and identifiers by their parts, words of any script, English
// stems, stop words too.
func testMemoryWords(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	const sp = "user:discord::7"
	texts := []string{
		"Staging is db-staging-02.eu-west.internal.example.com port 5432",
		"The deploy token rotates every Monday; ask ops@example.org",
		"Le café est à Zürich près de la gare",
		"東京 オフィス の Wi-Fi は 5GHz",
		"call parse_config_v2() before loadAll",
		"the",
	}
	for _, s := range texts {
		saveMemory(t, db, sp, "discord::7", s)
	}
	for _, c := range []struct {
		q    string
		want []int // indexes of texts, newest first
	}{
		{"db staging 02", []int{0}},
		{"eu-west.internal", []int{0}},
		{"5432", []int{0}},
		{"staging", []int{0}},
		{"ops@example.org", []int{1}},
		{"example", []int{1, 0}},
		{"rotate monday", []int{1}},    // stems
		{"deploying tokens", []int{1}}, // stems
		{"cafe zurich", []int{2}},      // diacritics
		{"CAFÉ", []int{2}},
		{"東京", []int{3}},
		{"wi fi 5ghz", []int{3}},
		{"parse config v2", []int{4}},
		{"loadall", []int{4}},
		{"the", []int{5, 1}}, // a stop word is a word
		{"kubernetes", nil},
	} {
		got, err := db.SearchMemories(ctx, []string{sp}, c.q, 10)
		if err != nil {
			t.Errorf("%q: %v", c.q, err)
			continue
		}
		var want []string
		for _, i := range c.want {
			want = append(want, texts[i])
		}
		if diff := cmp.Diff(want, memoryTexts(got), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("search %q (-want +got):\n%s", c.q, diff)
		}
	}
}

// Whatever a query holds, it is words to look for, never syntax: no
// error, no entry of another space, no SQL in an error.
func testMemoryQuerySyntax(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	const alice, bob = "user:discord::1", "user:discord::2"
	saveMemory(t, db, alice, "discord::1", "the deploy key lives near the ops vault")
	saveMemory(t, db, bob, "discord::2", "bob's private note about the deploy")
	queries := []string{
		`"`, `""`, `"deploy`, `deploy"`, `'`, `deploy' OR 1=1 --`, `*`, `deploy*`, `* OR *`, `deploy:*`, `deploy & !vault`,
		`NEAR(deploy vault)`, `NEAR(deploy vault, 2)`, `deploy NEAR vault`, `text: deploy`, `tag: m00`, `{text tag}: deploy`,
		`- deploy`, `^deploy`, `deploy AND`, `OR`, `NOT deploy`, `AND OR NOT`, `(deploy`, `deploy)`, `)(`, `+`, `:`, `<->`, `deploy <-> vault`,
		`bob`, "deploy\x00vault", "\xff\xfe deploy", "d\xc3", strings.Repeat("deploy ", 1000), strings.Repeat("x", 10000),
		`memories_fts MATCH 'bob'`, `rank:bm25`, `"deploy" "vault"`, `'deploy' | 'bob'`, `$1`, `\`, `E'\\x00'`,
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
	for _, q := range []string{`NEAR(deploy vault)`, `'deploy' | 'vault'`, `deploy & !vault`} {
		if got, _ := db.SearchMemories(ctx, []string{alice, bob}, q, 5); len(got) != 1 || got[0].Space != alice {
			t.Errorf("%q read as words: got %q, want alice's entry", q, memoryTexts(got))
		}
	}
	// A space is a value, never syntax either.
	for _, sp := range []string{`user:x' OR '1'='1`, `"`, "user:\x00"} {
		if got, err := db.SearchMemories(ctx, []string{sp}, "deploy", 5); err != nil || len(got) != 0 {
			t.Errorf("space %q: %q, %v", sp, memoryTexts(got), err)
		}
	}
}

// A space holds at most max entries; invalid UTF-8 is refused; a list by
// author pages by id.
func testMemorySpaceBound(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	for i := range 3 {
		if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:a:b:c", Author: "a:b:c", Text: strings.Repeat("n", i+1)}, 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:a:b:c", Author: "a:b:c", Text: "four"}, 3); !errors.Is(err, store.ErrMemoryFull) {
		t.Errorf("fourth entry: %v, want ErrMemoryFull", err)
	}
	if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:x:y:z", Author: "a:b:c", Text: "elsewhere", Taint: "web"}, 3); err != nil {
		t.Errorf("another space: %v", err)
	}
	if _, err := db.SaveMemory(ctx, store.Memory{Space: "user:a:b:c", Author: "a:b:c", Text: "bad \xff"}, 0); err == nil {
		t.Error("invalid UTF-8 saved")
	}
	if _, err := db.SaveMemory(ctx, store.Memory{Space: "", Author: "a:b:c", Text: "no space"}, 0); err == nil {
		t.Error("an entry without a space saved")
	}
	ms, err := db.ListMemories(ctx, store.MemoryFilter{Author: "a:b:c"}, 2)
	if err != nil || len(ms) != 2 || ms[0].Text != "elsewhere" || ms[0].Taint != "web" || ms[1].Text != "nnn" {
		t.Errorf("list by author: %q, %v", memoryTexts(ms), err)
	}
	ms, _ = db.ListMemories(ctx, store.MemoryFilter{Space: "user:a:b:c", Before: ms[1].ID}, 10)
	if diff := cmp.Diff([]string{"nn", "n"}, memoryTexts(ms)); diff != "" {
		t.Errorf("next page (-want +got):\n%s", diff)
	}
	if ms, _ := db.ListMemories(ctx, store.MemoryFilter{Space: "user:x:y:z", Author: "a:b:c"}, 0); len(ms) != 1 {
		t.Errorf("space and author: %q", memoryTexts(ms))
	}
	if _, err := db.ListMemories(ctx, store.MemoryFilter{}, 10); err == nil {
		t.Error("a list of everything was not refused")
	}
	sp, err := db.MemorySpaces(ctx)
	want := []store.MemorySpace{{Space: "user:a:b:c", Entries: 3, Newest: t0}, {Space: "user:x:y:z", Entries: 1, Newest: t0}}
	if diff := cmp.Diff(want, sp); err != nil || diff != "" {
		t.Errorf("spaces (-want +got):\n%s%v", diff, err)
	}
}

// Two replicas filling one space at once stop at its bound together.
func testMemorySpaceBoundReplicas(t *testing.T, e *env) {
	ctx := context.Background()
	dbs := []Store{e.db, e.replica(t)}
	const max = 5
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		full int
	)
	for i := range 12 {
		wg.Go(func() {
			_, err := dbs[i%2].SaveMemory(ctx, store.Memory{Space: "channel:slack:C1", Author: "slack:T1:U1", Text: fmt.Sprint("note ", i)}, max)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, store.ErrMemoryFull):
				full++
			case err != nil:
				t.Errorf("save %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	ms, err := e.db.ListMemories(ctx, store.MemoryFilter{Space: "channel:slack:C1"}, 100)
	if err != nil || len(ms) != max || full != 12-max {
		t.Errorf("%d entries saved, %d refused (%v); want %d and %d", len(ms), full, err, max, 12-max)
	}
}

// A forgotten entry's number is never given to another entry, also after
// a restart.
func testMemoryIDs(t *testing.T, e *env) {
	ctx := context.Background()
	a := saveMemory(t, e.db, "user:a:b:c", "a:b:c", "first")
	b := saveMemory(t, e.db, "user:a:b:c", "a:b:c", "second")
	for _, m := range []store.Memory{b, a} {
		if ok, err := e.db.ForgetMemory(ctx, m.ID, "user:a:b:c"); !ok || err != nil {
			t.Fatalf("forget: %v, %v", ok, err)
		}
	}
	db := e.reopen(t)
	if c := saveMemory(t, db, "user:x:y:z", "x:y:z", "third"); c.ID <= b.ID {
		t.Errorf("the next entry got #%d, after #%d was forgotten", c.ID, b.ID)
	}
}
