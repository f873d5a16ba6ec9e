package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// fenceModel calls the tool "block", then "second", then answers.
type fenceModel struct{}

func (fenceModel) Name() string  { return "fence" }
func (fenceModel) Model() string { return "fence-1" }
func (fenceModel) Complete(_ context.Context, req llm.Request) (*llm.Response, error) {
	last := req.Messages[len(req.Messages)-1]
	call := func(name string) *llm.Response {
		return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant,
			ToolCalls: []llm.ToolCall{{ID: "call_" + name, Name: name, Arguments: `{}`}}}}
	}
	switch {
	case last.Role != llm.RoleTool:
		return call("block"), nil
	case last.ToolCallID == "call_block":
		return call("second"), nil
	}
	return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant, Content: "done"}}, nil
}

// fenceTools counts the runs of each tool; the first run of "block" waits
// for release, whatever its context says (a process asleep does not see
// its cancellation either).
type fenceTools struct {
	mu      sync.Mutex
	runs    map[string]int // guarded by mu
	release chan struct{}
}

func (f *fenceTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	schema := json.RawMessage(`{"type":"object"}`)
	return []llm.Tool{{Name: "block", Description: "blocks", Parameters: schema}, {Name: "second", Description: "counts", Parameters: schema}}, nil
}

func (f *fenceTools) Run(_ context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	f.mu.Lock()
	f.runs[c.Name]++
	first := c.Name == "block" && f.runs[c.Name] == 1
	f.mu.Unlock()
	if first {
		<-f.release
	}
	return agent.ToolResult{Content: c.Name + " ran"}, nil
}

func (f *fenceTools) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[name]
}

type noDispatch struct{}

func (noDispatch) Dispatch(context.Context, agent.QueuedInbound) error { return nil }

// syncLog is a log destination safe for concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) has(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(s.b.String(), sub)
}

// TestFencedOwnerCannotRunToolsOrAnswer: replica A runs a turn whose tool
// blocks; meanwhile replica B adopts the session under a newer fencing
// token (A slept past its lease and has not noticed: its context is never
// cancelled here), resumes the turn (the blocked call reported
// interrupted, nothing run twice), runs the next tool and answers. When
// A's tool returns, A's result is refused, and so is its step: its turn
// stops, running nothing more and persisting no reply. Each tool ran
// once; one reply.
func TestFencedOwnerCannotRunToolsOrAnswer(t *testing.T) {
	onEachStore(t, testFencedOwner)
}

// onEachStore runs test on a new SQLite store and on PostgreSQL.
func onEachStore(t *testing.T, test func(t *testing.T, db sharedStore)) {
	stores := map[string]func(t *testing.T) sharedStore{
		"sqlite": func(t *testing.T) sharedStore {
			db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "talon.db"))
			if err != nil {
				t.Fatal(err)
			}
			return db
		},
		"postgres": func(t *testing.T) sharedStore { return postgresStore(t) },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			defer db.Close()
			test(t, db)
		})
	}
}

