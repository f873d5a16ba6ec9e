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
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// recorder is a Channel that keeps every delivered reply.
type recorder struct {
	mu      sync.Mutex
	replies []agent.Reply // guarded by mu
	fail    int           // deliveries still to fail; guarded by mu
}

func (c *recorder) Platform() string { return "test" }

func (c *recorder) Deliver(_ context.Context, r agent.Reply) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail > 0 {
		c.fail--
		return "", errors.New("platform unavailable")
	}
	c.replies = append(c.replies, r)
	return fmt.Sprintf("m%d", r.ID), nil
}

func (c *recorder) all() []agent.Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]agent.Reply(nil), c.replies...)
}

func (c *recorder) texts() []string {
	var out []string
	for _, r := range c.all() {
		out = append(out, r.Text)
	}
	return out
}

// harness is a runtime on a real SQLite file and a fake LLM.
type harness struct {
	t    *testing.T
	rt   *agent.Runtime
	db   *store.DB
	llm  *llmtest.Server
	ch   channel
	stop func() // stops Run and waits for it
	path string
}

func provider(t testing.TB, url string) llm.Provider {
	t.Helper()
	p, err := llm.NewOpenAI(llm.Config{BaseURL: url, Model: "test-model", MaxRetries: -1, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newHarness(t *testing.T, h llmtest.Handler, mod func(*agent.Runtime)) *harness {
	t.Helper()
	srv := llmtest.NewServer(t, h)
	return startHarness(t, filepath.Join(t.TempDir(), "talon.db"), srv, &recorder{}, mod)
}

func startHarness(t *testing.T, path string, srv *llmtest.Server, ch *recorder, mod func(*agent.Runtime)) *harness {
	t.Helper()
	return startHarnessCh(t, path, srv, ch, mod)
}

// channel is what a test channel offers: a Channel that records replies.
type channel interface {
	agent.Channel
	all() []agent.Reply
	texts() []string
}

func startHarnessCh(t *testing.T, path string, srv *llmtest.Server, ch channel, mod func(*agent.Runtime)) *harness {
	t.Helper()
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	rt := &agent.Runtime{Store: db, LLM: provider(t, srv.URL), Log: zerolog.Nop(),
		Limits: agent.Limits{ShutdownGrace: 50 * time.Millisecond}}
	if mod != nil {
		mod(rt)
	}
	rt.Register(ch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			db.Close()
		})
	}
	t.Cleanup(stop)
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	}
	return &harness{t: t, rt: rt, db: db, llm: srv, ch: ch, stop: stop, path: path}
}

func key(user string) agent.SessionKey {
	return agent.SessionKey{Principal: agent.Principal{Platform: "test", Workspace: "W", User: user}, Conversation: agent.Conversation{Channel: "C1"}}
}

var seq atomic.Int64

// send accepts a message for user and fails the test on error.
func (h *harness) send(user, text string) agent.QueuedInbound {
	h.t.Helper()
	q, err := h.rt.Accept(context.Background(), agent.Inbound{DedupeKey: fmt.Sprintf("k%d", seq.Add(1)), Key: key(user), Text: text})
	if err != nil {
		h.t.Fatalf("Accept: %v", err)
	}
	return q
}

func (h *harness) idle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.rt.WaitIdle(ctx); err != nil {
		h.t.Fatalf("WaitIdle: %v", err)
	}
}

