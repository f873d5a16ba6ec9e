package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/storetest"
	"github.com/talonhq/talon/vault"
)

// The SQLite store runs the conformance suite, each test on a file of its
// own; a restart is a close and an Open of the same file, a replica a
// second DB open on it (as a second process would).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		path := filepath.Join(t.TempDir(), "talon.db")
		var raw *sql.DB
		t.Cleanup(func() {
			if raw != nil {
				raw.Close()
			}
		})
		return storetest.Harness{
			Open: func(tb testing.TB, now func() time.Time) storetest.Store {
				db, err := store.Open(context.Background(), path)
				if err != nil {
					tb.Fatal(err)
				}
				db.Now = now
				tb.Cleanup(func() { db.Close() })
				return db
			},
			Vault: func(s storetest.Store) vault.Storage { return s.(*store.DB).VaultStorage() },
			Query: func(tb testing.TB, q string, args []any, dest ...any) {
				tb.Helper()
				if raw == nil {
					var err error
					if raw, err = sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)"); err != nil {
						tb.Fatal(err)
					}
				}
				if err := raw.QueryRow(q, args...).Scan(dest...); err != nil {
					tb.Fatalf("%s: %v", q, err)
				}
			},
		}
	})
}
