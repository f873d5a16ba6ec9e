package vault_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// seed stores an entry created at the given time, by sealing it under the
// fixture's vault and rewriting its creation time in storage.
func (f *fixture) seed(t *testing.T, user, name, value string, created time.Time) {
	t.Helper()
	f.set(t, user, name, value, "api.example.com")
	rawExec(t, f.dir, `UPDATE vault_entries SET created_at = ?, last_used_at = ? WHERE user = ? AND name = ?`,
		created.UnixMilli(), created.Add(time.Minute).UnixMilli(), user, name)
}

func (f *fixture) value(t *testing.T, v *vault.Vault, user, name string) string {
	t.Helper()
	e, err := v.Credential(context.Background(), user, name, "api.example.com", "https", "test")
	if err != nil {
		return "error: " + err.Error()
	}
	return string(e.Value.Reveal())
}

// TestRenameUsers renames the entries of Discord principals that named a
// guild, and of a Slack Enterprise Grid user, to their global principal, as
// a start-up after migration 0005 does.
func TestRenameUsers(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	f.seed(t, "discord::U7", "gh", "dm-value-00000000", t0) // oldest
	f.seed(t, "discord:G1:U7", "gh", "guild1-value-0000", t0.Add(1*time.Hour))
	f.seed(t, "discord:G2:U7", "gh", "guild2-value-0000", t0.Add(2*time.Hour)) // newest: kept
	f.seed(t, "discord:G1:U7", "jira", "jira-value-000000", t0)
	f.seed(t, "slack:T1:W9", "x", "grid-value-000000", t0)
	f.seed(t, "slack:T1:U5", "y", "workspace-value-0", t0)
	f.seed(t, "discord:G3:U8", "z", "tampered-value-00", t0)
	rawExec(t, f.dir, `UPDATE vault_entries SET ciphertext = CAST(zeroblob(length(ciphertext)) AS BLOB) WHERE name = 'z'`)

	got, err := f.v.RenameUsers(ctx, store.GlobalUser)
	if err != nil {
		t.Fatal(err)
	}
	if got.Moved != 3 || got.Unopened != 1 || len(got.Dropped) != 2 {
		t.Errorf("RenameUsers = moved %d, unopened %d, dropped %v; want 3, 1 and 2", got.Moved, got.Unopened, got.Dropped)
	}
	var dropped []string
	for _, d := range got.Dropped {
		dropped = append(dropped, d.User+" "+d.Name+" "+string(d.Reason))
	}
	if diff := cmp.Diff([]string{"discord:G1:U7 gh merged_duplicate", "discord::U7 gh merged_duplicate"}, dropped); diff != "" {
		t.Errorf("dropped (-want +got):\n%s", diff)
	}

	v, err := f.reopen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	es, err := v.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, e := range es {
		rows = append(rows, e.User+" "+e.Name+" "+e.CreatedAt.Sub(t0).String()+" "+e.LastUsed.Sub(e.CreatedAt).String())
	}
	want := []string{
		"discord::U7 gh 2h0m0s 1m0s", "discord::U7 jira 0s 1m0s", "discord:G3:U8 z 0s 1m0s",
		"slack::W9 x 0s 1m0s", "slack:T1:U5 y 0s 1m0s",
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("entries after the rename: user, name, created, last used (-want +got):\n%s", diff)
	}
	for _, c := range []struct{ user, name, want string }{
		{"discord::U7", "gh", "guild2-value-0000"}, {"discord::U7", "jira", "jira-value-000000"},
		{"slack::W9", "x", "grid-value-000000"}, {"slack:T1:U5", "y", "workspace-value-0"},
	} {
		if got := f.value(t, v, c.user, c.name); got != c.want {
			t.Errorf("%s %s opens to %q, want the value it was stored with", c.user, c.name, got)
		}
	}
	evs, _ := v.RecentAudit(ctx, 100)
	merged := 0
	for _, ev := range evs {
		if ev.Reason == vault.ReasonMergedDuplicate {
			merged++
		}
	}
	if merged != 2 {
		t.Errorf("%d merged_duplicate audit events, want 2", merged)
	}

	// Idempotent: nothing more to do, nothing written.
	again, err := v.RenameUsers(ctx, store.GlobalUser)
	if err != nil || again.Moved != 0 || len(again.Dropped) != 0 || again.Unopened != 1 {
		t.Errorf("second RenameUsers = %+v, %v; want nothing done", again, err)
	}
	if evs2, _ := v.RecentAudit(ctx, 100); len(evs2) != len(evs) {
		t.Errorf("the second run wrote %d audit events", len(evs2)-len(evs))
	}
}

// racingStorage changes an entry between the vault's read and its write,
// as another process could.
type racingStorage struct {
	store.VaultStorage
	race func()
}

func (r racingStorage) Rewrite(ctx context.Context, remove, add []vault.SealedEntry, events []vault.AuditEvent) error {
	r.race()
	return r.VaultStorage.Rewrite(ctx, remove, add, events)
}

// TestRenameUsersConflict: when an entry changes meanwhile, nothing is
// written (the old state stays whole) and the error says so; a second call
// finishes.
func TestRenameUsersConflict(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	f.set(t, "discord:G1:U7", "gh", "guild1-value-0000", "api.example.com")
	f.set(t, "discord:G1:U7", "jira", "jira-value-000000", "api.example.com")
	key, err := vault.LoadKeyFile(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	st := racingStorage{VaultStorage: f.db.VaultStorage(), race: func() {
		f.set(t, "discord:G1:U7", "jira", "jira-value-changed", "api.example.com")
	}}
	v, err := vault.New(ctx, key, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.RenameUsers(ctx, store.GlobalUser); !errors.Is(err, vault.ErrConflict) {
		t.Fatalf("RenameUsers with a racing change: %v, want ErrConflict", err)
	}
	es, _ := f.v.List(ctx, "")
	for _, e := range es {
		if e.User != "discord:G1:U7" {
			t.Errorf("entry %s of %s was moved by a refused rename", e.Name, e.User)
		}
	}
	if len(es) != 2 {
		t.Errorf("%d entries after a refused rename, want 2", len(es))
	}
	r, err := f.v.RenameUsers(ctx, store.GlobalUser)
	if err != nil || r.Moved != 2 {
		t.Fatalf("second RenameUsers = %+v, %v", r, err)
	}
	if got := f.value(t, f.v, "discord::U7", "jira"); got != "jira-value-changed" {
		t.Errorf("jira opens to %q, want the changed value", got)
	}
	if strings.Contains(f.value(t, f.v, "discord:G1:U7", "gh"), "value") {
		t.Error("the old entry is still there")
	}
}
