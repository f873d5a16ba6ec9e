package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

var t0 = time.UnixMilli(1_700_000_000_123).UTC()

// open opens a database in a fresh temporary directory, with a fixed clock.
func open(tb testing.TB) (*store.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "talon.db")
	return openAt(tb, path), path
}

func openAt(tb testing.TB, path string) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	db.Now = func() time.Time { return t0 }
	tb.Cleanup(func() { db.Close() })
	return db
}

var (
	alice = agent.SessionKey{
		Principal:    agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"},
		Conversation: agent.Conversation{Channel: "C1", Thread: "1700.1"},
	}
	bob = agent.SessionKey{
		Principal:    agent.Principal{Platform: "slack", Workspace: "T1", User: "U2"},
		Conversation: agent.Conversation{Channel: "C1", Thread: "1700.1"},
	}
)

func inbound(key string, k agent.SessionKey) agent.Inbound {
	return agent.Inbound{
		DedupeKey:  key,
		Key:        k,
		Text:       "text of " + key,
		ReplyTo:    "reply-to " + key,
		ReceivedAt: t0.Add(-time.Second),
	}
}

func accept(tb testing.TB, db *store.DB, in agent.Inbound) agent.QueuedInbound {
	tb.Helper()
	q, dup, err := db.AcceptInbound(context.Background(), in)
	if err != nil {
		tb.Fatal(err)
	}
	if dup {
		tb.Fatalf("AcceptInbound(%q) is a duplicate", in.DedupeKey)
	}
	return q
}

func startTurn(tb testing.TB, db *store.DB, id agent.InboundID, user *llm.Message) (agent.TurnID, agent.Session) {
	tb.Helper()
	turn, s, resumed, err := db.StartTurn(context.Background(), id, user)
	if err != nil {
		tb.Fatal(err)
	}
	if resumed {
		tb.Fatalf("StartTurn(%d) resumed a turn", id)
	}
	return turn, s
}

func pendingIDs(tb testing.TB, db *store.DB) map[agent.InboundID]bool {
	tb.Helper()
	qs, err := db.Pending(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	got := map[agent.InboundID]bool{}
	for _, q := range qs {
		got[q.ID] = q.Running
	}
	return got
}

func TestAcceptInboundDedupes(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	in := inbound("slack:T1:C1:1", alice)

	first, dup, err := db.AcceptInbound(ctx, in)
	if err != nil || dup {
		t.Fatalf("first AcceptInbound: dup=%v err=%v, want false, nil", dup, err)
	}
	want := agent.QueuedInbound{ID: first.ID, Inbound: in}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("first AcceptInbound (-want +got):\n%s", diff)
	}
	before := store.CountRows(t, db)

	// The same key again, even from someone else with other text, is a
	// duplicate that writes nothing (not even the new principal).
	again := inbound("slack:T1:C1:1", bob)
	again.Text = "other"
	second, dup, err := db.AcceptInbound(ctx, again)
	if err != nil || !dup {
		t.Fatalf("second AcceptInbound: dup=%v err=%v, want true, nil", dup, err)
	}
	if diff := cmp.Diff(want, second); diff != "" {
		t.Errorf("duplicate returns the first inbound (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, store.CountRows(t, db)); diff != "" {
		t.Errorf("a duplicate wrote rows (-before +after):\n%s", diff)
	}
	qs, err := db.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]agent.QueuedInbound{want}, qs); diff != "" {
		t.Errorf("Pending (-want +got):\n%s", diff)
	}
}

func TestAcceptInboundDefaultsAndErrors(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	in := inbound("k", alice)
	in.ReceivedAt = time.Time{}
	q := accept(t, db, in)
	if !q.ReceivedAt.Equal(t0) {
		t.Errorf("ReceivedAt of an inbound without one: got %v, want the clock's %v", q.ReceivedAt, t0)
	}
	if _, _, err := db.AcceptInbound(ctx, inbound("", alice)); err == nil {
		t.Error("AcceptInbound with an empty dedupe key succeeded")
	}
	if got := store.CountRows(t, db)["inbound"]; got != 1 {
		t.Errorf("%d inbound rows, want 1", got)
	}
}

