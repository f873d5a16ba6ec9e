package agent_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// detailTools asks, like the sandbox, for the approval of a whole call
// (tool "run", with its arguments) or of one request of it (tool "http").
type detailTools struct{ rt *agent.Runtime }

func (d *detailTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	obj := json.RawMessage(`{"type":"object"}`)
	return []llm.Tool{{Name: "run", Description: "Run.", Parameters: obj}, {Name: "http", Description: "HTTP.", Parameters: obj}}, nil
}

func (d *detailTools) Run(ctx context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	// The model's arguments were scrubbed before the tool got them; these
	// carry the secret again (as a tool might), for the approval's own
	// redaction to find.
	args := json.RawMessage(strings.ReplaceAll(string(c.Args), "SECRET_HERE", secretValue))
	req := agent.ApprovalRequest{Key: c.Key, Turn: c.Turn, CallID: c.ID, Tool: c.Name, Description: "run tool " + c.Name, Args: args}
	if c.Name == "http" {
		req = agent.ApprovalRequest{Key: c.Key, Turn: c.Turn, CallID: c.ID, Tool: c.Name,
			Description: "POST https://api.example.com:8443/hook/" + secretValue,
			Method:      "POST", Host: "api.example.com:8443", Path: "/hook/" + secretValue + "?token=…"}
	}
	ok, err := d.rt.RequestApproval(ctx, req)
	if err != nil || !ok {
		return agent.ToolResult{IsError: true, Content: "not approved"}, err
	}
	return agent.ToolResult{Content: "done"}, nil
}

const secretValue = "hunter2-secret-value"

// The prompt of an approval says what the call would do: the arguments of
// a whole call as compact JSON, the method, host and path of a request;
// redacted for the owner's secrets before any channel sees them, bounded,
// with the size of what was cut, and with the characters that hide or
// reorder text written as JSON escapes.
func TestApprovalPromptDetailRedactedAndBounded(t *testing.T) {
	pad := strings.Repeat("x", 1<<20)
	args := `{ "note" : "SECRET_HERE \u202e` + "\u202e" + `<!channel> @everyone ` + "```" + ` \u003c!here\u003e \\u0026", "pad": "` + pad + `" }`
	srv := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		last := req.Messages[len(req.Messages)-1]
		switch {
		case isSummary(req):
			return llmtest.Response{Text: "a summary"}
		case last.Role == llm.RoleTool && last.ToolCallID == "c1":
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c2", Name: "http", Arguments: `{}`}}}
		case last.Role == llm.RoleTool:
			return llmtest.Response{Text: "finished"}
		}
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "run", Arguments: args}}}
	})
	red := &redactSet{}
	red.add(secretValue)
	ch := newAsker()
	tools := &detailTools{}
	h := startHarnessCh(t, filepath.Join(t.TempDir(), "t.db"), srv, ch, func(rt *agent.Runtime) {
		tools.rt, rt.Tools, rt.Redactor = rt, tools, red
		rt.Limits.HistoryTokenBudget = 1 << 22 // the huge call stays in the window
	})
	h.send("u1", "go")
	decide := func(p agent.ApprovalPrompt) {
		t.Helper()
		if _, err := h.rt.Decide(context.Background(), p.ID, key("u1").Principal, true); err != nil {
			t.Fatal(err)
		}
	}

	call := within(t, ch.asked, "the call's prompt")
	d := call.Detail
	if d.Method != "" || d.Host != "" || d.Path != "" {
		t.Errorf("a whole call's detail names a request: %+v", d)
	}
	wantHead := `{"note":"[REDACTED:secret] \u202e\u202e<!channel> @everyone ` + "```" + ` <!here> \\u0026","pad":"xxx`
	if !strings.HasPrefix(d.Args, wantHead) {
		t.Errorf("arguments shown = %.120q…, want them compact, redacted, hidden characters escaped: %q…", d.Args, wantHead)
	}
	whole := len(wantHead) - len("xxx") + len(pad) + len(`"}`)
	if len(d.Args) != agent.MaxApprovalArgs || d.ArgsOmitted != whole-agent.MaxApprovalArgs {
		t.Errorf("arguments: %d bytes shown, %d omitted; want %d and %d", len(d.Args), d.ArgsOmitted, agent.MaxApprovalArgs, whole-agent.MaxApprovalArgs)
	}
	decide(call)

	req := within(t, ch.asked, "the request's prompt")
	want := agent.ApprovalDetail{Method: "POST", Host: "api.example.com:8443", Path: "/hook/[REDACTED:secret]?token=…"}
	if req.Detail != want {
		t.Errorf("request detail = %+v, want %+v", req.Detail, want)
	}
	if strings.Contains(req.Description, secretValue) {
		t.Errorf("description %q carries the secret", req.Description)
	}
	decide(req)
	h.idle()
	if got := h.ch.texts(); len(got) != 1 || got[0] != "finished" {
		t.Errorf("replies: %q", got)
	}
}

// The platform message a channel returns for a prompt is stored with the
// approval: after a restart the prompt is asked again in that message,
// and the outcome goes to it.
func TestApprovalPromptMessageReusedAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	srv := llmtest.NewServer(t, deployScript)
	ch1 := newAsker()
	h1, _ := startWithAsker(t, path, srv, ch1, nil)
	h1.send("u1", "ship it")
	first := within(t, ch1.asked, "the prompt")
	if first.Message != "" {
		t.Errorf("a first prompt comes with message %q", first.Message)
	}
	h1.stop()

	ch2 := newAsker()
	h2, _ := startWithAsker(t, path, srv, ch2, nil)
	again := within(t, ch2.asked, "the prompt after the restart")
	if again.ID != first.ID || again.Message != "msg-"+itoa(first.ID) {
		t.Errorf("after the restart: approval %d in message %q; want %d in msg-%d", again.ID, again.Message, first.ID, first.ID)
	}
	if _, err := h2.rt.Decide(context.Background(), again.ID, key("u1").Principal, false); err != nil {
		t.Fatal(err)
	}
	h2.idle()
	ch2.mu.Lock()
	defer ch2.mu.Unlock()
	if len(ch2.donePrompts) != 1 || ch2.donePrompts[0].Message != again.Message {
		t.Errorf("outcomes shown in %v, want one in %q", ch2.donePrompts, again.Message)
	}
}

// A decision that comes while the prompt is still being posted (a quick
// click) is shown in the message the prompt went to.
func TestApprovalDecidedWhilePromptPosts(t *testing.T) {
	srv := llmtest.NewServer(t, deployScript)
	ch := newAsker()
	ch.hold = make(chan struct{})
	h, _ := startWithAsker(t, filepath.Join(t.TempDir(), "t.db"), srv, ch, nil)
	h.send("u1", "ship it")
	p := within(t, ch.asked, "the prompt")
	decided := make(chan error, 1)
	go func() {
		_, err := h.rt.Decide(context.Background(), p.ID, key("u1").Principal, true)
		decided <- err
	}()
	// Decide has recorded the decision (it is past the store, about to
	// show the outcome) before the prompt's post returns.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		a, err := h.db.GetApproval(context.Background(), p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.State != agent.ApprovalPending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the decision was not recorded in 10 s")
		}
	}
	close(ch.hold)
	if err := within(t, decided, "the decision"); err != nil {
		t.Fatal(err)
	}
	h.idle()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.donePrompts) != 1 || ch.donePrompts[0].Message != "msg-"+itoa(p.ID) {
		t.Errorf("outcomes shown in %v, want one in msg-%d", ch.donePrompts, p.ID)
	}
}
