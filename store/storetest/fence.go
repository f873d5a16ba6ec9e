package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

var fenceTests = []test{
	{"FenceRefusesTheWritesOfASupersededClaim", testFenceRefusesStaleWrites},
	{"FenceLeavesAReplyPendingForTheNewOwner", testFenceLeavesAReplyPending},
	{"FenceRefusesToStartATurnOfASupersededClaim", testFenceRefusesStaleStart},
}

// twoClaims returns ctx carrying an older claim of fence name (token 5),
// and carrying a newer one (token 9).
func twoClaims(ctx context.Context, name string) (old, cur context.Context) {
	return agent.WithFence(ctx, agent.Fence{Name: name, Token: 5}), agent.WithFence(ctx, agent.Fence{Name: name, Token: 9})
}

// A replica that took a partition over records its claim's token
// (AdvanceFence); the previous owner's writes of a turn under its older
// token are then refused with agent.ErrFenced and write nothing: a tool
// call's start and result, a step, the turn's end and reply. Writes under
// the new token, without a fence, or under another name go on; a token
// is never taken back.
func testFenceRefusesStaleWrites(t *testing.T, e *env) {
	ctx := context.Background()
	oldOwner, newOwner := e.db, e.replica(t)
	const name = "partition 3 of test"
	old, cur := twoClaims(ctx, name)
	other := agent.WithFence(ctx, agent.Fence{Name: "partition 4 of test", Token: 1})

	q := accept(t, oldOwner, inbound("f1", alice))
	turn, sess := startTurn(t, oldOwner, q.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})
	// Before any claim is recorded, and under the current one, writes go on.
	if err := oldOwner.StartToolCall(old, turn, 1, llm.ToolCall{ID: "c1", Name: "fetch", Arguments: `{}`}); err != nil {
		t.Fatalf("StartToolCall before any fence: %v", err)
	}
	if err := oldOwner.AdvanceFence(ctx, name, 5); err != nil {
		t.Fatal(err)
	}
	if err := oldOwner.StartToolCall(old, turn, 1, llm.ToolCall{ID: "c2", Name: "fetch", Arguments: `{}`}); err != nil {
		t.Fatalf("StartToolCall under the current token: %v", err)
	}

	// The new owner's claim supersedes it.
	if err := newOwner.AdvanceFence(ctx, name, 9); err != nil {
		t.Fatal(err)
	}
	before := e.counts(t)
	step := agent.Step{Session: sess.ID, N: 1, StopReason: "tool_calls",
		Messages: []llm.Message{{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c3", Name: "fetch", Arguments: `{}`}}}}}
	writes := map[string]func(ctx context.Context, db Store) error{
		"StartToolCall": func(ctx context.Context, db Store) error {
			return db.StartToolCall(ctx, turn, 2, llm.ToolCall{ID: "c3", Name: "fetch", Arguments: `{}`})
		},
		"FinishToolCall": func(ctx context.Context, db Store) error {
			return db.FinishToolCall(ctx, turn, "c1", "late result", false)
		},
		"RecordStep": func(ctx context.Context, db Store) error { return db.RecordStep(ctx, turn, step) },
		"FinishTurn": func(ctx context.Context, db Store) error {
			_, err := db.FinishTurn(ctx, q.ID, turn, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "late answer"}, nil)
			return err
		},
	}
	for what, write := range writes {
		if err := write(old, oldOwner); !errors.Is(err, agent.ErrFenced) {
			t.Errorf("%s under the superseded token: %v, want ErrFenced", what, err)
		}
	}
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("writes under the superseded token changed rows (-before +after):\n%s", diff)
	}
	var state, result string
	e.query(t, "SELECT state, result FROM tool_calls WHERE turn_id = ? AND call_id = ?", []any{int64(turn), "c1"}, &state, &result)
	if state != "started" || result != "" {
		t.Errorf("call c1 after a refused FinishToolCall: %s %q, want started with no result", state, result)
	}
	if len(pendingIDs(t, oldOwner)) != 1 {
		t.Error("a refused FinishTurn finished the inbound")
	}

	// A token is never taken back; the same one again is no change.
	if err := oldOwner.AdvanceFence(ctx, name, 5); !errors.Is(err, agent.ErrFenced) {
		t.Errorf("AdvanceFence back to 5 after 9: %v, want ErrFenced", err)
	}
	if err := newOwner.AdvanceFence(ctx, name, 9); err != nil {
		t.Errorf("AdvanceFence to the recorded token again: %v", err)
	}

	// The new owner writes on, as do writes without a fence or under
	// another name.
	for _, what := range []string{"StartToolCall", "FinishToolCall", "RecordStep"} {
		if err := writes[what](cur, newOwner); err != nil {
			t.Errorf("%s under the current token: %v", what, err)
		}
	}
	if err := oldOwner.StartToolCall(ctx, turn, 3, llm.ToolCall{ID: "c4", Name: "fetch", Arguments: `{}`}); err != nil {
		t.Errorf("StartToolCall without a fence: %v", err)
	}
	if err := oldOwner.StartToolCall(other, turn, 3, llm.ToolCall{ID: "c5", Name: "fetch", Arguments: `{}`}); err != nil {
		t.Errorf("StartToolCall under another name: %v", err)
	}
	if err := writes["FinishTurn"](cur, newOwner); err != nil {
		t.Errorf("FinishTurn under the current token: %v", err)
	}
	e.query(t, "SELECT state, result FROM tool_calls WHERE turn_id = ? AND call_id = ?", []any{int64(turn), "c1"}, &state, &result)
	if state != "finished" || result != "late result" {
		t.Errorf("call c1 finished under the current token: %s %q", state, result)
	}
	if len(pendingIDs(t, newOwner)) != 0 {
		t.Error("FinishTurn under the current token left the inbound pending")
	}
}