func TestAcceptInboundConcurrent(t *testing.T) {
	const (
		workers = 50
		keys    = 20
	)
	ctx := context.Background()
	db, _ := open(t)
	type result struct {
		key int
		id  agent.InboundID
		dup bool
	}
	results := make(chan result, workers*keys)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range keys {
				k := (i + w) % keys // every worker in another order
				q, dup, err := db.AcceptInbound(ctx, inbound(fmt.Sprintf("key-%d", k), alice))
				if err != nil {
					t.Error(err)
					return
				}
				results <- result{k, q.ID, dup}
			}
		})
	}
	wg.Wait()
	close(results)

	firsts := 0
	ids := map[int]agent.InboundID{}
	for r := range results {
		if !r.dup {
			firsts++
		}
		if id, ok := ids[r.key]; ok && id != r.id {
			t.Errorf("key %d answered with ids %d and %d", r.key, id, r.id)
		}
		ids[r.key] = r.id
	}
	if firsts != keys {
		t.Errorf("%d accepts were not duplicates, want %d", firsts, keys)
	}
	counts := store.CountRows(t, db)
	if counts["inbound"] != keys || counts["principals"] != 1 {
		t.Errorf("got %d inbound and %d principals, want %d and 1", counts["inbound"], counts["principals"], keys)
	}
}

func TestPendingAfterACrash(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	q1 := accept(t, db, inbound("1", alice))
	q2 := accept(t, db, inbound("2", bob))
	q3 := accept(t, db, inbound("3", alice))
	startTurn(t, db, q2.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openAt(t, path)
	got, err := db.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q2.Running = true
	if diff := cmp.Diff([]agent.QueuedInbound{q1, q2, q3}, got); diff != "" {
		t.Errorf("Pending after reopening (-want +got):\n%s", diff)
	}

	if _, err := db.FinishTurn(ctx, q1.ID, 0, agent.TurnDone, agent.Reply{Kind: agent.ReplyNotice, Text: "ok"}, nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[agent.InboundID]bool{q2.ID: true, q3.ID: false}, pendingIDs(t, db)); diff != "" {
		t.Errorf("Pending after finishing the first (-want +got):\n%s", diff)
	}
}

func TestStartTurn(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	q1 := accept(t, db, inbound("1", alice))
	q2 := accept(t, db, inbound("2", alice))
	q3 := accept(t, db, inbound("3", bob))
	user := &llm.Message{Role: llm.RoleUser, Content: "hello"}

	turn1, s1 := startTurn(t, db, q1.ID, user)
	wantSession := agent.Session{ID: s1.ID, Key: alice, CreatedAt: t0}
	if diff := cmp.Diff(wantSession, s1); diff != "" {
		t.Errorf("session of the first turn (-want +got):\n%s", diff)
	}
	active, err := db.ActiveSession(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantSession, active); diff != "" {
		t.Errorf("ActiveSession after StartTurn (-want +got):\n%s", diff)
	}

	// A restart: the same turn, the same session, the message kept once.
	db.Close()
	db = openAt(t, path)
	again, s, resumed, err := db.StartTurn(ctx, q1.ID, user)
	if err != nil {
		t.Fatal(err)
	}
	if !resumed || again != turn1 {
		t.Errorf("second StartTurn: turn %d resumed=%v, want turn %d resumed", again, resumed, turn1)
	}
	if diff := cmp.Diff(wantSession, s); diff != "" {
		t.Errorf("session of the resumed turn (-want +got):\n%s", diff)
	}
	msgs, err := db.Recent(ctx, s1.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.StoredMessage{{ID: msgs[0].ID, Session: s1.ID, Turn: turn1, Message: *user, CreatedAt: t0}}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("history after two starts (-want +got):\n%s", diff)
	}

	// Another inbound of the same key shares the session, without a user
	// message; another person gets another session.
	turn2, s2 := startTurn(t, db, q2.ID, nil)
	if s2.ID != s1.ID || turn2 == turn1 {
		t.Errorf("second inbound of alice: session %d turn %d, want session %d and a new turn", s2.ID, turn2, s1.ID)
	}
	_, s3 := startTurn(t, db, q3.ID, user)
	if s3.ID == s1.ID || s3.Key != bob {
		t.Errorf("bob's turn: session %d key %v, want a new session of bob", s3.ID, s3.Key)
	}
	nMsgs, nTurns, err := db.SessionStats(ctx, s1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if nMsgs != 1 || nTurns != 2 {
		t.Errorf("SessionStats: %d messages, %d turns, want 1 and 2", nMsgs, nTurns)
	}

	// A resumed turn keeps its session even after /new.
	if _, err := db.NewSession(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, s, _, err := db.StartTurn(ctx, q2.ID, nil); err != nil || s.ID != s1.ID {
		t.Errorf("resumed StartTurn after /new: session %d err %v, want session %d", s.ID, err, s1.ID)
	}
}

func TestStartTurnErrors(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	q := accept(t, db, inbound("1", alice))
	if _, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnFailed, agent.Reply{Kind: agent.ReplyError, Text: "x"}, nil); err != nil {
		t.Fatal(err)
	}
	before := store.CountRows(t, db)
	tests := []struct {
		name string
		id   agent.InboundID
		want error
	}{
		{"unknown", q.ID + 100, store.ErrNotFound},
		{"finished", q.ID, store.ErrFinished},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := db.StartTurn(ctx, tt.id, &llm.Message{Role: llm.RoleUser, Content: "x"})
			if !errors.Is(err, tt.want) {
				t.Errorf("StartTurn: got %v, want %v", err, tt.want)
			}
		})
	}
	if diff := cmp.Diff(before, store.CountRows(t, db)); diff != "" {
		t.Errorf("failed StartTurns wrote rows (-before +after):\n%s", diff)
	}
}

