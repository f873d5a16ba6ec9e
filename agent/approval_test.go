package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// askRecorder is a recorder that can ask for approvals.
type askRecorder struct {
	recorder
	mu          sync.Mutex
	prompts     []agent.ApprovalPrompt
	done        []agent.ApprovalState
	donePrompts []agent.ApprovalPrompt
	asked       chan agent.ApprovalPrompt
	// hold, when set, keeps AskApproval from returning until it is closed
	// (a post that takes a while).
	hold chan struct{}
}

func newAsker() *askRecorder { return &askRecorder{asked: make(chan agent.ApprovalPrompt, 16)} }

func (a *askRecorder) AskApproval(_ context.Context, p agent.ApprovalPrompt) (string, error) {
	a.mu.Lock()
	a.prompts = append(a.prompts, p)
	a.mu.Unlock()
	a.asked <- p
	if a.hold != nil {
		<-a.hold
	}
	return "msg-" + itoa(p.ID), nil
}

func itoa(id agent.ApprovalID) string { return fmt.Sprint(int64(id)) }

func (a *askRecorder) ApprovalDone(_ context.Context, p agent.ApprovalPrompt, st agent.ApprovalState, _ agent.Principal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done = append(a.done, st)
	a.donePrompts = append(a.donePrompts, p)
	return nil
}

// deployTools has one tool that needs approval through the runtime.
type deployTools struct {
	rt   *agent.Runtime
	runs atomic.Int32
}

func (d *deployTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "deploy", Description: "Deploy.", Parameters: json.RawMessage(`{"type":"object"}`)}}, nil
}

func (d *deployTools) Run(ctx context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	ok, err := d.rt.RequestApproval(ctx, agent.ApprovalRequest{Key: c.Key, Turn: c.Turn, CallID: c.ID, Tool: c.Name, Description: "deploy to production"})
	if err != nil {
		return agent.ToolResult{}, err
	}
	if !ok {
		return agent.ToolResult{IsError: true, Content: "not approved"}, nil
	}
	d.runs.Add(1)
	return agent.ToolResult{Content: "deployed"}, nil
}

// deployScript asks for the tool once, then reports its result.
func deployScript(req llmtest.Request) llmtest.Response {
	last := req.Messages[len(req.Messages)-1]
	if last.Role == llm.RoleTool {
		return llmtest.Response{Text: "result: " + last.Content}
	}
	return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "d1", Name: "deploy", Arguments: `{}`}}}
}

func startWithAsker(t *testing.T, path string, srv *llmtest.Server, ch *askRecorder, mod func(*agent.Runtime)) (*harness, *deployTools) {
	t.Helper()
	tools := &deployTools{}
	h := startHarnessCh(t, path, srv, ch, func(rt *agent.Runtime) {
		tools.rt = rt
		rt.Tools = tools
		if mod != nil {
			mod(rt)
		}
	})
	return h, tools
}

func TestApprovalByOwnerOthersAndDoubleClick(t *testing.T) {
	ch := newAsker()
	srv := llmtest.NewServer(t, deployScript)
	h, tools := startWithAsker(t, filepath.Join(t.TempDir(), "t.db"), srv, ch, nil)
	h.send("u1", "ship it")
	p := <-ch.asked
	if p.Tool != "deploy" || p.Description != "deploy to production" || p.Key != key("u1") {
		t.Errorf("prompt: %+v", p)
	}
	ctx := context.Background()
	other := key("u2").Principal
	if st, err := h.rt.Decide(ctx, p.ID, other, true); !errors.Is(err, agent.ErrNotOwner) || st != agent.ApprovalPending {
		t.Errorf("someone else: %s, %v; want pending, ErrNotOwner", st, err)
	}
	if st, err := h.rt.Decide(ctx, p.ID, key("u1").Principal, true); err != nil || st != agent.ApprovalApproved {
		t.Errorf("owner: %s, %v", st, err)
	}
	if st, err := h.rt.Decide(ctx, p.ID, key("u1").Principal, false); !errors.Is(err, agent.ErrDecided) || st != agent.ApprovalApproved {
		t.Errorf("double click: %s, %v; want approved, ErrDecided", st, err)
	}
	h.idle()
	if got := h.ch.texts(); len(got) != 1 || got[0] != "result: deployed" {
		t.Errorf("replies: %q", got)
	}
	if tools.runs.Load() != 1 {
		t.Errorf("tool ran %d times", tools.runs.Load())
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.done) != 1 || ch.done[0] != agent.ApprovalApproved {
		t.Errorf("outcomes shown: %v", ch.done)
	}
	if _, err := h.rt.Decide(ctx, 9999, key("u1").Principal, true); !errors.Is(err, agent.ErrUnknownApproval) {
		t.Errorf("unknown id: %v", err)
	}
}

