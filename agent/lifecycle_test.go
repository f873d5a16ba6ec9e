package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// gateTool has one tool, "slow", whose calls wait until the test lets them
// finish (or their context ends) and then answer "42".
type gateTool struct {
	started chan string   // gets each call's id as it starts
	release chan struct{} // closed to let the calls finish
	runs    atomic.Int32
}

func newGateTool() *gateTool {
	return &gateTool{started: make(chan string, 8), release: make(chan struct{})}
}

func (g *gateTool) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "slow", Description: "Slow.", Parameters: json.RawMessage(`{"type":"object"}`)}}, nil
}

func (g *gateTool) Run(ctx context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	g.runs.Add(1)
	g.started <- c.ID
	select {
	case <-g.release:
		return agent.ToolResult{Content: "42"}, nil
	case <-ctx.Done():
		return agent.ToolResult{Content: "cancelled", IsError: true}, nil
	}
}

// toolThen asks for the slow tool once, then answers with what then says.
func toolThen(then func(llmtest.Request) llmtest.Response) llmtest.Handler {
	return func(req llmtest.Request) llmtest.Response {
		if req.Messages[len(req.Messages)-1].Role == llm.RoleUser {
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "s1", Name: "slow", Arguments: `{}`}}}
		}
		return then(req)
	}
}

// shutdownAsync starts Shutdown and returns once the intake has stopped,
// with a channel that gets Shutdown's result.
func shutdownAsync(t *testing.T, rt *agent.Runtime, ctx context.Context) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- rt.Shutdown(ctx) }()
	within(t, rt.Stopping(), "the intake to stop")
	return done
}

// toolResults are the tool results req sends, as "id: content".
func toolResults(req llmtest.Request) []string {
	var out []string
	for _, m := range req.Messages {
		if m.Role == llm.RoleTool {
			out = append(out, m.ToolCallID+": "+m.Content)
		}
	}
	return out
}

// Shutdown stops the intake first: a message sent once it began is
// refused with ErrStopping (so the channel does not acknowledge it), while
// the running turn goes on. Its tool call finishes during the grace, the
// turn finishes and its reply is delivered before Shutdown returns.
func TestShutdownLetsRunningTurnsFinish(t *testing.T) {
	tool := newGateTool()
	srv := llmtest.NewServer(t, toolThen(func(req llmtest.Request) llmtest.Response {
		return llmtest.Response{Text: "the tool said " + req.Messages[len(req.Messages)-1].Content}
	}))
	h := startHarness(t, filepath.Join(t.TempDir(), "talon.db"), srv, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tool })
	h.send("u1", "use the tool")
	within(t, tool.started, "the tool call")

	done := shutdownAsync(t, h.rt, context.Background())
	_, err := h.rt.Accept(context.Background(), agent.Inbound{DedupeKey: "late", Key: key("u2"), Text: "too late"})
	if !errors.Is(err, agent.ErrStopping) {
		t.Fatalf("Accept during shutdown: %v, want ErrStopping", err)
	}
	close(tool.release)
	if err := within(t, done, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v, want nil (the turn finished in the grace)", err)
	}
	if diff := cmp.Diff([]string{"the tool said 42"}, h.ch.texts()); diff != "" {
		t.Errorf("replies when Shutdown returned (-want +got):\n%s", diff)
	}
	pending, err := h.db.Pending(context.Background())
	if err != nil || len(pending) != 0 {
		t.Errorf("messages left for the next start: %v, %v; want none (the late one was never accepted)", pending, err)
	}
}

// A tool call that finishes during the grace is recorded even when the
// turn cannot finish in it: the resumed turn gives the model that result,
// not "interrupted", and does not run the tool again.
func TestShutdownRecordsToolResultsOfTheGrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	tool := newGateTool()
	asked := make(chan struct{}, 1)
	srv1 := llmtest.NewServer(t, toolThen(func(llmtest.Request) llmtest.Response {
		asked <- struct{}{}
		return llmtest.Response{Hang: true} // outlasts the grace
	}))
	h1 := startHarness(t, path, srv1, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tool })
	h1.send("u1", "use the tool")
	within(t, tool.started, "the tool call")

	grace, endGrace := context.WithCancel(context.Background())
	defer endGrace()
	done := shutdownAsync(t, h1.rt, grace)
	close(tool.release) // the call finishes during the grace
	within(t, asked, "the turn's next model call")
	endGrace()
	if err := within(t, done, "Shutdown"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want the grace's end", err)
	}
	h1.stop()
	if got := h1.ch.texts(); len(got) != 0 {
		t.Fatalf("replies before the restart: %q", got)
	}

	tool2 := newGateTool()
	srv2 := llmtest.NewServer(t, llmtest.Text("done"))
	h2 := startHarness(t, path, srv2, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tool2 })
	h2.idle()
	if diff := cmp.Diff([]string{"done"}, h2.ch.texts()); diff != "" {
		t.Errorf("replies after the restart (-want +got):\n%s", diff)
	}
	if n := tool2.runs.Load(); n != 0 {
		t.Errorf("the tool ran %d times after the restart", n)
	}
	reqs := srv2.Requests()
	if len(reqs) != 1 {
		t.Fatalf("model calls after the restart: %d, want 1", len(reqs))
	}
	if diff := cmp.Diff([]string{"s1: 42"}, toolResults(reqs[0])); diff != "" {
		t.Errorf("tool results of the resumed turn (-want +got):\n%s", diff)
	}
}

