package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

var historyTests = []test{
	{"ActiveSession", testActiveSession},
	{"NewSession", testNewSession},
	{"Recent", testRecent},
	{"AppendMessagesRoundTrip", testAppendMessagesRoundTrip},
	{"HistoryUnknownSession", testHistoryUnknownSession},
}

func userMsg(i int) llm.Message {
	return llm.Message{Role: llm.RoleUser, Content: fmt.Sprintf("m%d", i)}
}

// appendN appends n user messages to s and returns them as stored.
func appendN(tb testing.TB, db Store, s agent.SessionID, n int) []agent.StoredMessage {
	tb.Helper()
	ctx := context.Background()
	msgs := make([]llm.Message, n)
	for i := range msgs {
		msgs[i] = userMsg(i)
	}
	if err := db.AppendMessages(ctx, s, 0, msgs...); err != nil {
		tb.Fatal(err)
	}
	got, err := db.Recent(ctx, s, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

func testActiveSession(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	s1, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(agent.Session{ID: s1.ID, Key: alice, CreatedAt: t0}, s1); diff != "" {
		t.Errorf("ActiveSession (-want +got):\n%s", diff)
	}
	again, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s1, again); diff != "" {
		t.Errorf("second ActiveSession (-first +second):\n%s", diff)
	}

	otherThread := alice
	otherThread.Conversation.Thread = "other"
	otherWorkspace := alice
	otherWorkspace.Principal.Workspace = "T2"
	for _, k := range []agent.SessionKey{bob, otherThread, otherWorkspace} {
		s, err := db.ActiveSession(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if s.ID == s1.ID || s.Key != k {
			t.Errorf("ActiveSession(%v): session %d key %v, want a new session of its own", k, s.ID, s.Key)
		}
	}
	if got := e.count(t, "sessions"); got != 4 {
		t.Errorf("%d sessions, want 4", got)
	}
}

func testNewSession(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	old, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	oldMsgs := appendN(t, db, old.ID, 3)

	fresh, err := db.NewSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.ID == old.ID || fresh.Key != alice {
		t.Fatalf("NewSession: %+v, want a new session of alice", fresh)
	}
	active, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fresh, active); diff != "" {
		t.Errorf("ActiveSession after NewSession (-new +active):\n%s", diff)
	}
	got, err := db.Recent(ctx, fresh.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("Recent of the new session: %d messages, want none", len(got))
	}
	got, err = db.Recent(ctx, old.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(oldMsgs, got); diff != "" {
		t.Errorf("Recent of the retired session (-want +got):\n%s", diff)
	}

	// NewSession for a key never seen creates principal and session.
	s, err := db.NewSession(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	if s.Key != bob {
		t.Errorf("NewSession(bob) key %v", s.Key)
	}
}

func testRecent(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	s, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	all := appendN(t, db, s.ID, 10)
	for i, m := range all {
		if m.Message.Content != fmt.Sprintf("m%d", i) || m.Session != s.ID || !m.CreatedAt.Equal(t0) {
			t.Fatalf("message %d as stored: %+v", i, m)
		}
	}
	tests := []struct {
		name    string
		summary int // index of the last summarised message, -1 for none
		limit   int
		want    []agent.StoredMessage
	}{
		{"all", -1, 0, all},
		{"limit keeps the last", -1, 3, all[7:]},
		{"limit above the count", -1, 50, all},
		{"after the summary", 4, 0, all[5:]},
		{"after the summary with a limit", 4, 2, all[8:]},
		{"summary covers all", 9, 5, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var upTo int64
			if tt.summary >= 0 {
				upTo = all[tt.summary].ID
			}
			if err := db.SetSummary(ctx, s.ID, "summary", upTo); err != nil {
				t.Fatal(err)
			}
			got, err := db.Recent(ctx, s.ID, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Recent (-want +got):\n%s", diff)
			}
		})
	}
	if err := db.SetSummary(ctx, s.ID, "the gist", all[4].ID); err != nil {
		t.Fatal(err)
	}
	got, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if got.Summary != "the gist" || got.SummaryUpTo != all[4].ID {
		t.Errorf("session summary %q up to %d, want %q up to %d", got.Summary, got.SummaryUpTo, "the gist", all[4].ID)
	}
}

func testAppendMessagesRoundTrip(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q := accept(t, db, inbound("1", alice))
	turn, s := startTurn(t, db, q.ID, &llm.Message{Role: llm.RoleUser, Content: "list files"})
	msgs := []llm.Message{
		{Role: llm.RoleAssistant, Content: "let me look", ToolCalls: []llm.ToolCall{
			{ID: "c1", Name: "shell", Arguments: `{"cmd":"ls"}`},
		}},
		{Role: llm.RoleTool, Content: "a.txt\nb.txt", ToolCallID: "c1", ToolName: "shell"},
		{Role: llm.RoleTool, Content: "boom", ToolCallID: "c2", ToolName: "shell", IsError: true},
		{Role: llm.RoleAssistant, Content: "two files: a.txt, b.txt ✓ \"quoted\" \\ back\u2028slash"},
	}
	if err := db.AppendMessages(ctx, s.ID, turn, msgs...); err != nil {
		t.Fatal(err)
	}
	got, err := db.Recent(ctx, s.ID, len(msgs))
	if err != nil {
		t.Fatal(err)
	}
	var gotMsgs []llm.Message
	for _, m := range got {
		if m.Turn != turn || m.Session != s.ID {
			t.Errorf("message %d: turn %d session %d, want %d and %d", m.ID, m.Turn, m.Session, turn, s.ID)
		}
		gotMsgs = append(gotMsgs, m.Message)
	}
	if diff := cmp.Diff(msgs, gotMsgs); diff != "" {
		t.Errorf("messages read back (-want +got):\n%s", diff)
	}
	n, turns, err := db.SessionStats(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 || turns != 1 {
		t.Errorf("SessionStats: %d messages %d turns, want 5 and 1", n, turns)
	}
	if err := db.AppendMessages(ctx, s.ID, turn); err != nil {
		t.Errorf("AppendMessages of nothing: %v", err)
	}
}

func testHistoryUnknownSession(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	s, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	unknown := s.ID + 100
	before := e.counts(t)
	tests := []struct {
		name string
		call func() error
	}{
		{"Recent", func() error { _, err := db.Recent(ctx, unknown, 10); return err }},
		{"AppendMessages", func() error { return db.AppendMessages(ctx, unknown, 0, userMsg(1)) }},
		{"SetSummary", func() error { return db.SetSummary(ctx, unknown, "x", 1) }},
		{"SessionStats", func() error { _, _, err := db.SessionStats(ctx, unknown); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("got %v, want ErrNotFound", err)
			}
		})
	}
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("calls on an unknown session wrote rows (-before +after):\n%s", diff)
	}
	// An existing, empty session is not an error.
	if got, err := db.Recent(ctx, s.ID, 10); err != nil || len(got) != 0 {
		t.Errorf("Recent of an empty session: %v, %v; want none, nil", got, err)
	}
	if n, turns, err := db.SessionStats(ctx, s.ID); err != nil || n != 0 || turns != 0 {
		t.Errorf("SessionStats of an empty session: %d, %d, %v; want 0, 0, nil", n, turns, err)
	}
}
