package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// A thread cursor counts once its turn has started: a read whose turn never
// started (a crash in between) is read again by the next turn, and /new
// starts reading the thread afresh.
func TestThreadCursor(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	cursor := func(db *store.DB, s int64) string {
		t.Helper()
		if s != 0 {
			if sess, err := db.ActiveSession(ctx, alice); err != nil || int64(sess.ID) != s {
				t.Fatalf("active session %d (%v), want %d", sess.ID, err, s)
			}
		}
		c, err := db.ThreadCursor(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := cursor(db, 0); got != "" {
		t.Fatalf("cursor of a new session = %q, want none", got)
	}
	q1 := accept(t, db, inbound("m1", alice))
	if err := db.SetThreadCursor(ctx, q1.ID, "1700.5"); err != nil {
		t.Fatal(err)
	}
	if got := cursor(db, 0); got != "" {
		t.Fatalf("cursor before the turn started = %q, want none", got)
	}
	_, s1 := startTurn(t, db, q1.ID, &llm.Message{Role: llm.RoleUser, Content: "x"})
	if got := cursor(db, int64(s1.ID)); got != "1700.5" {
		t.Fatalf("cursor after the turn started = %q, want 1700.5", got)
	}
	// A started turn's cursor is fixed.
	if err := db.SetThreadCursor(ctx, q1.ID, "1700.9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetThreadCursor of a started turn: %v, want ErrNotFound", err)
	}
	// The next read is recorded but its turn does not start (a crash):
	// after a restart the cursor is still the first one.
	q2 := accept(t, db, inbound("m2", alice))
	if err := db.SetThreadCursor(ctx, q2.ID, "1700.8"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openAt(t, path)
	if got := cursor(db, int64(s1.ID)); got != "1700.5" {
		t.Fatalf("cursor with the second turn not started = %q, want 1700.5", got)
	}
	if err := db.SetThreadCursor(ctx, q2.ID, "1700.7"); err != nil {
		t.Fatal(err)
	}
	startTurn(t, db, q2.ID, nil)
	if got := cursor(db, int64(s1.ID)); got != "1700.7" {
		t.Fatalf("cursor after the second turn started = %q, want 1700.7", got)
	}
	// A turn that read nothing new keeps the cursor where it was.
	q3 := accept(t, db, inbound("m3", alice))
	startTurn(t, db, q3.ID, nil)
	if got := cursor(db, int64(s1.ID)); got != "1700.7" {
		t.Fatalf("cursor after a turn without a read = %q, want 1700.7", got)
	}
	// Bob's session in the same thread has its own.
	if got, err := db.ThreadCursor(ctx, bob); err != nil || got != "" {
		t.Fatalf("bob's cursor = %q, %v; want none", got, err)
	}
	// /new: a fresh session reads the thread again.
	if _, err := db.NewSession(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if got := cursor(db, 0); got != "" {
		t.Fatalf("cursor of the session after /new = %q, want none", got)
	}
	if err := db.SetThreadCursor(ctx, 9999, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetThreadCursor of an unknown inbound: %v, want ErrNotFound", err)
	}
}
