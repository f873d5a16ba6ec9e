package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

// dropMigration is the version of the migration that dropped droppedKeys.
const dropMigration = 31

// foreignKeys returns the foreign keys of the schema p works in, by name,
// each as PostgreSQL prints it ("FOREIGN KEY (turn_id) REFERENCES
// turns(id)") after "table: ".
func foreignKeys(t *testing.T, p *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := p.Query(context.Background(), `SELECT conname, conrelid::regclass::text || ': ' || pg_get_constraintdef(oid)
		FROM pg_constraint WHERE contype = 'f' AND connamespace = current_schema()::regnamespace`)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatal(err)
		}
		keys[name] = def
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestDroppedKeysAreTheMigrations: each of droppedKeys is a foreign key of
// the schema before migration 0031, as the list describes it (its table,
// column and parent); after it none of them is left, and every foreign key
// left is one the list does not name.
func TestDroppedKeysAreTheMigrations(t *testing.T) {
	ctx := context.Background()
	p := pgtest.Pool(t, pgtest.URL(t))
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < dropMigration || ms[dropMigration-1].name != "drop_turn_foreign_keys" {
		t.Fatalf("migration %04d is not drop_turn_foreign_keys", dropMigration)
	}
	for _, m := range ms[:dropMigration-1] {
		if _, err := p.Exec(ctx, m.sql); err != nil {
			t.Fatalf("migration %04d_%s: %v", m.version, m.name, err)
		}
	}
	before := foreignKeys(t, p)
	for _, r := range droppedKeys {
		want := fmt.Sprintf("%s: FOREIGN KEY (%s) REFERENCES %s(id)", r.table, r.column, r.parent)
		if got, ok := before[r.constraint()]; !ok || got != want {
			t.Errorf("before migration %04d, %s is %q; want %q", dropMigration, r.constraint(), got, want)
		}
	}
	if _, err := p.Exec(ctx, ms[dropMigration-1].sql); err != nil {
		t.Fatal(err)
	}
	after := foreignKeys(t, p)
	for name, def := range after {
		if slices.ContainsFunc(droppedKeys, func(r reference) bool { return r.constraint() == name }) {
			t.Errorf("after migration %04d, %s (%s) is still there", dropMigration, name, def)
		}
	}
	if len(after) != len(before)-len(droppedKeys) {
		t.Errorf("%d foreign keys before migration %04d and %d after; want %d dropped", len(before), dropMigration, len(after), len(droppedKeys))
	}
}

// TestOrphans: a store after a whole turn (accepted, started, a step, a
// tool call, a preview, the reply queued, a part posted and delivered)
// reports nothing; a row that names a parent row that does not exist is
// reported, for every key of droppedKeys; a NULL reference is none.
func TestOrphans(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, pgtest.URL(t))
	in, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "k1", Text: "hello",
		Key: agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}, Conversation: agent.Conversation{Channel: "D1"}}})
	if err != nil {
		t.Fatal(err)
	}
	turn, s, _, err := db.StartTurn(ctx, in.ID, &llm.Message{Role: llm.RoleUser, Content: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	call := llm.ToolCall{ID: "c1", Name: "fetch", Arguments: "{}"}
	if err := db.RecordStep(ctx, turn, agent.Step{Session: s.ID, N: 1, Model: "m", Usage: llm.Usage{InputTokens: 3, OutputTokens: 2},
		Messages: []llm.Message{{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call}}}}); err != nil {
		t.Fatal(err)
	}
	if err := db.StartToolCall(ctx, turn, 1, call); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishToolCall(ctx, turn, call.ID, "ok", false); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPreview(ctx, in.ID, "p1"); err != nil {
		t.Fatal(err)
	}
	rid, err := db.FinishTurn(ctx, in.ID, turn, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "answer"},
		&agent.Step{Session: s.ID, N: 2, Model: "m", Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "answer"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPart(ctx, rid, agent.PostedPart{N: 0, PlatformID: "p1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkDelivered(ctx, rid, "p1"); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Orphans(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Orphans after a whole turn: %q, %v; want none", got, err)
	}

	// Each reference in turn pointed at a row that does not exist, in a
	// transaction rolled back: that one line, and nothing else.
	for _, r := range droppedKeys {
		t.Run(r.table+"."+r.column, func(t *testing.T) {
			err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE %s SET %s = -1 WHERE ctid = (SELECT ctid FROM %[1]s LIMIT 1)`,
					pgx.Identifier{r.table}.Sanitize(), pgx.Identifier{r.column}.Sanitize()))
				if err != nil {
					return err
				}
				if tag.RowsAffected() != 1 {
					return fmt.Errorf("%s has no row to change", r.table)
				}
				got, err := orphans(ctx, tx)
				if err != nil {
					return err
				}
				want := []string{fmt.Sprintf("%s.%s: 1 row names %s that does not exist", r.table, r.column, r.noun)}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("orphans (-want +got):\n%s", diff)
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatal(err)
			}
		})
	}

	// Written by hand and committed: two messages of a session that does
	// not exist, one without a turn (NULL: no reference) and one of a turn
	// that does not exist either.
	if _, err := db.pool.Exec(ctx, `INSERT INTO messages (session_id, turn_id, role, content, created_at)
		VALUES (424242, NULL, 'user', '{}', 0), (424242, 434343, 'user', '{}', 0)`); err != nil {
		t.Fatal(err)
	}
	got, err := db.Orphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"messages.session_id: 2 rows name a session that does not exist",
		"messages.turn_id: 1 row names a turn that does not exist",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Orphans (-want +got):\n%s", diff)
	}
}
