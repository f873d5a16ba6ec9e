package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// isSummary reports whether req asks for a summary (of older turns or of a
// turn's earlier steps).
func isSummary(req llmtest.Request) bool { return strings.HasPrefix(req.System, "You maintain the") }

// summarised returns the contents of the messages a summary request shows,
// in order: one transcript line each ("role: content", "tool NAME result:
// content", "assistant (called NAMES): content"), after the earlier
// summary if there is one.
func summarised(t *testing.T, req llmtest.Request) []string {
	t.Helper()
	if len(req.Messages) != 1 {
		t.Fatalf("summary request with %d messages, want 1", len(req.Messages))
	}
	text := req.Messages[0].Content
	if _, since, ok := strings.Cut(text, "\n\nConversation since:\n"); ok {
		text = since
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		_, content, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("summary transcript line %q has no content", line)
		}
		out = append(out, content)
	}
	return out
}

func contents(ms []llm.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Content
	}
	return out
}

// Over a conversation much longer than the window, with tool exchanges in
// some turns so that a cut by count alone would start on an assistant or
// tool message, what the summary requests showed and the last window are
// together the whole history: every message exactly once, in order.
func TestCompactionSummaryAndWindowAreTheWholeHistory(t *testing.T) {
	tools := &toolRunner{}
	summaries := 0
	var mu sync.Mutex
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if isSummary(req) {
			mu.Lock()
			defer mu.Unlock()
			summaries++
			return llmtest.Response{Text: fmt.Sprintf("SUMMARY %d", summaries)}
		}
		var i int
		fmt.Sscanf(req.LastUserText(), "msg %d", &i)
		last := req.Messages[len(req.Messages)-1]
		switch {
		case last.Role == llm.RoleTool:
			return llmtest.Response{Text: fmt.Sprintf("after tool %d", i)}
		case i%2 == 1:
			return llmtest.Response{Text: fmt.Sprintf("calling %d", i), ToolCalls: []llm.ToolCall{
				{ID: fmt.Sprintf("c%d", i), Name: "add", Arguments: fmt.Sprintf(`{"a":%d,"b":1000}`, i)}}}
		}
		return llmtest.Response{Text: fmt.Sprintf("echo: msg %d", i)}
	}, func(rt *agent.Runtime) {
		rt.Tools = tools
		rt.Limits.HistoryMessages = 4
	})
	var want []string
	for i := range 10 {
		h.send("u1", fmt.Sprintf("msg %d", i))
		h.idle()
		want = append(want, fmt.Sprintf("msg %d", i))
		if i%2 == 1 {
			want = append(want, fmt.Sprintf("calling %d", i), fmt.Sprint(1000+i), fmt.Sprintf("after tool %d", i))
		} else {
			want = append(want, fmt.Sprintf("echo: msg %d", i))
		}
	}
	want = want[:len(want)-1] // the last answer was not sent to the model

	var got []string
	var last llmtest.Request
	sawSummary := false
	for _, req := range h.llm.Requests() {
		if isSummary(req) {
			got = append(got, summarised(t, req)...)
			sawSummary = true
			continue
		}
		last = req
	}
	if !sawSummary {
		t.Fatal("no summary request")
	}
	if !strings.Contains(last.System, fmt.Sprintf("SUMMARY %d", summaries)) {
		t.Errorf("the last request's system prompt lacks the latest summary")
	}
	if len(last.Messages) > 4 || last.Messages[0].Role != llm.RoleUser {
		t.Errorf("last window: %d messages starting with %s; want at most 4, starting with the user's", len(last.Messages), last.Messages[0].Role)
	}
	got = append(got, contents(last.Messages)...)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary inputs + last window != history (-history +got):\n%s", diff)
	}
}