func TestFinishTurn(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	q := accept(t, db, inbound("1", alice))
	turn, _ := startTurn(t, db, q.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})

	r := agent.Reply{
		ID: 77, Inbound: 88, Turn: 99, // ignored: taken from the arguments
		Key: bob, ReplyTo: "elsewhere", Kind: agent.ReplyAnswer, Text: "the answer",
	}
	id, err := db.FinishTurn(ctx, q.ID, turn, agent.TurnDone, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pendingIDs(t, db)) != 0 {
		t.Error("the inbound is still pending")
	}
	var turnState, inState string
	var finished int64
	store.QueryRow(t, db, "SELECT state, finished_at FROM turns WHERE id = ?", []any{turn}, &turnState, &finished)
	store.QueryRow(t, db, "SELECT state FROM inbound WHERE id = ?", []any{q.ID}, &inState)
	if turnState != "done" || finished != t0.UnixMilli() || inState != "done" {
		t.Errorf("turn %s finished at %d, inbound %s; want done at %d, done", turnState, finished, inState, t0.UnixMilli())
	}
	got, err := db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.Reply{{
		ID: id, Inbound: q.ID, Turn: turn, Key: bob, ReplyTo: "elsewhere",
		Kind: agent.ReplyAnswer, Text: "the answer", CreatedAt: t0,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Undelivered (-want +got):\n%s", diff)
	}

	// Finishing again is refused and writes nothing.
	before := store.CountRows(t, db)
	if _, err := db.FinishTurn(ctx, q.ID, turn, agent.TurnDone, r, nil); !errors.Is(err, store.ErrFinished) {
		t.Errorf("second FinishTurn: got %v, want ErrFinished", err)
	}
	if diff := cmp.Diff(before, store.CountRows(t, db)); diff != "" {
		t.Errorf("second FinishTurn wrote rows (-before +after):\n%s", diff)
	}
}

func TestFinishTurnWithoutTurnRepliesToTheInbound(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	q := accept(t, db, inbound("1", alice))
	id, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnFailed, agent.Reply{Kind: agent.ReplyError, Text: "sorry (ref x1)"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var inState string
	store.QueryRow(t, db, "SELECT state FROM inbound WHERE id = ?", []any{q.ID}, &inState)
	if inState != "failed" {
		t.Errorf("inbound state %q, want failed", inState)
	}
	got, err := db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.Reply{{
		ID: id, Inbound: q.ID, Key: alice, ReplyTo: q.ReplyTo,
		Kind: agent.ReplyError, Text: "sorry (ref x1)", CreatedAt: t0,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Undelivered (-want +got):\n%s", diff)
	}
}

func TestFinishTurnErrorsWriteNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	q1 := accept(t, db, inbound("1", alice))
	q2 := accept(t, db, inbound("2", bob))
	turn1, _ := startTurn(t, db, q1.ID, nil)
	_, s2 := startTurn(t, db, q2.ID, nil)
	before := store.CountRows(t, db)
	r := agent.Reply{Key: alice, Kind: agent.ReplyAnswer, Text: "x"}
	// The final step must be rolled back with the rest.
	last := &agent.Step{Session: s2.ID, N: 1, StopReason: "stop",
		Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "x"}}}
	tests := []struct {
		name  string
		id    agent.InboundID
		turn  agent.TurnID
		state agent.TurnState
		want  error // nil: any error
	}{
		{"unknown inbound", q2.ID + 100, 0, agent.TurnDone, store.ErrNotFound},
		{"turn of another inbound", q2.ID, turn1, agent.TurnDone, store.ErrNotFound},
		{"unknown turn", q2.ID, turn1 + 100, agent.TurnDone, store.ErrNotFound},
		{"bad state", q2.ID, 0, agent.TurnState("running"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := db.FinishTurn(ctx, tt.id, tt.turn, tt.state, r, last)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("FinishTurn: got %v, want %v", err, tt.want)
			}
		})
	}
	if diff := cmp.Diff(before, store.CountRows(t, db)); diff != "" {
		t.Errorf("failed FinishTurns wrote rows (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(map[agent.InboundID]bool{q1.ID: true, q2.ID: true}, pendingIDs(t, db)); diff != "" {
		t.Errorf("Pending after failed FinishTurns (-want +got):\n%s", diff)
	}
}

