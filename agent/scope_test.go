package agent_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// announcer is a Dispatcher that keeps what it is handed.
type announcer struct {
	mu  sync.Mutex
	got []agent.QueuedInbound // guarded by mu
}

func (a *announcer) Dispatch(_ context.Context, q agent.QueuedInbound) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, q)
	return nil
}

func (a *announcer) all() []agent.QueuedInbound {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]agent.QueuedInbound(nil), a.got...)
}

func user(name string) func(agent.SessionKey) bool {
	return func(k agent.SessionKey) bool { return k.Principal.User == name }
}

// TestDispatchedMessagesRunOnlyInTheirScope: with a Dispatcher, Accept
// hands messages to it and runs nothing; Adopt runs the pending messages
// of the sessions it is given, and Take skips one already queued.
func TestDispatchedMessagesRunOnlyInTheirScope(t *testing.T) {
	d := &announcer{}
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) { rt.Dispatch = d })
	q1 := h.send("u1", "one")
	h.send("u2", "two")
	if got := len(d.all()); got != 2 {
		t.Fatalf("dispatched %d messages, want 2", got)
	}
	h.idle()
	if got := h.ch.texts(); len(got) != 0 {
		t.Fatalf("replies before any scope: %q, want none", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sc, err := h.rt.Adopt(ctx, user("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Take(q1) {
		t.Error("Take of a message the adoption queued: true, want false")
	}
	h.idle()
	if diff := cmp.Diff([]string{"echo: one"}, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if sc.Take(q1) {
		t.Error("Take of a message answered here: true, want false")
	}
	cancel()
	sc.Wait()
	if sc.Take(d.all()[1]) {
		t.Error("Take after the scope ended: true, want false")
	}
	pending, err := h.db.Pending(context.Background())
	if err != nil || len(pending) != 1 || pending[0].Key.Principal.User != "u2" {
		t.Errorf("pending: %+v, %v; want u2's message", pending, err)
	}
}

// TestScopeEndInterruptsATurnForTheNextOwner: ending a scope while its
// turn waits for the model leaves the turn running in the store with no
// reply; the next adoption resumes it and answers once.
func TestScopeEndInterruptsATurnForTheNextOwner(t *testing.T) {
	var (
		mu    sync.Mutex
		calls int
	)
	started := make(chan struct{})
	h := newHarness(t, func(r llmtest.Request) llmtest.Response {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			close(started)
			return llmtest.Response{Hang: true}
		}
		return llmtest.Response{Text: "answered"}
	}, func(rt *agent.Runtime) { rt.Dispatch = &announcer{} })
	q := h.send("u1", "question")

	ctx, cancel := context.WithCancel(context.Background())
	sc, err := h.rt.Adopt(ctx, user("u1"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the turn did not call the model")
	}
	cancel()
	sc.Wait()
	if got := h.ch.texts(); len(got) != 0 {
		t.Fatalf("replies after the scope ended: %q, want none", got)
	}
	pending, err := h.db.Pending(context.Background())
	if err != nil || len(pending) != 1 || pending[0].ID != q.ID || !pending[0].Running {
		t.Fatalf("pending: %+v, %v; want the message, running", pending, err)
	}

	sc2, err := h.rt.Adopt(context.Background(), user("u1"))
	if err != nil {
		t.Fatal(err)
	}
	_ = sc2
	h.idle()
	if diff := cmp.Diff([]string{"answered"}, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

// TestTakeOfAMessageFinishedElsewhereDeliversItsReply: a message taken
// for its turn was meanwhile finished by another process (a replica cut
// off, whose last writes landed after this one adopted the session), which
// could not deliver the reply. The turn does not run again, and the reply
// that process persisted is delivered here.
func TestTakeOfAMessageFinishedElsewhereDeliversItsReply(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	h := startHarness(t, filepath.Join(t.TempDir(), "talon.db"), srv, &recorder{}, func(rt *agent.Runtime) { rt.Dispatch = &announcer{} })
	q := h.send("u1", "question")
	ctx := context.Background()
	tid, _, _, err := h.db.StartTurn(ctx, q.ID, &llm.Message{Role: llm.RoleUser, Content: "question"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "answered elsewhere"}, nil); err != nil {
		t.Fatal(err)
	}
	sc, err := h.rt.Adopt(ctx, user("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Take(q) {
		t.Fatal("Take of a message this process has not seen: false")
	}
	h.idle()
	if diff := cmp.Diff([]string{"answered elsewhere"}, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("the model was called %d times for a message answered elsewhere", n)
	}
	if reps, err := h.db.Undelivered(ctx); err != nil || len(reps) != 0 {
		t.Errorf("undelivered after the take: %+v, %v; want none", reps, err)
	}
}