// When the grace ends while a tool call runs, the call is not recorded
// (its result is the cancellation, not the tool's): the resumed turn tells
// the model it was interrupted, and does not run it again.
func TestShutdownGraceEndInterruptsToolCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	tool := newGateTool()
	srv1 := llmtest.NewServer(t, toolThen(func(llmtest.Request) llmtest.Response { return llmtest.Response{Text: "unexpected"} }))
	h1 := startHarness(t, path, srv1, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tool })
	h1.send("u1", "use the tool")
	within(t, tool.started, "the tool call")
	grace, endGrace := context.WithCancel(context.Background())
	done := shutdownAsync(t, h1.rt, grace)
	endGrace()
	if err := within(t, done, "Shutdown"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want the grace's end", err)
	}
	h1.stop()

	tool2 := newGateTool()
	srv2 := llmtest.NewServer(t, llmtest.Text("done"))
	h2 := startHarness(t, path, srv2, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tool2 })
	h2.idle()
	reqs := srv2.Requests()
	if len(reqs) != 1 {
		t.Fatalf("model calls after the restart: %d, want 1", len(reqs))
	}
	if got := toolResults(reqs[0]); len(got) != 1 || !strings.HasPrefix(got[0], "s1: interrupted") {
		t.Errorf("tool results of the resumed turn: %q, want s1 interrupted", got)
	}
	if n := tool2.runs.Load(); n != 0 {
		t.Errorf("the tool ran %d times after the restart", n)
	}
}

// stuckChannel cannot deliver one reply (its platform is down for it): the
// delivery waits until released or its context ends. Every other reply is
// delivered.
type stuckChannel struct {
	recorder
	stuckText string
	entered   chan struct{} // gets a value when the stuck delivery starts
	release   chan struct{}
}

func (c *stuckChannel) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	if r.Text == c.stuckText {
		select {
		case c.entered <- struct{}{}:
		default:
		}
		select {
		case <-c.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return c.recorder.Deliver(ctx, r)
}

// Replies a previous process left undelivered are delivered in the
// background: a platform that hangs delays neither Ready nor Accept, and
// Shutdown ends the stuck delivery when its grace ends, leaving the reply
// for the next start.
func TestRecoveryDeliversInTheBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "a", Key: key("u1"), Text: "earlier"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnDone, agent.Reply{Kind: agent.ReplyNotice, Text: "left undelivered"}, nil); err != nil {
		t.Fatal(err)
	}

	ch := &stuckChannel{stuckText: "left undelivered", entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := llmtest.NewServer(t, llmtest.Echo())
	rt := &agent.Runtime{Store: db, LLM: provider(t, srv.URL), Log: zerolog.Nop()}
	rt.Register(ch)
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- rt.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		db.Close()
	})
	within(t, ch.entered, "the stuck delivery")
	select {
	case <-rt.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready in 10 s while a recovered reply could not be delivered")
	}
	if _, err := rt.Accept(ctx, agent.Inbound{DedupeKey: "b", Key: key("u2"), Text: "new"}); err != nil {
		t.Fatalf("Accept: %v", err)
	}
	waitFor(t, func() bool { return len(ch.texts()) == 1 })
	if diff := cmp.Diff([]string{"echo: new"}, ch.texts()); diff != "" {
		t.Errorf("replies while the platform hangs for the old one (-want +got):\n%s", diff)
	}

	sctx, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if err := rt.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want the grace's end", err)
	}
	left, err := db.Undelivered(ctx)
	if err != nil || len(left) != 1 || left[0].Text != "left undelivered" {
		t.Errorf("undelivered after the stop: %v, %v; want the stuck reply, for the next start", left, err)
	}
}

// A runtime that is stopped, with messages queued behind a running turn,
// answers all of them at the next start, in order; none is lost.
func TestShutdownKeepsQueuedMessages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	tool := newGateTool()
	srv1 := llmtest.NewServer(t, toolThen(func(req llmtest.Request) llmtest.Response {
		return llmtest.Response{Text: "first done"}
	}))
	h1 := startHarness(t, path, srv1, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tool })
	h1.send("u1", "first")
	within(t, tool.started, "the tool call")
	for i := range 3 {
		h1.send("u1", fmt.Sprintf("queued %d", i))
	}
	done := shutdownAsync(t, h1.rt, context.Background())
	close(tool.release)
	if err := within(t, done, "Shutdown"); err != nil {
		t.Fatal(err)
	}
	h1.stop()
	if diff := cmp.Diff([]string{"first done"}, h1.ch.texts()); diff != "" {
		t.Errorf("replies before the restart (-want +got):\n%s", diff)
	}
	srv2 := llmtest.NewServer(t, llmtest.Echo())
	h2 := startHarness(t, path, srv2, &recorder{}, nil)
	h2.idle()
	want := []string{"echo: queued 0", "echo: queued 1", "echo: queued 2"}
	if diff := cmp.Diff(want, h2.ch.texts()); diff != "" {
		t.Errorf("replies after the restart (-want +got):\n%s", diff)
	}
}