func TestFinishTurnRecordsTheFinalStep(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	q := accept(t, db, inbound("1", alice))
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	turn, s := startTurn(t, db, q.ID, &user)
	answer := llm.Message{Role: llm.RoleAssistant, Content: "hello\nthere"}
	last := &agent.Step{Session: s.ID, N: 1, Usage: llm.Usage{InputTokens: 7, OutputTokens: 3}, StopReason: "stop",
		Messages: []llm.Message{answer}}
	id, err := db.FinishTurn(ctx, q.ID, turn, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: answer.Content}, last)
	if err != nil {
		t.Fatal(err)
	}
	var steps, in, out int
	var stop string
	store.QueryRow(t, db, "SELECT count(*), sum(input_tokens), sum(output_tokens), max(stop_reason) FROM turn_steps WHERE turn_id = ?",
		[]any{turn}, &steps, &in, &out, &stop)
	if steps != 1 || in != 7 || out != 3 || stop != "stop" {
		t.Errorf("steps: %d rows, %d in, %d out, %q; want 1, 7, 3, stop", steps, in, out, stop)
	}
	got, err := db.Recent(ctx, s.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []llm.Message
	for _, m := range got {
		if m.Turn != turn {
			t.Errorf("message %d: turn %d, want %d", m.ID, m.Turn, turn)
		}
		msgs = append(msgs, m.Message)
	}
	if diff := cmp.Diff([]llm.Message{user, answer}, msgs); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	replies, err := db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.Reply{{ID: id, Inbound: q.ID, Turn: turn, Key: alice, ReplyTo: q.ReplyTo,
		Kind: agent.ReplyAnswer, Text: answer.Content, CreatedAt: t0}}
	if diff := cmp.Diff(want, replies); diff != "" {
		t.Errorf("Undelivered (-want +got):\n%s", diff)
	}
}