func testFencedOwner(t *testing.T, db sharedStore) {
	tools := &fenceTools{runs: map[string]int{}, release: make(chan struct{})}
	d := newDelivered()
	logA := &syncLog{}
	runtime := func(id string, log zerolog.Logger) (*agent.Runtime, context.CancelFunc, chan struct{}) {
		rt := &agent.Runtime{Store: db, LLM: fenceModel{}, Tools: tools, Log: log, Dispatch: noDispatch{},
			Limits: agent.Limits{ShutdownGrace: time.Second}, ApprovalTimeout: time.Minute}
		rt.Register(channel{d: d, replica: id})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = rt.Run(ctx)
		}()
		<-rt.Ready()
		return rt, cancel, done
	}
	rtA, stopA, doneA := runtime("a", zerolog.New(logA))
	rtB, stopB, doneB := runtime("b", zerolog.Nop())
	defer func() {
		stopB()
		<-doneB
	}()
	const fence = "partitions/0"
	all := func(agent.SessionKey) bool { return true }

	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	scA, err := rtA.Adopt(agent.WithFence(ctxA, agent.Fence{Name: fence, Token: 5}), all)
	if err != nil {
		t.Fatal(err)
	}
	q, err := rtA.Accept(context.Background(), agent.Inbound{DedupeKey: "f1", Key: key(1, 0), Text: "go"})
	if err != nil {
		t.Fatal(err)
	}
	scA.Take(q)
	eventually(t, 10*time.Second, "A's tool call blocks", func() bool { return tools.count("block") == 1 })

	// B takes the session over and finishes the turn.
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	if _, err := rtB.Adopt(agent.WithFence(ctxB, agent.Fence{Name: fence, Token: 6}), all); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B answers", func() bool { return d.count() == 1 })

	// A wakes: its call returns; what follows is refused.
	close(tools.release)
	defer func() {
		if t.Failed() {
			logA.mu.Lock()
			t.Logf("A logged:\n%s", logA.b.String())
			logA.mu.Unlock()
		}
	}()
	eventually(t, 10*time.Second, "A's turn stopped (or went on)", func() bool {
		return logA.has("turn stopped: another process has taken this session over") || tools.count("second") > 1 || d.count() > 1
	})
	cancelA()
	scA.Wait()
	stopA()
	<-doneA

	if n := tools.count("block"); n != 1 {
		t.Errorf("block ran %d times, want 1", n)
	}
	if n := tools.count("second"); n != 1 {
		t.Errorf("second ran %d times, want 1 (by the replica that took over)", n)
	}
	d.mu.Lock()
	by, text := d.by[q.ID], d.text[q.ID]
	d.mu.Unlock()
	if len(by) != 1 || by[0] != "b" || text != "done" {
		t.Errorf("replies to the message: by %v, last %q; want one by b, done", by, text)
	}
	undelivered, err := db.Undelivered(context.Background())
	if err != nil || len(undelivered) != 0 {
		t.Errorf("undelivered replies: %v, %v; want none (A's reply refused)", undelivered, err)
	}
	res, err := db.ToolResults(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := res["call_block"]; !strings.HasPrefix(got.Content, "interrupted") {
		t.Errorf("the blocked call's recorded result: %q; want B's interrupted, not A's late one", got.Content)
	}
}

// downChannel fails every delivery; the first waits for release first,
// whatever its context says (a process asleep does not see it either).
type downChannel struct {
	attempted chan struct{}
	release   chan struct{}
	once      *sync.Once
}

func (c downChannel) Platform() string { return "test" }
func (c downChannel) Deliver(context.Context, agent.Reply) (string, error) {
	first := false
	c.once.Do(func() { first = true })
	if first {
		close(c.attempted)
		<-c.release
	}
	return "", errors.New("platform down")
}

// sleeper is replica A of the fence tests: a runtime on db with model and
// ch that serves every session under token 5 of fence (a scope whose
// context the test never cancels before the end: a process asleep does
// not see its lease end). Its log is shown when the test fails.
type sleeper struct {
	rt  *agent.Runtime
	sc  *agent.Scope
	log *syncLog
}

// sleeperFence is the fence the sleeper serves under.
const sleeperFence = "partitions/0"

func startSleeper(t *testing.T, db sharedStore, model llm.Provider, ch agent.Channel, limits agent.Limits) *sleeper {
	t.Helper()
	s := &sleeper{log: &syncLog{}}
	limits.ShutdownGrace = time.Second
	s.rt = &agent.Runtime{Store: db, LLM: model, Log: zerolog.New(s.log), Dispatch: noDispatch{}, Limits: limits, ApprovalTimeout: time.Minute}
	s.rt.Register(ch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.rt.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			s.log.mu.Lock()
			t.Logf("A logged:\n%s", s.log.b.String())
			s.log.mu.Unlock()
		}
	})
	<-s.rt.Ready()
	ctxA, cancelA := context.WithCancel(context.Background())
	t.Cleanup(cancelA)
	var err error
	s.sc, err = s.rt.Adopt(agent.WithFence(ctxA, agent.Fence{Name: sleeperFence, Token: 5}), func(agent.SessionKey) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancelA()
		s.sc.Wait()
	})
	return s
}