func TestConversationKeepsHistory(t *testing.T) {
	h := newHarness(t, llmtest.Echo(), nil)
	h.send("u1", "hello")
	h.idle()
	h.send("u1", "again")
	h.idle()
	if diff := cmp.Diff([]string{"echo: hello", "echo: again"}, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	reqs := h.llm.Requests()
	last := reqs[len(reqs)-1]
	var got []string
	for _, m := range last.Messages {
		got = append(got, string(m.Role)+":"+m.Content)
	}
	want := []string{"user:hello", "assistant:echo: hello", "user:again"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("second request's history (-want +got):\n%s", diff)
	}
	if last.System == "" {
		t.Error("no system prompt sent")
	}
}

func TestDuplicateInboundGivesOneTurn(t *testing.T) {
	h := newHarness(t, llmtest.Echo(), nil)
	in := agent.Inbound{DedupeKey: "slack:T1:C1:1.0001", Key: key("u1"), Text: "once"}
	if _, err := h.rt.Accept(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rt.Accept(context.Background(), in); !errors.Is(err, agent.ErrDuplicate) {
		t.Fatalf("second Accept: got %v, want ErrDuplicate", err)
	}
	h.idle()
	if got := len(h.llm.Requests()); got != 1 {
		t.Errorf("LLM requests: got %d, want 1", got)
	}
	if got := h.ch.texts(); len(got) != 1 {
		t.Errorf("replies: got %q, want one", got)
	}
}

func TestManySessionsKeepOrderAndAnswerOnce(t *testing.T) {
	const sessions, messages = 200, 10
	h := newHarness(t, llmtest.Echo(), nil)
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range messages {
				_, err := h.rt.Accept(context.Background(), agent.Inbound{
					DedupeKey: fmt.Sprintf("s%d-m%d", s, m), Key: key(fmt.Sprintf("u%d", s)), Text: fmt.Sprintf("s%d m%d", s, m)})
				if err != nil {
					t.Errorf("Accept: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	h.idle()
	per := map[string][]string{}
	for _, r := range h.ch.all() {
		per[r.Key.Principal.User] = append(per[r.Key.Principal.User], r.Text)
	}
	if len(per) != sessions {
		t.Fatalf("sessions answered: got %d, want %d", len(per), sessions)
	}
	for s := range sessions {
		var want []string
		for m := range messages {
			want = append(want, fmt.Sprintf("echo: s%d m%d", s, m))
		}
		if diff := cmp.Diff(want, per[fmt.Sprintf("u%d", s)]); diff != "" {
			t.Fatalf("session %d replies (-want +got):\n%s", s, diff)
		}
	}
}

// toolRunner is a ToolRunner for tests: "add" sums its arguments.
type toolRunner struct {
	mu    sync.Mutex
	calls []agent.ToolCall // guarded by mu
}

func (r *toolRunner) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "add", Description: "Add two numbers.", Parameters: json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}}}`)}}, nil
}

func (r *toolRunner) Run(_ context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	var a struct{ A, B float64 }
	if err := json.Unmarshal(c.Args, &a); err != nil {
		return agent.ToolResult{IsError: true, Content: err.Error()}, nil
	}
	return agent.ToolResult{Content: fmt.Sprint(a.A + a.B)}, nil
}

func TestToolCallsRunInParallelAndFeedBack(t *testing.T) {
	tools := &toolRunner{}
	h := newHarness(t, llmtest.Script(
		llmtest.Response{ToolCalls: []llm.ToolCall{
			{ID: "c1", Name: "add", Arguments: `{"a":1,"b":2}`},
			{ID: "c2", Name: "add", Arguments: `{"a":10,"b":20}`},
			{ID: "c3", Name: "add", Arguments: `{"a":`},          // invalid JSON
			{ID: "c4", Name: "rm_rf", Arguments: `{"path":"/"}`}, // unknown tool
		}},
		llmtest.Response{Text: "3 and 30"},
	), func(rt *agent.Runtime) { rt.Tools = tools })
	h.send("u1", "add things")
	h.idle()
	if diff := cmp.Diff([]string{"3 and 30"}, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if got := len(tools.calls); got != 2 {
		t.Errorf("tool runs: got %d, want 2 (invalid and unknown calls must not run)", got)
	}
	reqs := h.llm.Requests()
	if len(reqs) != 2 {
		t.Fatalf("LLM requests: got %d, want 2", len(reqs))
	}
	if diff := cmp.Diff([]string{"add"}, reqs[0].Tools); diff != "" {
		t.Errorf("tools offered (-want +got):\n%s", diff)
	}
	results := map[string]llm.Message{}
	for _, m := range reqs[1].Messages {
		if m.Role == llm.RoleTool {
			results[m.ToolCallID] = m
		}
	}
	for id, want := range map[string]string{"c1": "3", "c2": "30", "c3": "not valid JSON", "c4": "unknown tool"} {
		if got := results[id].Content; !strings.Contains(got, want) {
			t.Errorf("result of %s: got %q, want it to contain %q", id, got, want)
		}
	}
}

func TestLLMFailuresLeaveSessionUsable(t *testing.T) {
	cases := []struct {
		name string
		fail llmtest.Response
		want string
	}{
		{"rate limited", llmtest.Response{Status: 429, Header: map[string]string{"Retry-After": "1"}}, "rate limiting"},
		{"server error", llmtest.Response{Status: 500}, "could not reach the model"},
		{"timeout", llmtest.Response{Hang: true}, "took longer"},
		{"malformed body", llmtest.Response{RawBody: `<html><body>proxy error</body></html>`}, "could not use"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			h := newHarness(t, func(req llmtest.Request) llmtest.Response {
				if n.Add(1) == 1 {
					return tc.fail
				}
				return llmtest.Response{Text: "echo: " + req.LastUserText()}
			}, func(rt *agent.Runtime) { rt.Limits.TurnTimeout = 300 * time.Millisecond })
			h.send("u1", "first")
			h.idle()
			h.send("u1", "second")
			h.idle()
			got := h.ch.all()
			if len(got) != 2 {
				t.Fatalf("replies: got %d, want 2", len(got))
			}
			if got[0].Kind != agent.ReplyError || !strings.Contains(got[0].Text, tc.want) || !strings.Contains(got[0].Text, "ref ") {
				t.Errorf("failure reply: got %s %q, want an error containing %q and a ref", got[0].Kind, got[0].Text, tc.want)
			}
			if got[1].Text != "echo: second" {
				t.Errorf("next reply: got %q, want %q", got[1].Text, "echo: second")
			}
		})
	}
}

func TestCommandsAnsweredWithoutModel(t *testing.T) {
	h := newHarness(t, llmtest.Echo(), nil)
	h.send("u1", "remember 42")
	h.idle()
	h.send("u1", "/help")
	h.send("u1", "/status")
	h.send("u1", "/new")
	h.send("u1", "what did I say?")
	h.idle()
	got := h.ch.all()
	if len(got) != 5 {
		t.Fatalf("replies: got %d, want 5", len(got))
	}
	for i, want := range []string{"/new", "Session", "fresh conversation"} {
		if r := got[i+1]; r.Kind != agent.ReplyNotice || !strings.Contains(r.Text, want) {
			t.Errorf("reply %d: got %s %q, want a notice containing %q", i+1, r.Kind, r.Text, want)
		}
	}
	reqs := h.llm.Requests()
	if len(reqs) != 2 {
		t.Fatalf("LLM requests: got %d, want 2 (commands never reach the model)", len(reqs))
	}
	if n := len(reqs[1].Messages); n != 1 {
		t.Errorf("after /new the model got %d messages, want 1", n)
	}
}

// memoryTools is a toolRunner with a memory budget.
type memoryTools struct {
	toolRunner
	mem agent.ToolMemory
}

func (m *memoryTools) ToolMemory() agent.ToolMemory { return m.mem }

// /status shows the tools' memory budget and its waits when the tool
// runner has one, and nothing about it otherwise.
func TestStatusShowsToolMemory(t *testing.T) {
	tools := &memoryTools{mem: agent.ToolMemory{Used: 48 << 20, Limit: 256 << 20, Waiting: 3, Waits: 4, WaitTime: 2 * time.Second}}
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) { rt.Tools = tools })
	h.send("u1", "/status")
	h.idle()
	want := "Tool memory: 48.0 of 256 MiB in use; 3 tool calls waiting for memory now (4 waited so far, 500ms on average)."
	if got := h.ch.texts(); len(got) != 1 || !strings.HasSuffix(got[0], want) {
		t.Errorf("status = %q, want it to end with %q", got, want)
	}

	plain := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) { rt.Tools = &toolRunner{} })
	plain.send("u1", "/status")
	plain.idle()
	if got := plain.ch.texts(); len(got) != 1 || strings.Contains(got[0], "Tool memory") {
		t.Errorf("status without a memory budget = %q", got)
	}
}

func TestRateLimitRepliesPolitely(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHarness(t, llmtest.Echo(), func(rt *agent.Runtime) {
		rt.Now = clock
		rt.Limits.RatePerMinute = 2
	})
	for _, m := range []string{"a", "b", "c"} {
		h.send("u1", m)
	}
	h.send("u2", "other user")
	h.idle()
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	h.send("u1", "d")
	h.idle()
	got := h.ch.texts()
	if len(got) != 5 {
		t.Fatalf("replies: got %q", got)
	}
	limited := 0
	for _, s := range got {
		if strings.Contains(s, "faster than I can") {
			limited++
		}
	}
	if limited != 1 || !strings.Contains(strings.Join(got, "|"), "echo: d") || !strings.Contains(strings.Join(got, "|"), "echo: other user") {
		t.Errorf("replies: got %q, want exactly one polite refusal for u1's third message", got)
	}
	// A minute on, both buckets were full again: only the one u1 just used
	// is kept, so the map does not grow with every user ever seen.
	if got, want := agent.RateBuckets(h.rt), 1; got != want {
		t.Errorf("rate buckets after a quiet minute: got %d, want %d", got, want)
	}
}

func TestDeliveryRetriesThenSucceeds(t *testing.T) {
	ch := &recorder{fail: 1}
	srv := llmtest.NewServer(t, llmtest.Echo())
	h := startHarness(t, filepath.Join(t.TempDir(), "talon.db"), srv, ch, nil)
	h.send("u1", "hi")
	h.idle()
	if diff := cmp.Diff([]string{"echo: hi"}, ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	left, err := h.db.Undelivered(context.Background())
	if err != nil || len(left) != 0 {
		t.Errorf("undelivered after success: %v, %v", left, err)
	}
}

func TestShutdownMidTurnResumesAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	hang := llmtest.NewServer(t, func(llmtest.Request) llmtest.Response { return llmtest.Response{Hang: true} })
	h1 := startHarness(t, path, hang, &recorder{}, nil)
	h1.send("u1", "slow question")
	h1.send("u1", "queued behind it")
	waitFor(t, func() bool { return len(hang.Requests()) > 0 })
	h1.stop()
	if got := h1.ch.all(); len(got) != 0 {
		t.Fatalf("replies before restart: %v", got)
	}

	srv := llmtest.NewServer(t, llmtest.Echo())
	h2 := startHarness(t, path, srv, &recorder{}, nil)
	h2.idle()
	want := []string{"echo: slow question", "echo: queued behind it"}
	if diff := cmp.Diff(want, h2.ch.texts()); diff != "" {
		t.Errorf("replies after restart (-want +got):\n%s", diff)
	}
	first := srv.Requests()[0]
	users := 0
	for _, m := range first.Messages {
		if m.Role == llm.RoleUser {
			users++
		}
	}
	if users != 1 {
		t.Errorf("resumed turn sent %d user messages, want 1 (no duplicate)", users)
	}
}

func TestRecoveryDeliversUndeliveredAndRepairsInterruptedToolCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	// A previous process: one reply persisted but never delivered, and one
	// turn that died while a tool call ran.
	q1, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "a", Key: key("u1"), Text: "earlier"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishTurn(ctx, q1.ID, 0, agent.TurnDone, agent.Reply{Key: key("u1"), Kind: agent.ReplyNotice, Text: "persisted, not delivered"}, nil); err != nil {
		t.Fatal(err)
	}
	q2, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "b", Key: key("u1"), Text: "use the tool"})
	if err != nil {
		t.Fatal(err)
	}
	tid, sess, _, err := db.StartTurn(ctx, q2.ID, &llm.Message{Role: llm.RoleUser, Content: "use the tool"})
	if err != nil {
		t.Fatal(err)
	}
	call := llm.ToolCall{ID: "c1", Name: "add", Arguments: `{"a":1,"b":1}`}
	if err := db.AppendMessages(ctx, sess.ID, tid, llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call}}); err != nil {
		t.Fatal(err)
	}
	if err := db.StartToolCall(ctx, tid, 1, call); err != nil {
		t.Fatal(err)
	}
	db.Close()

	tools := &toolRunner{}
	srv := llmtest.NewServer(t, llmtest.Text("done"))
	h := startHarness(t, path, srv, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tools })
	h.idle()
	if diff := cmp.Diff([]string{"persisted, not delivered", "done"}, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if len(tools.calls) != 0 {
		t.Errorf("the interrupted tool call ran again")
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("LLM requests: %d", len(reqs))
	}
	var res llm.Message
	for _, m := range reqs[0].Messages {
		if m.Role == llm.RoleTool {
			res = m
		}
	}
	if res.ToolCallID != "c1" || !strings.Contains(res.Content, "interrupted") {
		t.Errorf("resumed turn's tool result: %+v", res)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// errCrashed is what crashStore's writes return once the process has "died".
var errCrashed = errors.New("test: the process died before this write")

// crashStore is the real store of a process that dies at one chosen write
// of a turn: that write and every later one fail, as if they never reached
// the disk, and the turn is left running for the next process to resume.
type crashStore struct {
	*store.DB
	at   string // the write to die at: "finish c2", "append tool results"
	once sync.Once
	dead atomic.Bool
}

func (s *crashStore) write(op string) error {
	if op == s.at {
		s.once.Do(func() { s.dead.Store(true) })
	}
	if s.dead.Load() {
		return errCrashed
	}
	return nil
}

func (s *crashStore) RecordStep(ctx context.Context, t agent.TurnID, st agent.Step) error {
	if err := s.write("record step"); err != nil {
		return err
	}
	return s.DB.RecordStep(ctx, t, st)
}

func (s *crashStore) StartToolCall(ctx context.Context, t agent.TurnID, step int, c llm.ToolCall) error {
	if err := s.write("start " + c.ID); err != nil {
		return err
	}
	return s.DB.StartToolCall(ctx, t, step, c)
}

func (s *crashStore) FinishToolCall(ctx context.Context, t agent.TurnID, callID, result string, isError bool) error {
	if err := s.write("finish " + callID); err != nil {
		return err
	}
	return s.DB.FinishToolCall(ctx, t, callID, result, isError)
}

func (s *crashStore) AppendMessages(ctx context.Context, sid agent.SessionID, t agent.TurnID, msgs ...llm.Message) error {
	op := "append"
	if len(msgs) > 0 && msgs[0].Role == llm.RoleTool {
		op = "append tool results"
	}
	if err := s.write(op); err != nil {
		return err
	}
	return s.DB.AppendMessages(ctx, sid, t, msgs...)
}

func (s *crashStore) FinishTurn(ctx context.Context, id agent.InboundID, t agent.TurnID, st agent.TurnState, r agent.Reply, last *agent.Step) (agent.ReplyID, error) {
	if err := s.write("finish turn"); err != nil {
		return 0, err
	}
	return s.DB.FinishTurn(ctx, id, t, st, r, last)
}

// A turn whose tool calls ran and whose results were recorded, but not yet
// appended to the history when the process died, resumes with the recorded
// results: once each, in the order of the calls, and without running a tool
// again. Only a call with no recorded result is reported as interrupted.
func TestRecoveryUsesRecordedToolResults(t *testing.T) {
	interrupted := "interrupted: the gateway restarted"
	cases := []struct {
		name, crashAt string
		want          []llm.Message // the results the resumed turn sends
	}{
		{"died before appending the results", "append tool results", []llm.Message{
			{Role: llm.RoleTool, ToolCallID: "c1", ToolName: "add", Content: "3"},
			{Role: llm.RoleTool, ToolCallID: "c2", ToolName: "add", Content: "30"},
		}},
		{"died while recording the second result", "finish c2", []llm.Message{
			{Role: llm.RoleTool, ToolCallID: "c1", ToolName: "add", Content: "3"},
			{Role: llm.RoleTool, ToolCallID: "c2", ToolName: "add", Content: interrupted, IsError: true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "talon.db")
			tools1 := &toolRunner{}
			srv1 := llmtest.NewServer(t, llmtest.Script(llmtest.Response{ToolCalls: []llm.ToolCall{
				{ID: "c1", Name: "add", Arguments: `{"a":1,"b":2}`},
				{ID: "c2", Name: "add", Arguments: `{"a":10,"b":20}`},
			}}))
			var crash *crashStore
			h1 := startHarness(t, path, srv1, &recorder{}, func(rt *agent.Runtime) {
				crash = &crashStore{DB: rt.Store.(*store.DB), at: tc.crashAt}
				rt.Store = crash
				rt.Tools = tools1
				rt.Limits.ToolParallelism = 1 // c1 is recorded before c2 runs
			})
			h1.send("u1", "add things")
			h1.idle()
			h1.stop()
			if !crash.dead.Load() {
				t.Fatalf("the process did not die at %q", tc.crashAt)
			}
			if n := len(tools1.calls); n != 2 {
				t.Fatalf("tool runs before the crash: %d, want 2", n)
			}
			if got := h1.ch.all(); len(got) != 0 {
				t.Fatalf("replies before the crash: %v", got)
			}

			tools2 := &toolRunner{}
			srv2 := llmtest.NewServer(t, llmtest.Text("done"))
			h2 := startHarness(t, path, srv2, &recorder{}, func(rt *agent.Runtime) { rt.Tools = tools2 })
			h2.idle()
			if diff := cmp.Diff([]string{"done"}, h2.ch.texts()); diff != "" {
				t.Errorf("replies after restart (-want +got):\n%s", diff)
			}
			if n := len(tools2.calls); n != 0 {
				t.Errorf("after restart a tool ran %d times; a call is never run again", n)
			}

			// What the model read on resuming.
			reqs := srv2.Requests()
			if len(reqs) != 1 {
				t.Fatalf("LLM requests after restart: %d, want 1", len(reqs))
			}
			var sent []string
			for _, m := range reqs[0].Messages {
				sent = append(sent, fmt.Sprintf("%s %s %.34s", m.Role, m.ToolCallID, m.Content))
			}
			want := []string{"user  add things", "assistant  "}
			for _, m := range tc.want {
				want = append(want, fmt.Sprintf("%s %s %.34s", m.Role, m.ToolCallID, m.Content))
			}
			if diff := cmp.Diff(want, sent); diff != "" {
				t.Errorf("resumed request (-want +got):\n%s", diff)
			}

			// What the history keeps: each result once, right after the
			// call, then the answer.
			sess, err := h2.db.ActiveSession(context.Background(), key("u1"))
			if err != nil {
				t.Fatal(err)
			}
			stored, err := h2.db.Recent(context.Background(), sess.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			var results []llm.Message
			var roles []llm.Role
			for _, m := range stored {
				roles = append(roles, m.Message.Role)
				if m.Message.Role == llm.RoleTool {
					res := m.Message
					if res.IsError {
						res.Content = res.Content[:len(interrupted)]
					}
					results = append(results, res)
				}
			}
			wantRoles := []llm.Role{llm.RoleUser, llm.RoleAssistant, llm.RoleTool, llm.RoleTool, llm.RoleAssistant}
			if diff := cmp.Diff(wantRoles, roles); diff != "" {
				t.Errorf("history roles (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, results); diff != "" {
				t.Errorf("history's tool results (-want +got):\n%s", diff)
			}
			// The recorded result is kept, not overwritten.
			recorded, err := h2.db.ToolResults(context.Background(), stored[0].Turn)
			if err != nil {
				t.Fatal(err)
			}
			if got := recorded["c1"]; got != (agent.ToolResult{Content: "3"}) {
				t.Errorf("c1's recorded result: %+v, want 3", got)
			}
		})
	}
}

// slowTools has one tool that runs until its context ends, then reports
// what it did.
type slowTools struct{}

func (slowTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "slow", Description: "Slow.", Parameters: json.RawMessage(`{"type":"object"}`)}}, nil
}

func (slowTools) Run(ctx context.Context, _ agent.ToolCall) (agent.ToolResult, error) {
	<-ctx.Done()
	return agent.ToolResult{Content: "half done"}, nil
}

// A turn whose deadline passes during a tool call fails, but the call's
// result goes into the history: the next turn reads it, not an
// "interrupted" call.
func TestTurnTimeoutKeepsToolResults(t *testing.T) {
	var n atomic.Int32
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if n.Add(1) == 1 {
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "s1", Name: "slow", Arguments: `{}`}}}
		}
		return llmtest.Response{Text: "ok"}
	}, func(rt *agent.Runtime) {
		rt.Tools = slowTools{}
		rt.Limits.TurnTimeout = 200 * time.Millisecond
	})
	h.send("u1", "slow work")
	h.idle()
	h.send("u1", "next")
	h.idle()
	got := h.ch.all()
	if len(got) != 2 || !strings.Contains(got[0].Text, "took longer") || got[1].Text != "ok" {
		t.Fatalf("replies: %v", got)
	}
	reqs := h.llm.Requests()
	var res []string
	for _, m := range reqs[len(reqs)-1].Messages {
		if m.Role == llm.RoleTool {
			res = append(res, m.ToolCallID+": "+m.Content)
		}
	}
	if diff := cmp.Diff([]string{"s1: half done"}, res); diff != "" {
		t.Errorf("tool results the next turn sent (-want +got):\n%s", diff)
	}
}

// talonSyntax is a channel whose users type commands as /talon subcommands.
type talonSyntax struct{ recorder }

func (*talonSyntax) CommandHint(c agent.Command) string { return "/talon " + string(c) }

func TestHintsUseTheChannelsCommandSyntax(t *testing.T) {
	ch := &talonSyntax{}
	srv := llmtest.NewServer(t, llmtest.Text(" "))
	h := startHarnessCh(t, filepath.Join(t.TempDir(), "talon.db"), srv, ch, nil)
	h.send("u1", "/help")
	h.send("u1", "hello")
	h.idle()
	got := ch.texts()
	if len(got) != 2 {
		t.Fatalf("replies: got %d, want 2", len(got))
	}
	for _, want := range []string{"/talon new:", "/talon secret add:", "/talon secrets:", "/talon help:"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("help: got %q, want it to contain %q", got[0], want)
		}
	}
	if strings.Contains(got[0], "  /secret") || strings.Contains(got[0], "  /new") {
		t.Errorf("help names a command this channel does not take: %q", got[0])
	}
	if !strings.Contains(got[1], "/talon new to start over") {
		t.Errorf("empty answer: got %q, want it to name /talon new", got[1])
	}
}
