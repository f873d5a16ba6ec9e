package store

import (
	"context"
	"path/filepath"
	"testing"
)

// A database with entries from before 0021 keeps them, their numbers and
// their index; afterwards a forgotten number is never given again.
func TestMemoryIDsMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "talon.db")
	w := rawWriter(t, path)
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	var before []migration
	for _, m := range ms {
		if m.version < 21 {
			before = append(before, m)
		}
	}
	if _, err := migrate(ctx, w, before, testClock); err != nil {
		t.Fatal(err)
	}
	space := "user:slack:T1:U1"
	for i, text := range []string{"first note about ferries", "second note about trains"} {
		if _, err := w.Exec(`INSERT INTO memories (id, space, tag, author, text, created_at) VALUES (?, ?, ?, 'slack:T1:U1', ?, 1)`,
			i+1, space, MemoryTag(space), text); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()

	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.SearchMemories(ctx, []string{space}, "trains", 10)
	if err != nil || len(got) != 1 || got[0].ID != 2 {
		t.Fatalf("search after the migration: %+v, %v", got, err)
	}
	if ok, err := db.ForgetMemory(ctx, 2, space); !ok || err != nil {
		t.Fatalf("forget #2: %v, %v", ok, err)
	}
	if got, _ := db.SearchMemories(ctx, []string{space}, "trains", 10); len(got) != 0 {
		t.Errorf("forgotten entry still indexed: %+v", got)
	}
	m, err := db.SaveMemory(ctx, Memory{Space: space, Author: "slack:T1:U1", Text: "third note"}, 0)
	if err != nil || m.ID != 3 {
		t.Errorf("the next entry is #%d (%v), want #3: #2 is never given again", m.ID, err)
	}
	if got, _ := db.SearchMemories(ctx, []string{space}, "ferries", 10); len(got) != 1 || got[0].ID != 1 {
		t.Errorf("the first entry after the migration: %+v", got)
	}
}
