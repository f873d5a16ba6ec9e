package store_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

// The memory's behaviour is held by the conformance suite (store/storetest,
// memory.go) on both stores; these are SQLite's own.

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
