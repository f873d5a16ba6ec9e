package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

func TestVaultEntries(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	created := time.UnixMilli(1_700_000_000_000).UTC()
	e := store.VaultEntry{
		User: "terminal::local", Name: "github", Version: 1, Hosts: []string{"api.github.com"},
		Injection: `{"kind":"bearer"}`, KeyID: []byte{1, 2}, Salt: []byte{3}, Nonce: []byte{4}, Ciphertext: []byte{5, 6},
		CreatedAt: created,
	}
	if err := db.PutVaultEntry(ctx, e); err != nil {
		t.Fatal(err)
	}
	other := e
	other.User, other.Name = "slack:T1:U1", "jira"
	if err := db.PutVaultEntry(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetVaultEntry(ctx, e.User, e.Name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("get (-want +got):\n%s", diff)
	}
	if _, err := db.GetVaultEntry(ctx, "terminal::local", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing entry: %v", err)
	}
	// Replacing keeps one row and updates the sealed fields.
	e.Ciphertext = []byte{9, 9}
	if err := db.PutVaultEntry(ctx, e); err != nil {
		t.Fatal(err)
	}
	mine, err := db.ListVaultEntries(ctx, "terminal::local")
	if err != nil || len(mine) != 1 || !cmp.Equal(mine[0].Ciphertext, []byte{9, 9}) {
		t.Fatalf("list mine: %v %+v", err, mine)
	}
	all, _ := db.ListVaultEntries(ctx, "")
	if len(all) != 2 {
		t.Errorf("list all: %d entries", len(all))
	}

	at := created.Add(time.Hour)
	if err := db.TouchVaultEntry(ctx, e.User, e.Name, at); err != nil {
		t.Fatal(err)
	}
	got, _ = db.GetVaultEntry(ctx, e.User, e.Name)
	if !got.LastUsed.Equal(at) {
		t.Errorf("last used %v, want %v", got.LastUsed, at)
	}

	if check, err := db.VaultKeyCheck(ctx); err != nil || check != nil {
		t.Errorf("key check before set: %v %v", check, err)
	}
	if err := db.SetVaultKeyCheck(ctx, []byte("k1")); err != nil {
		t.Fatal(err)
	}
	rotated := []store.VaultEntry{e}
	rotated[0].Ciphertext = []byte{7}
	if err := db.ReplaceVaultEntries(ctx, rotated, []byte("k2")); err != nil {
		t.Fatal(err)
	}
	all, _ = db.ListVaultEntries(ctx, "")
	check, _ := db.VaultKeyCheck(ctx)
	if len(all) != 1 || !cmp.Equal(all[0].Ciphertext, []byte{7}) || string(check) != "k2" {
		t.Errorf("after replace: %+v check %q", all, check)
	}

	ok, err := db.DeleteVaultEntry(ctx, e.User, e.Name)
	if err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, _ := db.DeleteVaultEntry(ctx, e.User, e.Name); ok {
		t.Error("second delete reported a row")
	}

	for i, r := range []string{"injected", "host_not_bound"} {
		if err := db.AppendVaultAudit(ctx, store.VaultAudit{At: created.Add(time.Duration(i) * time.Second), User: e.User, Name: "github", Host: "api.github.com", Tool: "github", Allowed: i == 0, Reason: r}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := db.RecentVaultAudit(ctx, 1)
	if err != nil || len(evs) != 1 || evs[0].Reason != "host_not_bound" || evs[0].Allowed {
		t.Errorf("recent audit: %v %+v", err, evs)
	}
	_ = path
}
