package store_test

import (
	"testing"

	"github.com/talonhq/talon/store"
)

func TestReopenAppliesNoMigrationTwice(t *testing.T) {
	db, path := open(t)
	want := store.CountRows(t, db)["schema_migrations"]
	var appliedAt int64
	store.QueryRow(t, db, "SELECT applied_at FROM schema_migrations WHERE version = 1", nil, &appliedAt)
	db.Close()
	for range 2 {
		db = openAt(t, path)
		if got := store.CountRows(t, db)["schema_migrations"]; got != want {
			t.Errorf("after reopening: %d migrations recorded, want %d", got, want)
		}
		var again int64
		store.QueryRow(t, db, "SELECT applied_at FROM schema_migrations WHERE version = 1", nil, &again)
		if again != appliedAt {
			t.Errorf("migration 1 applied at %d, then at %d", appliedAt, again)
		}
		db.Close()
	}
}