// A turn whose own steps outgrow the window keeps the question in every
// request; the steps that no longer fit are folded into the turn's summary
// (sent in the system prompt), and the question, what those summaries
// showed and the rest of the last window are the whole turn, in order.
func TestLongTurnKeepsTheQuestion(t *testing.T) {
	tools := &toolRunner{}
	const rounds = 6
	var step atomic.Int32
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if isSummary(req) {
			return llmtest.Response{Text: "TURN SO FAR"}
		}
		r := step.Add(1)
		if r > rounds {
			return llmtest.Response{Text: "the answer"}
		}
		return llmtest.Response{Text: fmt.Sprintf("round %d", r), ToolCalls: []llm.ToolCall{
			{ID: fmt.Sprintf("r%da", r), Name: "add", Arguments: `{"a":1,"b":2}`},
			{ID: fmt.Sprintf("r%db", r), Name: "add", Arguments: `{"a":3,"b":4}`},
		}}
	}, func(rt *agent.Runtime) {
		rt.Tools = tools
		rt.Limits.HistoryMessages = 4
		rt.Limits.MaxSteps = rounds + 1
	})
	h.send("u1", "the question")
	h.idle()
	if got := h.ch.texts(); len(got) != 1 || got[0] != "the answer" {
		t.Fatalf("replies: %q", got)
	}
	want := []string{"the question"}
	for r := 1; r <= rounds; r++ {
		want = append(want, fmt.Sprintf("round %d", r), "3", "7")
	}
	got := []string{"the question"}
	var last llmtest.Request
	for i, req := range h.llm.Requests() {
		if isSummary(req) {
			got = append(got, summarised(t, req)...)
			continue
		}
		last = req
		if len(req.Messages) == 0 || req.Messages[0].Role != llm.RoleUser || req.Messages[0].Content != "the question" {
			t.Fatalf("request %d does not start with the question: %d messages", i, len(req.Messages))
		}
		if len(req.Messages) > 4 {
			t.Errorf("request %d: %d messages, want at most 4", i, len(req.Messages))
		}
	}
	if !strings.Contains(last.System, "TURN SO FAR") {
		t.Error("the last request does not carry the turn's summary")
	}
	got = append(got, contents(last.Messages[1:])...)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("question + summary inputs + last window != the turn (-turn +got):\n%s", diff)
	}
}

// redactSet is a Redactor whose secrets can be added while it runs, as a
// vault's are.
type redactSet struct {
	mu      sync.Mutex
	secrets []string
}

func (r *redactSet) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = append(r.secrets, s)
}

func (r *redactSet) Redact(_ context.Context, _ agent.Principal, text string) (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.secrets {
		n += strings.Count(text, s)
		text = strings.ReplaceAll(text, s, "[REDACTED:secret]")
	}
	return text, n
}

// A value typed before it was stored as a secret is in the history in
// clear; once it is a secret, no request to the model carries it, the
// summary requests included.
func TestSummaryRequestIsScrubbed(t *testing.T) {
	const value = "hunter2-correct-horse-battery"
	red := &redactSet{}
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if isSummary(req) {
			return llmtest.Response{Text: "a summary"}
		}
		return llmtest.Response{Text: "echo: " + req.LastUserText()}
	}, func(rt *agent.Runtime) {
		rt.Redactor = red
		rt.Limits.HistoryMessages = 2
	})
	h.send("u1", "my password is "+value)
	h.idle()
	red.add(value) // the user stores it in the vault
	for i := range 3 {
		h.send("u1", fmt.Sprintf("next %d", i))
		h.idle()
	}
	summaries := 0
	for i, req := range h.llm.Requests() {
		if isSummary(req) {
			summaries++
		}
		if i > 0 && strings.Contains(string(req.Raw), value) {
			t.Errorf("request %d (summary: %v) carries the secret", i, isSummary(req))
		}
	}
	if summaries == 0 {
		t.Fatal("no summary request: the test did not compact")
	}
}

// metricsRecorder keeps what the runtime meters.
type metricsRecorder struct {
	mu   sync.Mutex
	uses []agent.ModelUse
}

func (m *metricsRecorder) TurnFinished(string, time.Duration) {}
func (m *metricsRecorder) QueueDepth(int)                     {}
func (m *metricsRecorder) Redacted(string, int)               {}
func (m *metricsRecorder) ModelUsed(u agent.ModelUse) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.uses = append(m.uses, u)
}

// Every model call, turn steps and summaries alike, is metered once, with
// its purpose, principal, session and turn and the tokens it used.
func TestEveryModelCallIsMetered(t *testing.T) {
	met := &metricsRecorder{}
	tools := &toolRunner{}
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if isSummary(req) {
			return llmtest.Response{Text: "a summary"}
		}
		if req.Messages[len(req.Messages)-1].Role == llm.RoleUser && strings.HasPrefix(req.LastUserText(), "tool") {
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c" + req.LastUserText(), Name: "add", Arguments: `{"a":1,"b":2}`}}}
		}
		return llmtest.Response{Text: "ok"}
	}, func(rt *agent.Runtime) {
		rt.Metrics = met
		rt.Tools = tools
		rt.Limits.HistoryMessages = 3
	})
	for i := range 4 {
		h.send("u1", fmt.Sprintf("tool %d", i))
		h.idle()
	}
	reqs := h.llm.Requests()
	met.mu.Lock()
	defer met.mu.Unlock()
	if len(met.uses) != len(reqs) {
		t.Fatalf("%d model calls metered, %d made", len(met.uses), len(reqs))
	}
	summaries := 0
	for i, u := range met.uses {
		want := agent.PurposeTurn
		if isSummary(reqs[i]) {
			want = agent.PurposeSummary
			summaries++
		}
		if u.Purpose != want || u.Principal != key("u1").Principal || u.Session == 0 || u.Turn == 0 || u.Error != "" {
			t.Errorf("call %d metered as %+v; want purpose %s, u1's principal, a session and a turn", i, u.ModelCall, want)
		}
		if u.Usage.InputTokens == 0 || u.Estimated {
			t.Errorf("call %d: usage %+v (estimated %v), want the provider's count", i, u.Usage, u.Estimated)
		}
	}
	if summaries == 0 {
		t.Error("no summary call: the test did not compact")
	}
}