// A sleeper that wakes after its delivery attempts cannot mark a reply
// failed under its superseded token: MarkFailed fails with agent.ErrFenced
// and the reply stays pending, for the new owner to deliver. Under the
// current token it is marked failed. What records a posting (a delivery
// mark, a posted part) is not fenced: refusing it would make the new owner
// post the reply again.
func testFenceLeavesAReplyPending(t *testing.T, e *env) {
	ctx := context.Background()
	oldOwner, newOwner := e.db, e.replica(t)
	const name = "partition 5 of test"
	old, cur := twoClaims(ctx, name)
	rs := replies(t, oldOwner, 4)
	if err := oldOwner.AdvanceFence(ctx, name, 5); err != nil {
		t.Fatal(err)
	}
	if err := oldOwner.MarkFailed(old, rs[0].ID, "gone"); err != nil {
		t.Fatalf("MarkFailed under the current token: %v", err)
	}
	if err := newOwner.AdvanceFence(ctx, name, 9); err != nil {
		t.Fatal(err)
	}

	// context.WithoutCancel, as the delivery's marks are made, keeps the fence.
	if err := oldOwner.MarkFailed(context.WithoutCancel(old), rs[1].ID, "attempts used up"); !errors.Is(err, agent.ErrFenced) {
		t.Errorf("MarkFailed under the superseded token: %v, want ErrFenced", err)
	}
	if diff := cmp.Diff(replyRow{State: "pending"}, e.readReply(t, rs[1].ID)); diff != "" {
		t.Errorf("reply after a refused MarkFailed (-want +got):\n%s", diff)
	}
	if err := oldOwner.RecordPart(old, rs[2].ID, agent.PostedPart{N: 0, PlatformID: "p1"}); err != nil {
		t.Errorf("RecordPart under the superseded token: %v", err)
	}
	if err := oldOwner.MarkDelivered(old, rs[2].ID, "p1"); err != nil {
		t.Errorf("MarkDelivered under the superseded token: %v", err)
	}
	if got := e.readReply(t, rs[2].ID).State; got != "delivered" {
		t.Errorf("reply marked delivered under the superseded token is %s", got)
	}
	got, err := newOwner.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []agent.ReplyID
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	if diff := cmp.Diff([]agent.ReplyID{rs[1].ID, rs[3].ID}, ids); diff != "" {
		t.Errorf("Undelivered for the new owner (-want +got):\n%s", diff)
	}

	if err := newOwner.MarkFailed(cur, rs[1].ID, "attempts used up"); err != nil {
		t.Errorf("MarkFailed under the current token: %v", err)
	}
	if got := e.readReply(t, rs[1].ID); got.State != "failed" || got.Reason != "attempts used up" {
		t.Errorf("reply marked failed under the current token: %+v", got)
	}
	if err := oldOwner.MarkFailed(ctx, rs[3].ID, "no fence"); err != nil {
		t.Errorf("MarkFailed without a fence: %v", err)
	}
}

// A sleeper that wakes with a message it had taken cannot start its turn
// under its superseded token, nor resume one: StartTurn fails with
// agent.ErrFenced and writes nothing (the message stays queued, no
// session or turn is made, no question appended), and the new owner
// starts it.
func testFenceRefusesStaleStart(t *testing.T, e *env) {
	ctx := context.Background()
	oldOwner, newOwner := e.db, e.replica(t)
	const name = "partition 7 of test"
	old, cur := twoClaims(ctx, name)
	started := accept(t, oldOwner, inbound("s1", alice))
	queued := accept(t, oldOwner, inbound("s2", bob))
	if err := oldOwner.AdvanceFence(ctx, name, 5); err != nil {
		t.Fatal(err)
	}
	user := &llm.Message{Role: llm.RoleUser, Content: "hi"}
	turn, _, resumed, err := oldOwner.StartTurn(old, started.ID, user)
	if err != nil || resumed {
		t.Fatalf("StartTurn under the current token: %v, resumed %v", err, resumed)
	}
	if err := newOwner.AdvanceFence(ctx, name, 9); err != nil {
		t.Fatal(err)
	}

	before := e.counts(t)
	for what, id := range map[string]agent.InboundID{"a queued message": queued.ID, "a started one": started.ID} {
		if _, _, _, err := oldOwner.StartTurn(old, id, user); !errors.Is(err, agent.ErrFenced) {
			t.Errorf("StartTurn of %s under the superseded token: %v, want ErrFenced", what, err)
		}
	}
	if diff := cmp.Diff(before, e.counts(t)); diff != "" {
		t.Errorf("StartTurn under the superseded token changed rows (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(map[agent.InboundID]bool{started.ID: true, queued.ID: false}, pendingIDs(t, newOwner)); diff != "" {
		t.Errorf("pending messages, running or not (-want +got):\n%s", diff)
	}

	if _, _, resumed, err := newOwner.StartTurn(cur, queued.ID, user); err != nil || resumed {
		t.Errorf("StartTurn of the queued message under the current token: %v, resumed %v", err, resumed)
	}
	if got, _, resumed, err := newOwner.StartTurn(cur, started.ID, user); err != nil || !resumed || got != turn {
		t.Errorf("StartTurn of the started message under the current token: turn %d, resumed %v, %v; want turn %d resumed", got, resumed, err, turn)
	}
}
