package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// TestTaintSurvivesRestart: a turn's taint is kept on the turn and its
// session (the first source of each), a resumed turn finds it in its
// session after a reopen, the session's next turn too, and a new session
// starts clean.
func TestTaintSurvivesRestart(t *testing.T) {
	db, path := open(t)
	ctx := context.Background()
	q := accept(t, db, inbound("k1", alice))
	tid, sess := startTurn(t, db, q.ID, nil)
	if sess.Taint != "" {
		t.Fatalf("new session tainted: %q", sess.Taint)
	}
	if err := db.TaintTurn(ctx, tid, "tool http_fetch: evil.example"); err != nil {
		t.Fatal(err)
	}
	if err := db.TaintTurn(ctx, tid, "file b.csv"); err != nil {
		t.Fatal(err)
	}
	if err := db.TaintTurn(ctx, tid+1000, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("TaintTurn of an unknown turn: %v, want ErrNotFound", err)
	}
	db.Close()

	db = openAt(t, path)
	_, s, resumed, err := db.StartTurn(ctx, q.ID, nil)
	if err != nil || !resumed {
		t.Fatalf("StartTurn after reopen: resumed %v, %v", resumed, err)
	}
	if s.Taint != "tool http_fetch: evil.example" {
		t.Errorf("resumed turn's session taint = %q, want the first source", s.Taint)
	}
	if got, err := db.ActiveSession(ctx, alice); err != nil || got.Taint != s.Taint {
		t.Errorf("ActiveSession taint = %q (%v), want %q", got.Taint, err, s.Taint)
	}
	var turnTaint string
	store.QueryRow(t, db, `SELECT taint FROM turns WHERE id = ?`, []any{tid}, &turnTaint)
	if turnTaint != "tool http_fetch: evil.example" {
		t.Errorf("turn's taint = %q", turnTaint)
	}
	if _, err := db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "x"}, nil); err != nil {
		t.Fatal(err)
	}
	q2 := accept(t, db, inbound("k2", alice))
	if _, s2 := startTurn(t, db, q2.ID, nil); s2.Taint != s.Taint {
		t.Errorf("next turn's session taint = %q, want %q", s2.Taint, s.Taint)
	}
	fresh, err := db.NewSession(ctx, alice)
	if err != nil || fresh.Taint != "" {
		t.Errorf("NewSession: taint %q, %v; want a clean session", fresh.Taint, err)
	}
	if other, err := db.ActiveSession(ctx, bob); err != nil || other.Taint != "" {
		t.Errorf("another user's session: taint %q, %v", other.Taint, err)
	}
}