// The model path is the only caller of the provider in the runtime, so
// nothing reaches the model unscrubbed or unmetered.
func TestOneModelPath(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`\.LLM\.Complete\(|\bComplete\(ctx`)
	sites := map[string]int{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(call.FindAll(src, -1)); n > 0 {
			sites[f] = n
		}
	}
	if diff := cmp.Diff(map[string]int{"model.go": 1}, sites); diff != "" {
		t.Errorf("calls of the provider (-want +got):\n%s", diff)
	}
}

// While summary requests fail, every turn still sends a valid window (the
// question first, within the limit); the messages that should have been
// summarised are not lost: once summaries work again, they are in one.
func TestFailingSummaryLeavesValidWindow(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if isSummary(req) {
			if failing.Load() {
				return llmtest.Response{Status: 500}
			}
			return llmtest.Response{Text: "a summary"}
		}
		return llmtest.Response{Text: "echo: " + req.LastUserText()}
	}, func(rt *agent.Runtime) { rt.Limits.HistoryMessages = 3 })
	for i := range 4 {
		h.send("u1", fmt.Sprintf("msg %d", i))
		h.idle()
	}
	failing.Store(false)
	h.send("u1", "msg 4")
	h.idle()
	want := []string{"echo: msg 0", "echo: msg 1", "echo: msg 2", "echo: msg 3", "echo: msg 4"}
	if diff := cmp.Diff(want, h.ch.texts()); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	var lastSummary, lastWindow llmtest.Request
	for i, req := range h.llm.Requests() {
		if isSummary(req) {
			lastSummary = req
			continue
		}
		lastWindow = req
		if len(req.Messages) == 0 || req.Messages[0].Role != llm.RoleUser || len(req.Messages) > 3 {
			t.Errorf("request %d: %d messages; want 1 to 3, the first the user's", i, len(req.Messages))
		}
	}
	// The summary that worked took everything the last window does not
	// carry, the messages of the failed attempts included.
	var history []string
	for i := range 5 {
		history = append(history, fmt.Sprintf("msg %d", i), fmt.Sprintf("echo: msg %d", i))
	}
	got := append(summarised(t, lastSummary), contents(lastWindow.Messages)...)
	if diff := cmp.Diff(history[:len(history)-1], got); diff != "" {
		t.Errorf("last summary + last window != history (-history +got):\n%s", diff)
	}
}

// Summary calls count in the usage sums (budgets, /usage, the console) as
// the turns' steps do: every model call once, with what its provider
// reported.
func TestSummaryCallsCountInUsage(t *testing.T) {
	h := newHarness(t, func(req llmtest.Request) llmtest.Response {
		if isSummary(req) {
			return llmtest.Response{Text: "SUMMARY"}
		}
		return llmtest.Response{Text: "echo: " + req.LastUserText()}
	}, func(rt *agent.Runtime) {
		rt.Limits.HistoryMessages = 2
		rt.UsageLog = rt.Store.(agent.UsageLog)
	})
	for i := range 6 {
		h.send("u1", fmt.Sprintf("msg %d", i))
		h.idle()
	}
	summaries := 0
	for _, req := range h.llm.Requests() {
		if isSummary(req) {
			summaries++
		}
	}
	if summaries == 0 {
		t.Fatal("no summary request")
	}
	now := time.Now()
	rows, err := h.db.Usage(context.Background(), now.Add(-48*time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var calls, tokens int64
	for _, r := range rows {
		calls += r.Calls
		tokens += r.InputTokens + r.OutputTokens
		if r.Model != "test-model" || r.User != "u1" {
			t.Errorf("usage row %+v: want test-model and u1", r)
		}
	}
	if want := int64(len(h.llm.Requests())); calls != want {
		t.Errorf("usage counts %d calls, want %d (6 turns and %d summaries)", calls, want, summaries)
	}
	used, err := h.db.PrincipalTokens(context.Background(), key("u1").Principal, now.Add(-24*time.Hour))
	if err != nil || used != tokens || used == 0 {
		t.Errorf("PrincipalTokens = %d, %v; want the %d tokens of every call", used, err, tokens)
	}
}