func TestRecordStepAppendsItsMessages(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	q := accept(t, db, inbound("1", alice))
	turn, s := startTurn(t, db, q.ID, nil)
	msgs := []llm.Message{
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: `{}`}}},
		{Role: llm.RoleTool, ToolCallID: "c1", ToolName: "f", Content: "result"},
	}
	if err := db.RecordStep(ctx, turn, agent.Step{Session: s.ID, N: 1, StopReason: "tool_calls", Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	got, err := db.Recent(ctx, s.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var gotMsgs []llm.Message
	for _, m := range got {
		gotMsgs = append(gotMsgs, m.Message)
	}
	if diff := cmp.Diff(msgs, gotMsgs); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	// A step of an unknown session is refused and writes nothing.
	before := store.CountRows(t, db)
	if err := db.RecordStep(ctx, turn, agent.Step{Session: s.ID + 100, N: 2, Messages: msgs}); err == nil {
		t.Error("RecordStep into an unknown session: got nil error")
	}
	if diff := cmp.Diff(before, store.CountRows(t, db)); diff != "" {
		t.Errorf("failed RecordStep wrote rows (-before +after):\n%s", diff)
	}
}

func TestStepsAndToolCalls(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	q := accept(t, db, inbound("1", alice))
	turn, _ := startTurn(t, db, q.ID, nil)

	if err := db.RecordStep(ctx, turn, agent.Step{N: 0, Usage: llm.Usage{InputTokens: 10, OutputTokens: 2}, StopReason: "tool_calls"}); err != nil {
		t.Fatal(err)
	}
	// Recording a step again (a resumed turn) replaces it.
	if err := db.RecordStep(ctx, turn, agent.Step{N: 0, Usage: llm.Usage{InputTokens: 11, OutputTokens: 3}, StopReason: "tool_calls"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordStep(ctx, turn, agent.Step{N: 1, Usage: llm.Usage{InputTokens: 20, OutputTokens: 5}, StopReason: "stop"}); err != nil {
		t.Fatal(err)
	}
	var steps, in, out int
	store.QueryRow(t, db, "SELECT count(*), sum(input_tokens), sum(output_tokens) FROM turn_steps WHERE turn_id = ?",
		[]any{turn}, &steps, &in, &out)
	if steps != 2 || in != 31 || out != 8 {
		t.Errorf("steps: %d rows, %d in, %d out; want 2, 31, 8", steps, in, out)
	}

	calls := []llm.ToolCall{
		{ID: "c1", Name: "fetch", Arguments: `{"url":"https://example.com"}`},
		{ID: "c2", Name: "shell", Arguments: `{"cmd":"ls"}`},
		{ID: "c3", Name: "fetch", Arguments: `{}`},
	}
	for _, c := range calls {
		if err := db.StartToolCall(ctx, turn, 0, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FinishToolCall(ctx, turn, "c2", "file.txt", false); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishToolCall(ctx, turn, "c9", "x", true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FinishToolCall of an unknown call: got %v, want ErrNotFound", err)
	}

	db.Close()
	db = openAt(t, path)
	started := func() string {
		var ids string
		store.QueryRow(t, db, "SELECT coalesce(group_concat(call_id, ','), '') FROM (SELECT call_id FROM tool_calls WHERE turn_id = ? AND state = 'started' ORDER BY id)",
			[]any{turn}, &ids)
		return ids
	}
	if got := started(); got != "c1,c3" {
		t.Errorf("calls still started after reopening: %q, want c1,c3", got)
	}
	if err := db.FinishToolCall(ctx, turn, "c1", "denied", true); err != nil {
		t.Fatal(err)
	}
	var result string
	var isError bool
	store.QueryRow(t, db, "SELECT result, is_error FROM tool_calls WHERE turn_id = ? AND call_id = 'c1'", []any{turn}, &result, &isError)
	if result != "denied" || !isError {
		t.Errorf("c1: result %q is_error %v, want denied, true", result, isError)
	}
	if got := started(); got != "c3" {
		t.Errorf("calls still started after finishing c1: %q, want c3", got)
	}
}

func TestToolResults(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	q := accept(t, db, inbound("1", alice))
	turn, _ := startTurn(t, db, q.ID, nil)
	other, _ := startTurn(t, db, accept(t, db, inbound("2", bob)).ID, nil)

	for _, c := range []llm.ToolCall{{ID: "c1", Name: "fetch"}, {ID: "c2", Name: "shell"}, {ID: "c3", Name: "fetch"}} {
		if err := db.StartToolCall(ctx, turn, 1, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.StartToolCall(ctx, other, 1, llm.ToolCall{ID: "c1", Name: "fetch"}); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishToolCall(ctx, turn, "c1", "page", false); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishToolCall(ctx, turn, "c2", "denied", true); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishToolCall(ctx, other, "c1", "someone else's", false); err != nil {
		t.Fatal(err)
	}

	// They survive a restart, and only finished calls of the turn are listed.
	db.Close()
	db = openAt(t, path)
	got, err := db.ToolResults(ctx, turn)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]agent.ToolResult{"c1": {Content: "page"}, "c2": {Content: "denied", IsError: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}

	// A call started again has no result until it finishes again.
	if err := db.StartToolCall(ctx, turn, 1, llm.ToolCall{ID: "c1", Name: "fetch"}); err != nil {
		t.Fatal(err)
	}
	if got, err := db.ToolResults(ctx, turn); err != nil || len(got) != 1 || got["c2"].Content != "denied" {
		t.Errorf("after restarting c1: %v, %v; want only c2", got, err)
	}
	if got, err := db.ToolResults(ctx, agent.TurnID(9999)); err != nil || len(got) != 0 {
		t.Errorf("unknown turn: %v, %v; want none", got, err)
	}
}
