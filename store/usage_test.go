package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// A step recorded again (a resumed turn) replaces its figures in the daily
// sums; budgets and the console read the same sums.
func TestUsageDailySums(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	p := agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}
	q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "k1", Key: agent.SessionKey{Principal: p, Conversation: agent.Conversation{Channel: "C1"}}, Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	tid, sess, _, err := db.StartTurn(ctx, q.ID, &user)
	if err != nil {
		t.Fatal(err)
	}
	step := func(n, in, out int) {
		t.Helper()
		if err := db.RecordStep(ctx, tid, agent.Step{Session: sess.ID, N: n, Model: "m", Usage: llm.Usage{InputTokens: in, OutputTokens: out}}); err != nil {
			t.Fatal(err)
		}
	}
	step(1, 100, 10)
	step(1, 300, 30) // the same step again: replaces
	step(2, 5, 1)
	got, err := db.Usage(ctx, now.Truncate(24*time.Hour), now.Truncate(24*time.Hour).Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.UsageRow{{Day: now.Truncate(24 * time.Hour), Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m", Calls: 2, InputTokens: 305, OutputTokens: 31}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	for name, f := range map[string]func() (int64, error){
		"principal": func() (int64, error) { return db.PrincipalTokens(ctx, p, now.Truncate(24*time.Hour)) },
		"workspace": func() (int64, error) { return db.WorkspaceTokens(ctx, "slack", "T1", now.AddDate(0, 0, -3)) },
	} {
		if n, err := f(); err != nil || n != 336 {
			t.Errorf("%s tokens = %d, %v; want 336", name, n, err)
		}
	}
	if n, _ := db.PrincipalTokens(ctx, p, now.Add(24*time.Hour)); n != 0 {
		t.Errorf("tokens since tomorrow = %d, want 0", n)
	}

	// The next day, yesterday is closed and cached; a resumed turn that
	// records step 2 again moves its figures to today, and the cached day
	// follows.
	day0 := now.Truncate(24 * time.Hour)
	now = now.Add(24 * time.Hour)
	if got, _ := db.Usage(ctx, day0, day0.Add(48*time.Hour)); len(got) != 1 || got[0].Calls != 2 {
		t.Fatalf("usage before the resume: %+v", got)
	}
	step(2, 7, 2)
	got, err = db.Usage(ctx, day0, day0.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Day.Equal(day0.Add(24*time.Hour)) || got[0].Calls != 1 || got[0].InputTokens != 7 ||
		got[1].Calls != 1 || got[1].InputTokens != 300 {
		t.Errorf("usage after a step moved days (newest first): %+v", got)
	}
}