// take accepts a message of user 1 and queues it in A's scope.
func (s *sleeper) take(t *testing.T, dedupeKey string) agent.QueuedInbound {
	t.Helper()
	q, err := s.rt.Accept(context.Background(), agent.Inbound{DedupeKey: dedupeKey, Key: key(1, 0), Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	s.sc.Take(q)
	return q
}

// TestFencedOwnerCannotMarkAReplyFailed: replica A answers a message and
// its delivery blocks; meanwhile another replica records a newer claim of
// the session's partition (A slept past its lease; its context is never
// cancelled here). A wakes, its delivery attempts fail, and it cannot mark
// the reply failed (the runtime's mark keeps the turn's fence): the reply
// stays pending, for the new owner to deliver.
func TestFencedOwnerCannotMarkAReplyFailed(t *testing.T) {
	onEachStore(t, testFencedOwnerMarkFailed)
}

func testFencedOwnerMarkFailed(t *testing.T, db sharedStore) {
	ch := downChannel{attempted: make(chan struct{}), release: make(chan struct{}), once: &sync.Once{}}
	a := startSleeper(t, db, echo{}, ch, agent.Limits{DeliveryAttempts: 2})
	q := a.take(t, "m1")
	select {
	case <-ch.attempted:
	case <-time.After(10 * time.Second):
		t.Fatal("A did not try to deliver the reply")
	}

	// Another replica claims the partition; A wakes and gives up.
	if err := db.(agent.Fencer).AdvanceFence(context.Background(), sleeperFence, 6); err != nil {
		t.Fatal(err)
	}
	close(ch.release)
	eventually(t, 10*time.Second, "A gives the delivery up", func() bool {
		return a.log.has("the process that took its session over delivers it") || a.log.has("reply not delivered; giving up")
	})

	undelivered, err := db.Undelivered(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(undelivered) != 1 || undelivered[0].Inbound != q.ID {
		t.Errorf("undelivered replies: %+v; want the reply to %d, left pending for the new owner", undelivered, q.ID)
	}
}

// countingModel is echo that counts its calls.
type countingModel struct {
	echo
	mu    sync.Mutex
	calls int // guarded by mu
}

func (m *countingModel) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	m.mu.Lock()
	m.calls++
	m.mu.Unlock()
	return m.echo.Complete(ctx, req)
}

func (m *countingModel) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// TestFencedOwnerCannotStartATurn: replica A takes a message of a session
// another replica has claimed since (A slept past its lease with the
// message queued; its context is never cancelled here). Its turn does not
// start: no model call, the message stays queued in the store for the new
// owner, nothing is answered.
func TestFencedOwnerCannotStartATurn(t *testing.T) {
	onEachStore(t, testFencedOwnerStart)
}

func testFencedOwnerStart(t *testing.T, db sharedStore) {
	model := &countingModel{}
	d := newDelivered()
	a := startSleeper(t, db, model, channel{d: d, replica: "a"}, agent.Limits{})
	if err := db.(agent.Fencer).AdvanceFence(context.Background(), sleeperFence, 6); err != nil {
		t.Fatal(err)
	}
	q := a.take(t, "s1")
	eventually(t, 10*time.Second, "A's turn stopped (or went on)", func() bool {
		return a.log.has("another process has taken this session over") || d.count() > 0
	})

	if n := model.count(); n != 0 {
		t.Errorf("the model was called %d times by a superseded owner, want 0", n)
	}
	pending, err := db.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].ID != q.ID || pending[0].Running {
		t.Errorf("pending: %+v; want message %d queued, not running", pending, q.ID)
	}
	if n := d.count(); n != 0 {
		t.Errorf("%d replies delivered by a superseded owner", n)
	}
}

// TestFencedOwnerLeavesTheNewOwnersReplyToIt: replica A takes a message
// that the replica which claimed its session since has answered, its
// reply not delivered yet (the new owner delivers it). A's turn is fenced,
// and A does not deliver that reply as one finished elsewhere: it would be
// posted twice.
func TestFencedOwnerLeavesTheNewOwnersReplyToIt(t *testing.T) {
	onEachStore(t, testFencedOwnerLeavesReply)
}

func testFencedOwnerLeavesReply(t *testing.T, db sharedStore) {
	d := newDelivered()
	a := startSleeper(t, db, echo{}, channel{d: d, replica: "a"}, agent.Limits{})
	ctx := context.Background()
	q, err := a.rt.Accept(ctx, agent.Inbound{DedupeKey: "r1", Key: key(1, 0), Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	// The new owner's claim, its turn and its reply, in the store.
	if err := db.(agent.Fencer).AdvanceFence(ctx, sleeperFence, 6); err != nil {
		t.Fatal(err)
	}
	cur := agent.WithFence(ctx, agent.Fence{Name: sleeperFence, Token: 6})
	tid, _, _, err := db.StartTurn(cur, q.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishTurn(cur, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "the new owner's answer"}, nil); err != nil {
		t.Fatal(err)
	}

	a.sc.Take(q)
	eventually(t, 10*time.Second, "A's turn refused", func() bool { return a.log.has("another process has taken this session over") })
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.rt.WaitIdle(wctx); err != nil {
		t.Fatal(err)
	}
	if n := d.count(); n != 0 {
		t.Errorf("A delivered %d replies; want none (the new owner's is its to deliver)", n)
	}
	undelivered, err := db.Undelivered(ctx)
	if err != nil || len(undelivered) != 1 || undelivered[0].Text != "the new owner's answer" {
		t.Errorf("undelivered: %+v, %v; want the new owner's reply", undelivered, err)
	}
}