func TestApprovalExpiresAsDenied(t *testing.T) {
	ch := newAsker()
	srv := llmtest.NewServer(t, deployScript)
	h, tools := startWithAsker(t, filepath.Join(t.TempDir(), "t.db"), srv, ch, func(rt *agent.Runtime) { rt.ApprovalTimeout = 50 * time.Millisecond })
	h.send("u1", "ship it")
	<-ch.asked
	h.idle()
	if got := h.ch.texts(); len(got) != 1 || got[0] != "result: not approved" {
		t.Errorf("replies: %q", got)
	}
	if tools.runs.Load() != 0 {
		t.Error("the tool ran without approval")
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.done) != 1 || ch.done[0] != agent.ApprovalExpired {
		t.Errorf("outcomes shown: %v", ch.done)
	}
}

func TestPendingApprovalSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	srv := llmtest.NewServer(t, deployScript)
	ch1 := newAsker()
	h1, _ := startWithAsker(t, path, srv, ch1, nil)
	h1.send("u1", "ship it")
	first := <-ch1.asked
	h1.stop()

	ch2 := newAsker()
	h2, tools := startWithAsker(t, path, srv, ch2, nil)
	again := <-ch2.asked
	if again.ID != first.ID {
		t.Errorf("after restart the approval is %d, want the same %d", again.ID, first.ID)
	}
	if _, err := h2.rt.Decide(context.Background(), again.ID, key("u1").Principal, true); err != nil {
		t.Fatal(err)
	}
	h2.idle()
	if got := h2.ch.texts(); len(got) != 1 || got[0] != "result: deployed" {
		t.Errorf("replies after restart: %q", got)
	}
	if tools.runs.Load() != 1 {
		t.Errorf("tool ran %d times after restart", tools.runs.Load())
	}
}

func TestAmendQueuedMessage(t *testing.T) {
	release := make(chan struct{})
	srv := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		if req.LastUserText() == "first" {
			<-release
		}
		return llmtest.Response{Text: "echo: " + req.LastUserText()}
	})
	h := startHarness(t, filepath.Join(t.TempDir(), "t.db"), srv, &recorder{}, nil)
	ctx := context.Background()
	send := func(k, text string) {
		if _, err := h.rt.Accept(ctx, agent.Inbound{DedupeKey: k, Key: key("u1"), Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	send("m1", "first")
	send("m2", "typo")
	send("m3", "deleted")
	waitFor(t, func() bool { return len(srv.Requests()) == 1 })
	if ok, err := h.rt.Amend(ctx, "m1", agent.Amendment{Text: "too late"}); ok || err != nil {
		t.Errorf("amend of a started turn: %v, %v", ok, err)
	}
	if ok, err := h.rt.Amend(ctx, "m2", agent.Amendment{Text: "fixed"}); !ok || err != nil {
		t.Errorf("edit: %v, %v", ok, err)
	}
	if ok, err := h.rt.Amend(ctx, "m3", agent.Amendment{Cancel: true}); !ok || err != nil {
		t.Errorf("delete: %v, %v", ok, err)
	}
	close(release)
	h.idle()
	if got := strings.Join(h.ch.texts(), "|"); got != "echo: first|echo: fixed" {
		t.Errorf("replies: %q", got)
	}
}

// amendBlocker is the real store, with AmendInbound held until released.
type amendBlocker struct {
	*store.DB
	entered chan struct{} // gets a value when an AmendInbound starts
	release chan struct{} // closed to let it write
}

func (s *amendBlocker) AmendInbound(ctx context.Context, dedupeKey string, a agent.Amendment) (agent.InboundID, bool, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.DB.AmendInbound(ctx, dedupeKey, a)
}

// notifier is a recorder that also sends each delivered reply on a channel.
type notifier struct {
	recorder
	delivered chan agent.Reply
}

func (c *notifier) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	id, err := c.recorder.Deliver(ctx, r)
	c.delivered <- r
	return id, err
}

// within receives from ch, failing the test if nothing comes in 10 s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing in 10 s", what)
		panic("unreachable")
	}
}

