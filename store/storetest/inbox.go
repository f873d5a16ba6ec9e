package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

var inboxTests = []test{
	{"AcceptInboundDedupes", testAcceptInboundDedupes},
	{"AcceptInboundDefaultsAndErrors", testAcceptInboundDefaultsAndErrors},
	{"AcceptInboundConcurrent", testAcceptInboundConcurrent},
	{"InboundFilesPersist", testInboundFilesPersist},
	{"PendingAfterACrash", testPendingAfterACrash},
	{"StartTurn", testStartTurn},
	{"StartTurnErrors", testStartTurnErrors},
	{"FinishTurn", testFinishTurn},
	{"FinishTurnWithoutTurnRepliesToTheInbound", testFinishTurnWithoutTurn},
	{"FinishTurnErrorsWriteNothing", testFinishTurnErrorsWriteNothing},
	{"FinishTurnRecordsTheFinalStep", testFinishTurnRecordsTheFinalStep},
	{"RecordStepAppendsItsMessages", testRecordStepAppendsItsMessages},
	{"StepsAndToolCalls", testStepsAndToolCalls},
	{"ToolResults", testToolResults},
	{"AmendInbound", testAmendInbound},
	{"AmendInboundKeepsTheNewestEdit", testAmendInboundKeepsTheNewestEdit},
	{"TaintSurvivesRestart", testTaintSurvivesRestart},
	{"ThreadCursor", testThreadCursor},
	{"TurnFiles", testTurnFiles},
	{"UsageMeter", testUsageMeter},
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

func accept(tb testing.TB, db Store, in agent.Inbound) agent.QueuedInbound {
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

func startTurn(tb testing.TB, db Store, id agent.InboundID, user *llm.Message) (agent.TurnID, agent.Session) {
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

func pendingIDs(tb testing.TB, db Store) map[agent.InboundID]bool {
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

func testAcceptInboundDedupes(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	in := inbound("slack:T1:C1:1", alice)

	first, dup, err := db.AcceptInbound(ctx, in)
	if err != nil || dup {
		t.Fatalf("first AcceptInbound: dup=%v err=%v, want false, nil", dup, err)
	}
	want := agent.QueuedInbound{ID: first.ID, Inbound: in}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("first AcceptInbound (-want +got):\n%s", diff)
	}
	before := e.counts(t)

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
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
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

func testAcceptInboundDefaultsAndErrors(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	in := inbound("k", alice)
	in.ReceivedAt = time.Time{}
	q := accept(t, db, in)
	if !q.ReceivedAt.Equal(t0) {
		t.Errorf("ReceivedAt of an inbound without one: got %v, want the clock's %v", q.ReceivedAt, t0)
	}
	if _, _, err := db.AcceptInbound(ctx, inbound("", alice)); err == nil {
		t.Error("AcceptInbound with an empty dedupe key succeeded")
	}
	if got := e.count(t, "inbound"); got != 1 {
		t.Errorf("%d inbound rows, want 1", got)
	}
	// Text the platform sent is kept as it came, whatever it holds.
	odd := inbound("odd", alice)
	odd.Text = "quote ' and \\ backslash, ünïcode ✓, tab\tand\nnewline, 'x'); DROP TABLE inbound; --"
	accept(t, db, odd)
	qs, err := db.Pending(ctx)
	if err != nil || len(qs) != 2 || qs[1].Text != odd.Text {
		t.Errorf("Pending after an odd text: %+v, %v", qs, err)
	}
}

func testAcceptInboundConcurrent(t *testing.T, e *env) {
	const (
		workers = 20
		keys    = 20
	)
	ctx := context.Background()
	db := e.db
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
	counts := e.counts(t)
	if counts["inbound"] != keys || counts["principals"] != 1 {
		t.Errorf("got %d inbound and %d principals, want %d and 1", counts["inbound"], counts["principals"], keys)
	}
}

// An inbound's files survive in the database, so that a message queued
// across a restart is answered with them.
func testInboundFilesPersist(t *testing.T, e *env) {
	in := inbound("slack:T1:C1:1.0001", alice)
	in.Text = ""
	in.Files = []agent.File{{ID: "F1", Name: "a.csv", MediaType: "text/csv", Size: 12, Source: "https://files.slack.com/F1"}}
	if _, _, err := e.db.AcceptInbound(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	pending, err := e.reopen(t).Pending(context.Background())
	if err != nil || len(pending) != 1 {
		t.Fatalf("Pending = %v, %v", pending, err)
	}
	if diff := cmp.Diff(in.Files, pending[0].Files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func testPendingAfterACrash(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q1 := accept(t, db, inbound("1", alice))
	q2 := accept(t, db, inbound("2", bob))
	q3 := accept(t, db, inbound("3", alice))
	startTurn(t, db, q2.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})

	db = e.reopen(t)
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
	// One message by id, as a replica loads an announced one: running,
	// queued, finished (not pending) and unknown.
	for _, c := range []struct {
		id      agent.InboundID
		ok, run bool
	}{{q2.ID, true, true}, {q3.ID, true, false}, {q1.ID, false, false}, {q3.ID + 1000, false, false}} {
		q, ok, err := db.PendingInbound(ctx, c.id)
		if err != nil || ok != c.ok || (ok && (q.ID != c.id || q.Running != c.run || q.Inbound.Text == "")) {
			t.Errorf("PendingInbound(%d) = %+v, %v, %v; want ok %v, running %v", c.id, q, ok, err, c.ok, c.run)
		}
	}
	// The preview of an interrupted turn comes back with its inbound.
	if err := db.RecordPreview(ctx, q2.ID, "preview-2"); err != nil {
		t.Fatal(err)
	}
	qs, err := e.reopen(t).Pending(ctx)
	if err != nil || len(qs) != 2 || qs[0].Preview != "preview-2" || qs[1].Preview != "" {
		t.Errorf("Pending with a preview: %+v, %v", qs, err)
	}

	// Up to one message, with the earlier pending ones of its session:
	// alice's q3 brings nothing of bob's, and q1 is finished.
	db = e.db
	q4 := accept(t, db, inbound("4", alice))
	q5 := accept(t, db, inbound("5", bob))
	for _, c := range []struct {
		id   agent.InboundID
		want []agent.InboundID
	}{{q4.ID, []agent.InboundID{q3.ID, q4.ID}}, {q3.ID, []agent.InboundID{q3.ID}}, {q5.ID, []agent.InboundID{q2.ID, q5.ID}},
		{q2.ID, []agent.InboundID{q2.ID}}, {q1.ID, nil}, {q5.ID + 1000, nil}} {
		qs, err := db.PendingUpTo(ctx, c.id)
		var got []agent.InboundID
		for _, q := range qs {
			got = append(got, q.ID)
			if q.Inbound.Text == "" || (q.ID == q2.ID) != q.Running {
				t.Errorf("PendingUpTo(%d): %+v", c.id, q)
			}
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("PendingUpTo(%d) = %v, %v; want %v", c.id, got, err, c.want)
		}
	}
}

func testStartTurn(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	db = e.reopen(t)
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
	if len(msgs) != 1 {
		t.Fatalf("history after two starts: %d messages, want 1", len(msgs))
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

func testStartTurnErrors(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q := accept(t, db, inbound("1", alice))
	if _, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnFailed, agent.Reply{Kind: agent.ReplyError, Text: "x"}, nil); err != nil {
		t.Fatal(err)
	}
	before := e.counts(t)
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
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("failed StartTurns wrote rows (-before +after):\n%s", diff)
	}
}

func testFinishTurn(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	e.query(t, "SELECT state, finished_at FROM turns WHERE id = ?", []any{int64(turn)}, &turnState, &finished)
	e.query(t, "SELECT state FROM inbound WHERE id = ?", []any{int64(q.ID)}, &inState)
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
	before := e.counts(t)
	if _, err := db.FinishTurn(ctx, q.ID, turn, agent.TurnDone, r, nil); !errors.Is(err, store.ErrFinished) {
		t.Errorf("second FinishTurn: got %v, want ErrFinished", err)
	}
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("second FinishTurn wrote rows (-before +after):\n%s", diff)
	}
}

func testFinishTurnWithoutTurn(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q := accept(t, db, inbound("1", alice))
	id, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnFailed, agent.Reply{Kind: agent.ReplyError, Text: "sorry (ref x1)"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var inState string
	e.query(t, "SELECT state FROM inbound WHERE id = ?", []any{int64(q.ID)}, &inState)
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

func testFinishTurnErrorsWriteNothing(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q1 := accept(t, db, inbound("1", alice))
	q2 := accept(t, db, inbound("2", bob))
	turn1, _ := startTurn(t, db, q1.ID, nil)
	_, s2 := startTurn(t, db, q2.ID, nil)
	before := e.counts(t)
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
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("failed FinishTurns wrote rows (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(map[agent.InboundID]bool{q1.ID: true, q2.ID: true}, pendingIDs(t, db)); diff != "" {
		t.Errorf("Pending after failed FinishTurns (-want +got):\n%s", diff)
	}
}

func testFinishTurnRecordsTheFinalStep(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	var steps, in, out int64
	var stop string
	e.query(t, "SELECT count(*), min(input_tokens), min(output_tokens), max(stop_reason) FROM turn_steps WHERE turn_id = ?",
		[]any{int64(turn)}, &steps, &in, &out, &stop)
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

func testRecordStepAppendsItsMessages(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	before := e.counts(t)
	if err := db.RecordStep(ctx, turn, agent.Step{Session: s.ID + 100, N: 2, Messages: msgs}); err == nil {
		t.Error("RecordStep into an unknown session: got nil error")
	}
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("failed RecordStep wrote rows (-before +after):\n%s", diff)
	}
}

func testStepsAndToolCalls(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	var steps int64
	e.query(t, "SELECT count(*) FROM turn_steps WHERE turn_id = ?", []any{int64(turn)}, &steps)
	var in0, out0, in1, out1 int64
	e.query(t, "SELECT input_tokens, output_tokens FROM turn_steps WHERE turn_id = ? AND step = 0", []any{int64(turn)}, &in0, &out0)
	e.query(t, "SELECT input_tokens, output_tokens FROM turn_steps WHERE turn_id = ? AND step = 1", []any{int64(turn)}, &in1, &out1)
	if steps != 2 || in0+in1 != 31 || out0+out1 != 8 {
		t.Errorf("steps: %d rows, %d in, %d out; want 2, 31, 8", steps, in0+in1, out0+out1)
	}
	// The daily sums count the replaced step once, with its new tokens.
	var ucalls, uin, uout int64
	e.query(t, "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0) FROM usage_daily", nil, &ucalls, &uin, &uout)
	if ucalls != 2 || uin != 31 || uout != 8 {
		t.Errorf("daily usage: %d calls, %d in, %d out; want 2, 31, 8", ucalls, uin, uout)
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

	db = e.reopen(t)
	started := func() []string {
		var ids []string
		for _, c := range calls {
			var state string
			e.query(t, "SELECT state FROM tool_calls WHERE turn_id = ? AND call_id = ?", []any{int64(turn), c.ID}, &state)
			if state == "started" {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	if diff := cmp.Diff([]string{"c1", "c3"}, started()); diff != "" {
		t.Errorf("calls still started after reopening (-want +got):\n%s", diff)
	}
	if err := db.FinishToolCall(ctx, turn, "c1", "denied", true); err != nil {
		t.Fatal(err)
	}
	res, err := db.ToolResults(ctx, turn)
	if err != nil {
		t.Fatal(err)
	}
	if got := res["c1"]; got.Content != "denied" || !got.IsError {
		t.Errorf("c1: %+v, want denied, an error", got)
	}
	if diff := cmp.Diff([]string{"c3"}, started()); diff != "" {
		t.Errorf("calls still started after finishing c1 (-want +got):\n%s", diff)
	}
	if n := e.count(t, "tool_calls"); n != 3 {
		t.Errorf("%d tool call rows, want 3 (one per call)", n)
	}
}

func testToolResults(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	db = e.reopen(t)
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

// AmendInbound changes only a queued inbound: an edit replaces its text, a
// delete finishes it without a reply; a started one is left alone.
func testAmendInbound(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q1 := accept(t, db, inbound("e1", alice))
	q2 := accept(t, db, inbound("e2", alice))
	q3 := accept(t, db, inbound("e3", alice))
	startTurn(t, db, q3.ID, nil)

	if id, changed, err := db.AmendInbound(ctx, "e1", agent.Amendment{Text: "edited"}); err != nil || !changed || id != q1.ID {
		t.Errorf("edit of a queued inbound = %d, %v, %v; want %d, true", id, changed, err, q1.ID)
	}
	if id, changed, err := db.AmendInbound(ctx, "e2", agent.Amendment{Cancel: true}); err != nil || !changed || id != q2.ID {
		t.Errorf("delete of a queued inbound = %d, %v, %v; want %d, true", id, changed, err, q2.ID)
	}
	for _, key := range []string{"e3", "unknown"} {
		if _, changed, err := db.AmendInbound(ctx, key, agent.Amendment{Text: "x"}); err != nil || changed {
			t.Errorf("edit of %s = %v, %v; want unchanged", key, changed, err)
		}
	}
	qs, err := db.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range qs {
		got = append(got, q.DedupeKey+"="+q.Text)
	}
	if diff := cmp.Diff([]string{"e1=edited", "e3=text of e3"}, got); diff != "" {
		t.Errorf("Pending after the amendments (-want +got):\n%s", diff)
	}
	if n := e.count(t, "outbound"); n != 0 {
		t.Errorf("a deleted inbound left %d replies, want none", n)
	}
}

// Edits are applied in the order of the platform's edit times, whatever
// the order they are written in: an edit older than one applied (a replica
// that received it before it stalled writes it late) is refused, without
// error, and the text stays the newer. An edit without a time is applied
// (the last written wins) and keeps the newest time; a deletion is applied
// whatever its time.
func testAmendInboundKeepsTheNewestEdit(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q1 := accept(t, db, inbound("o1", alice))
	accept(t, db, inbound("o2", alice))
	at := func(sec int, usec int) time.Time { return time.Unix(int64(1_700_000_000+sec), int64(usec)*1000) }
	textOf := func(key string) string {
		t.Helper()
		qs, err := db.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if q.DedupeKey == key {
				return q.Text
			}
		}
		return "(not pending)"
	}
	steps := []struct {
		name    string
		key     string
		a       agent.Amendment
		changed bool
		text    string
	}{
		{"the newer edit first", "o1", agent.Amendment{Text: "newer", Edited: at(20, 0)}, true, "newer"},
		{"the older edit late", "o1", agent.Amendment{Text: "older", Edited: at(10, 0)}, false, "newer"},
		{"older by a microsecond", "o1", agent.Amendment{Text: "older", Edited: at(19, 999_999)}, false, "newer"},
		{"the same edit again", "o1", agent.Amendment{Text: "newer", Edited: at(20, 0)}, true, "newer"},
		{"an edit without a time", "o1", agent.Amendment{Text: "untimed"}, true, "untimed"},
		{"an older edit after it", "o1", agent.Amendment{Text: "older", Edited: at(10, 0)}, false, "untimed"},
		{"a newer edit", "o1", agent.Amendment{Text: "newest", Edited: at(30, 1)}, true, "newest"},
		{"an edit of another message", "o2", agent.Amendment{Text: "o2 edited", Edited: at(5, 0)}, true, "o2 edited"},
		{"an older deletion", "o1", agent.Amendment{Cancel: true, Edited: at(1, 0)}, true, "(not pending)"},
	}
	for _, st := range steps {
		id, changed, err := db.AmendInbound(ctx, st.key, st.a)
		if err != nil || changed != st.changed || (changed && st.key == "o1" && id != q1.ID) {
			t.Errorf("%s: %d, %v, %v; want changed %v", st.name, id, changed, err, st.changed)
		}
		if got := textOf(st.key); got != st.text {
			t.Errorf("%s: text %q, want %q", st.name, got, st.text)
		}
	}
}

// A turn's taint is kept on the turn and its session (the first source of
// each), a resumed turn finds it in its session after a reopen, the
// session's next turn too, and a new session starts clean.
func testTaintSurvivesRestart(t *testing.T, e *env) {
	db := e.db
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

	db = e.reopen(t)
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
	e.query(t, `SELECT taint FROM turns WHERE id = ?`, []any{int64(tid)}, &turnTaint)
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

// A thread cursor counts once its turn has started: a read whose turn never
// started (a crash in between) is read again by the next turn, and /new
// starts reading the thread afresh.
func testThreadCursor(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	cursor := func(db Store, s int64) string {
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
	db = e.reopen(t)
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

// A turn's files are listed in the order their calls started, a call's
// file recorded again replaces it, they survive reopening, and a file for
// an unknown turn or without a hash is refused.
func testTurnFiles(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q := accept(t, db, inbound("1", alice))
	turn, _ := startTurn(t, db, q.ID, nil)
	for _, c := range []string{"c2", "c1"} {
		if err := db.StartToolCall(ctx, turn, 1, llm.ToolCall{ID: c, Name: "export"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []agent.TurnFile{
		{CallID: "c1", Name: "a.csv", MediaType: "text/csv", Hash: "h1", Size: 3},
		{CallID: "c2", Name: "b.png", Hash: "h2", Size: 5},
		{CallID: "c1", Name: "a.csv", MediaType: "text/csv", Hash: "h3", Size: 4}, // c1 ran again
	} {
		if err := db.RecordTurnFile(ctx, turn, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.RecordTurnFile(ctx, agent.TurnID(9999), agent.TurnFile{CallID: "c", Name: "x", Hash: "h", Size: 1}); err == nil {
		t.Error("a file of an unknown turn was recorded")
	}
	if err := db.RecordTurnFile(ctx, turn, agent.TurnFile{CallID: "c", Name: "x"}); err == nil {
		t.Error("a file without a hash was recorded")
	}
	db = e.reopen(t)
	got, err := db.TurnFiles(ctx, turn)
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.TurnFile{
		{CallID: "c2", Name: "b.png", Hash: "h2", Size: 5},
		{CallID: "c1", Name: "a.csv", MediaType: "text/csv", Hash: "h3", Size: 4},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files, in the order their calls started (-want +got):\n%s", diff)
	}
	if other, err := db.TurnFiles(ctx, agent.TurnID(9999)); err != nil || len(other) != 0 {
		t.Errorf("files of an unknown turn: %v, %v", other, err)
	}
}

// The usage meter sums a principal's and a workspace's tokens from the
// steps recorded; a step recorded again (a resumed turn) replaces its
// figures.
func testUsageMeter(t *testing.T, e *env) {
	ctx := context.Background()
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	e.clk.set(now)
	db := e.db
	p := agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}
	key := agent.SessionKey{Principal: p, Conversation: agent.Conversation{Channel: "C1"}}
	q := accept(t, db, agent.Inbound{DedupeKey: "k1", Key: key, Text: "hi"})
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	tid, sess := startTurn(t, db, q.ID, &user)
	step := func(n, in, out int) {
		t.Helper()
		if err := db.RecordStep(ctx, tid, agent.Step{Session: sess.ID, N: n, Model: "m", Usage: llm.Usage{InputTokens: in, OutputTokens: out}}); err != nil {
			t.Fatal(err)
		}
	}
	step(1, 100, 10)
	step(1, 300, 30) // the same step again: replaces
	step(2, 5, 1)
	// Someone else in the workspace, and someone in another one.
	other := key
	other.Principal.User = "U2"
	elsewhere := key
	elsewhere.Principal.Workspace = "T2"
	for i, k := range []agent.SessionKey{other, elsewhere} {
		q := accept(t, db, agent.Inbound{DedupeKey: fmt.Sprint("o", i), Key: k, Text: "hi"})
		tid, s := startTurn(t, db, q.ID, nil)
		if _, err := db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "x"},
			&agent.Step{Session: s.ID, N: 1, Model: "m", Usage: llm.Usage{InputTokens: 1000, OutputTokens: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	day := now.Truncate(24 * time.Hour)
	for _, tt := range []struct {
		name string
		f    func() (int64, error)
		want int64
	}{
		{"principal today", func() (int64, error) { return db.PrincipalTokens(ctx, p, day) }, 336},
		{"principal since a time of day", func() (int64, error) { return db.PrincipalTokens(ctx, p, now.Add(time.Hour)) }, 336},
		{"principal since tomorrow", func() (int64, error) { return db.PrincipalTokens(ctx, p, day.Add(24*time.Hour)) }, 0},
		{"workspace", func() (int64, error) { return db.WorkspaceTokens(ctx, "slack", "T1", now.AddDate(0, 0, -3)) }, 336 + 1001},
		{"unknown principal", func() (int64, error) {
			return db.PrincipalTokens(ctx, agent.Principal{Platform: "slack", Workspace: "T1", User: "U9"}, day)
		}, 0},
	} {
		if n, err := tt.f(); err != nil || n != tt.want {
			t.Errorf("%s: %d tokens, %v; want %d", tt.name, n, err, tt.want)
		}
	}

	// The next day, a resumed turn that records step 2 again moves its
	// figures to today.
	e.clk.set(now.Add(24 * time.Hour))
	step(2, 7, 2)
	if n, err := db.PrincipalTokens(ctx, p, day.Add(24*time.Hour)); err != nil || n != 9 {
		t.Errorf("tokens of the next day: %d, %v; want 9", n, err)
	}
	if n, err := db.PrincipalTokens(ctx, p, day); err != nil || n != 339 {
		t.Errorf("tokens of both days: %d, %v; want 339", n, err)
	}
	// A model call that is not a step (a summary) counts too.
	if err := db.RecordModelUse(ctx, sess.ID, "m", llm.Usage{InputTokens: 40, OutputTokens: 2}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.PrincipalTokens(ctx, p, day.Add(24*time.Hour)); err != nil || n != 51 {
		t.Errorf("tokens with a summary's: %d, %v; want 51", n, err)
	}
}
