package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/vault"
)

var vaultTests = []test{
	{"VaultEntries", testVaultEntries},
	{"VaultRewrite", testVaultRewrite},
	{"VaultEntriesStaySealed", testVaultEntriesStaySealed},
}

func testVaultEntries(t *testing.T, e *env) {
	ctx := context.Background()
	st := e.vault()
	created := time.UnixMilli(1_700_000_000_000).UTC()
	ent := vault.SealedEntry{
		User: "terminal::local", Name: "github", Version: 1, Hosts: []string{"api.github.com"},
		Injection: vault.Injection{Kind: vault.InjectHeader, Name: "X-Key", Prefix: "Key "},
		KeyID:     []byte{1, 2}, Salt: []byte{3}, Nonce: []byte{4}, Ciphertext: []byte{5, 6},
		CreatedAt: created,
	}
	if err := st.PutEntry(ctx, ent); err != nil {
		t.Fatal(err)
	}
	other := ent
	other.User, other.Name = "slack:T1:U1", "jira"
	if err := st.PutEntry(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetEntry(ctx, ent.User, ent.Name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ent, got); diff != "" {
		t.Errorf("get (-want +got):\n%s", diff)
	}
	if _, err := st.GetEntry(ctx, "terminal::local", "nope"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("missing entry: %v", err)
	}
	// Replacing keeps one row and updates the sealed fields.
	ent.Ciphertext = []byte{9, 9}
	if err := st.PutEntry(ctx, ent); err != nil {
		t.Fatal(err)
	}
	mine, err := st.ListEntries(ctx, "terminal::local")
	if err != nil || len(mine) != 1 || !cmp.Equal(mine[0].Ciphertext, []byte{9, 9}) {
		t.Fatalf("list mine: %v %+v", err, mine)
	}
	all, _ := st.ListEntries(ctx, "")
	if len(all) != 2 || all[0].User != "slack:T1:U1" || all[1].User != "terminal::local" {
		t.Errorf("list all: %+v, want two, by user", all)
	}

	at := created.Add(time.Hour)
	if err := st.Touch(ctx, ent.User, ent.Name, at); err != nil {
		t.Fatal(err)
	}
	got, _ = st.GetEntry(ctx, ent.User, ent.Name)
	if !got.LastUsed.Equal(at) {
		t.Errorf("last used %v, want %v", got.LastUsed, at)
	}
	// Replacing an entry keeps its last use.
	if err := st.PutEntry(ctx, ent); err != nil {
		t.Fatal(err)
	}
	if got, _ = st.GetEntry(ctx, ent.User, ent.Name); !got.LastUsed.Equal(at) {
		t.Errorf("last used after a replace %v, want %v", got.LastUsed, at)
	}

	if check, err := st.KeyCheck(ctx); err != nil || check != nil {
		t.Errorf("key check before set: %v %v", check, err)
	}
	if err := st.SetKeyCheck(ctx, []byte("k1")); err != nil {
		t.Fatal(err)
	}
	rotated := []vault.SealedEntry{ent}
	rotated[0].Ciphertext = []byte{7}
	if err := st.ReplaceAll(ctx, rotated, []byte("k2")); err != nil {
		t.Fatal(err)
	}
	all, _ = st.ListEntries(ctx, "")
	check, _ := st.KeyCheck(ctx)
	if len(all) != 1 || !cmp.Equal(all[0].Ciphertext, []byte{7}) || string(check) != "k2" {
		t.Errorf("after replace: %+v check %q", all, check)
	}

	ok, err := st.DeleteEntry(ctx, ent.User, ent.Name)
	if err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, _ := st.DeleteEntry(ctx, ent.User, ent.Name); ok {
		t.Error("second delete reported a row")
	}

	for i, r := range []vault.Reason{vault.ReasonInjected, vault.ReasonHostNotBound} {
		if err := st.AppendAudit(ctx, vault.AuditEvent{Time: created.Add(time.Duration(i) * time.Second), User: ent.User, Name: "github", Host: "api.github.com", Tool: "github", Allowed: i == 0, Reason: r}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := st.RecentAudit(ctx, 1)
	want := []vault.AuditEvent{{Time: created.Add(time.Second), User: ent.User, Name: "github", Host: "api.github.com", Tool: "github", Reason: vault.ReasonHostNotBound}}
	if diff := cmp.Diff(want, evs); err != nil || diff != "" {
		t.Errorf("recent audit: %v (-want +got):\n%s", err, diff)
	}
	if evs, err := st.RecentAudit(ctx, 10); err != nil || len(evs) != 2 || !evs[1].Allowed {
		t.Errorf("recent audit, all: %+v, %v", evs, err)
	}
}

// Rewrite is all or nothing: an entry to remove that changed meanwhile
// makes it write nothing.
func testVaultRewrite(t *testing.T, e *env) {
	ctx := context.Background()
	st := e.vault()
	old := vault.SealedEntry{User: "discord:G1:U1", Name: "gh", Version: 1, Hosts: []string{"api.github.com"},
		Injection: vault.Injection{Kind: vault.InjectBearer}, KeyID: []byte{1}, Salt: []byte{2}, Nonce: []byte{3}, Ciphertext: []byte{4},
		CreatedAt: time.UnixMilli(1_700_000_000_000).UTC(), LastUsed: time.UnixMilli(1_700_000_001_000).UTC()}
	if err := st.PutEntry(ctx, old); err != nil {
		t.Fatal(err)
	}
	moved := old
	moved.User, moved.Nonce = "discord::U1", []byte{9}
	ev := vault.AuditEvent{Time: old.CreatedAt, User: "discord:G2:U1", Name: "gh", Reason: vault.ReasonMergedDuplicate}

	stale := old
	stale.Nonce = []byte{8}
	if err := st.Rewrite(ctx, []vault.SealedEntry{stale}, []vault.SealedEntry{moved}, []vault.AuditEvent{ev}); !errors.Is(err, vault.ErrConflict) {
		t.Fatalf("rewrite of a changed entry: %v, want ErrConflict", err)
	}
	all, _ := st.ListEntries(ctx, "")
	evs, _ := st.RecentAudit(ctx, 10)
	if diff := cmp.Diff([]vault.SealedEntry{old}, all); diff != "" || len(evs) != 0 {
		t.Errorf("a refused rewrite wrote something: %d events, entries (-want +got):\n%s", len(evs), diff)
	}

	// A failure after the removal (a row the database refuses) undoes it.
	broken := moved
	broken.KeyID = nil // key_id is NOT NULL
	if err := st.Rewrite(ctx, []vault.SealedEntry{old}, []vault.SealedEntry{broken}, []vault.AuditEvent{ev}); err == nil {
		t.Fatal("rewrite with a row the database refuses succeeded")
	}
	all, _ = st.ListEntries(ctx, "")
	evs, _ = st.RecentAudit(ctx, 10)
	if diff := cmp.Diff([]vault.SealedEntry{old}, all); diff != "" || len(evs) != 0 {
		t.Errorf("a failed rewrite left a change: %d events, entries (-want +got):\n%s", len(evs), diff)
	}

	if err := st.Rewrite(ctx, []vault.SealedEntry{old}, []vault.SealedEntry{moved}, []vault.AuditEvent{ev}); err != nil {
		t.Fatal(err)
	}
	all, _ = st.ListEntries(ctx, "")
	evs, _ = st.RecentAudit(ctx, 10)
	if diff := cmp.Diff([]vault.SealedEntry{moved}, all); diff != "" {
		t.Errorf("entries after the rewrite (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]vault.AuditEvent{ev}, evs); diff != "" {
		t.Errorf("audit after the rewrite (-want +got):\n%s", diff)
	}
}

// A real vault seals its entries into the store and opens them again after
// a restart; the value is nowhere in the stored row.
func testVaultEntriesStaySealed(t *testing.T, e *env) {
	ctx := context.Background()
	key, err := vault.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.New(ctx, key, e.vault())
	if err != nil {
		t.Fatal(err)
	}
	const secret = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
	if err := v.Set(ctx, vault.Entry{User: "slack:T1:U1", Name: "github", Value: vault.NewSecret([]byte(secret)),
		Hosts: []string{"api.github.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}}); err != nil {
		t.Fatal(err)
	}
	var stored []byte
	e.query(t, "SELECT ciphertext FROM vault_entries WHERE name = ?", []any{"github"}, &stored)
	if len(stored) == 0 || bytes.Contains(stored, []byte(secret)) {
		t.Errorf("the stored ciphertext is empty or holds the value")
	}
	e.reopen(t)
	v, err = vault.New(ctx, key, e.vault())
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Credential(ctx, "slack:T1:U1", "github", "api.github.com", "https", "github")
	if err != nil || string(got.Value.Reveal()) != secret {
		t.Errorf("the entry after a restart does not open: %v", err)
	}
	other, err := vault.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.New(ctx, other, e.vault()); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("another key opens the vault: %v, want ErrWrongKey", err)
	}
}