// While an Amend writes to the store, other messages are accepted and
// answered; the amended message's own worker waits for the amendment and
// then answers the amended text (or nothing, if it was cancelled).
func TestAmendDoesNotBlockQueueing(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancel), func(t *testing.T) {
			firstAsked, releaseFirst := make(chan struct{}, 1), make(chan struct{})
			srv := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
				if req.LastUserText() == "first" {
					firstAsked <- struct{}{}
					<-releaseFirst
				}
				return llmtest.Response{Text: "echo: " + req.LastUserText()}
			})
			blocker := &amendBlocker{entered: make(chan struct{}, 1), release: make(chan struct{})}
			held := make(chan agent.InboundID, 4)
			ch := &notifier{delivered: make(chan agent.Reply, 16)}
			h := startHarnessCh(t, filepath.Join(t.TempDir(), "t.db"), srv, ch, func(rt *agent.Runtime) {
				blocker.DB = rt.Store.(*store.DB)
				rt.Store = blocker
				agent.OnHold(rt, func(id agent.InboundID) { held <- id })
			})
			var firstOnce, writeOnce sync.Once
			letFirstAnswer := func() { firstOnce.Do(func() { close(releaseFirst) }) }
			letAmendWrite := func() { writeOnce.Do(func() { close(blocker.release) }) }
			t.Cleanup(letFirstAnswer)
			t.Cleanup(letAmendWrite)
			ctx := context.Background()

			h.send("u1", "first")
			typo := h.send("u1", "typo")
			within(t, firstAsked, "the first turn's model call")

			amended := make(chan error, 1)
			go func() {
				ok, err := h.rt.Amend(ctx, typo.DedupeKey, agent.Amendment{Text: "fixed", Cancel: cancel})
				if err == nil && !ok {
					err = errors.New("Amend reported no change")
				}
				amended <- err
			}()
			within(t, blocker.entered, "Amend's store write")

			// The write is in progress: another session's message is
			// accepted and answered meanwhile.
			accepted := make(chan error, 1)
			go func() {
				_, err := h.rt.Accept(ctx, agent.Inbound{DedupeKey: "other-1", Key: key("u2"), Text: "other"})
				accepted <- err
			}()
			if err := within(t, accepted, "Accept during an Amend"); err != nil {
				t.Fatal(err)
			}
			if r := within(t, ch.delivered, "the other session's reply"); r.Text != "echo: other" {
				t.Errorf("reply during the Amend: %q, want echo: other", r.Text)
			}

			// The first turn ends; its worker reaches the message being
			// amended and waits for the amendment.
			letFirstAnswer()
			if r := within(t, ch.delivered, "the first reply"); r.Text != "echo: first" {
				t.Errorf("first reply: %q", r.Text)
			}
			if id := within(t, held, "the worker waiting for the Amend"); id != typo.ID {
				t.Errorf("the worker waited for inbound %d, want %d", id, typo.ID)
			}
			letAmendWrite()
			if err := within(t, amended, "Amend"); err != nil {
				t.Fatalf("Amend: %v", err)
			}
			h.idle()

			var u1 []string
			for _, r := range ch.all() {
				if r.Key.Principal.User == "u1" {
					u1 = append(u1, r.Text)
				}
			}
			want := []string{"echo: first", "echo: fixed"}
			if cancel {
				want = want[:1]
			}
			if diff := cmp.Diff(want, u1); diff != "" {
				t.Errorf("u1's replies (-want +got):\n%s", diff)
			}
			for _, req := range srv.Requests() {
				if strings.Contains(string(req.Raw), "typo") {
					t.Errorf("the model saw the text before the amendment")
				}
			}
		})
	}
}
