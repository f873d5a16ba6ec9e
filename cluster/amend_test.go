package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// gated answers like echo, but a message "block" waits until open is
// closed; entered is signalled when it starts waiting.
type gated struct {
	entered chan struct{}
	open    chan struct{}
}

func (gated) Name() string  { return "gated" }
func (gated) Model() string { return "gated-1" }
func (g gated) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	last := ""
	for _, m := range req.Messages {
		if m.Role == llm.RoleUser {
			last = m.Content
		}
	}
	if last == "block" {
		g.entered <- struct{}{}
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant, Content: "re: " + last}}, nil
}

// sessionOf returns a session whose partition r holds.
func sessionOf(t *testing.T, f *fixture, r *replica, user int) agent.SessionKey {
	t.Helper()
	held := map[int]bool{}
	for _, p := range r.node.Held() {
		held[p] = true
	}
	for th := range 10000 {
		if k := key(user, th); held[f.cfg.partition(k)] {
			return k
		}
	}
	t.Fatalf("no session in %s's partitions", r.id)
	return agent.SessionKey{}
}

// TestEditReachesTheReplicaThatRunsTheSession: b runs a session whose
// first turn is busy; an edit and a deletion of its queued messages reach
// a (the platform sent them there). The reply answers the edited text,
// the deleted message is never answered, a started one is not changed, and
// an older edit written after the newer one (at either replica) is refused.
func TestEditReachesTheReplicaThatRunsTheSession(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	g := gated{entered: make(chan struct{}, 1), open: make(chan struct{})}
	f.model = g
	a, b := f.start("a"), f.start("b")
	eventually(t, 10*testTTL, "a and b hold 4 partitions each", func() bool {
		return len(a.node.Held()) == 4 && len(b.node.Held()) == 4
	})
	k := sessionOf(t, f, b, 1)
	ctx := context.Background()
	accept := func(dedupe, text string) agent.InboundID {
		q, err := a.rt.Accept(ctx, agent.Inbound{DedupeKey: dedupe, Key: k, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return q.ID
	}
	first := accept("e1", "block")
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first turn did not start")
	}
	second := accept("e2", "original")
	third := accept("e3", "to delete")
	if ok, err := a.rt.Amend(ctx, "e2", agent.Amendment{Text: "edited", Edited: time.Unix(1_700_000_020, 0)}); err != nil || !ok {
		t.Fatalf("edit of a queued message at another replica: %v, %v; want true", ok, err)
	}
	// An older edit written after it (by a replica that received it
	// before it stalled) is refused, at either replica: the newer text
	// stays.
	for _, r := range []*replica{a, b} {
		if ok, err := r.rt.Amend(ctx, "e2", agent.Amendment{Text: "older", Edited: time.Unix(1_700_000_010, 0)}); err != nil || ok {
			t.Fatalf("older edit at %s after a newer one: %v, %v; want false", r.id, ok, err)
		}
	}
	if ok, err := a.rt.Amend(ctx, "e3", agent.Amendment{Cancel: true}); err != nil || !ok {
		t.Fatalf("deletion of a queued message at another replica: %v, %v; want true", ok, err)
	}
	if ok, err := a.rt.Amend(ctx, "e1", agent.Amendment{Text: "too late"}); err != nil || ok {
		t.Fatalf("edit of a started message: %v, %v; want false", ok, err)
	}
	close(g.open)
	f.checkAnswered([]agent.InboundID{first, second}, 60*time.Second)
	if err := b.rt.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if got := f.d.text[second]; got != "re: edited" {
		t.Errorf("reply to the edited message: %q, want %q", got, "re: edited")
	}
	if got := f.d.text[first]; got != "re: block" {
		t.Errorf("reply to the started message: %q", got)
	}
	if by := f.d.by[third]; len(by) != 0 {
		t.Errorf("the deleted message was answered by %v", by)
	}
}

// TestEditOfAMessageNotTakenYet: a message in the store whose
// announcement was lost (not queued anywhere yet) is edited through
// another replica; its owner takes it as edited.
func TestEditOfAMessageNotTakenYet(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	f.cfg.Sweep = time.Hour // only the hold brings the message to its owner
	a, b := f.start("a"), f.start("b")
	eventually(t, 10*testTTL, "a and b hold 4 partitions each", func() bool {
		return len(a.node.Held()) == 4 && len(b.node.Held()) == 4
	})
	// Every partition adopted: none will find the message by itself.
	eventually(t, 10*testTTL, "a and b serve 4 partitions each", func() bool {
		return a.node.serving() == 4 && b.node.serving() == 4
	})
	k := sessionOf(t, f, b, 2)
	ctx := context.Background()
	q, _, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "late", Key: k, Text: "original", ReceivedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := a.rt.Amend(ctx, "late", agent.Amendment{Text: "edited"}); err != nil || !ok {
		t.Fatalf("edit: %v, %v; want true", ok, err)
	}
	f.checkAnswered([]agent.InboundID{q.ID}, 60*time.Second)
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if got := f.d.text[q.ID]; got != "re: edited" {
		t.Errorf("reply: %q, want %q", got, "re: edited")
	}
	if by := f.d.by[q.ID]; len(by) != 1 || by[0] != "b" {
		t.Errorf("answered by %v, want b (the owner)", by)
	}
	// An unknown message is not changed, and says so at once.
	if ok, err := a.rt.Amend(ctx, "never", agent.Amendment{Text: "x"}); err != nil || ok {
		t.Errorf("edit of an unknown message: %v, %v", ok, err)
	}
}

// serving is how many partitions have adopted their sessions here.
func (n *Node) serving() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.scopes)
}
