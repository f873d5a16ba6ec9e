package terminal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/adapters/terminal"
	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// vaultFake records what reaches the vault.
type vaultFake struct {
	mu    sync.Mutex
	added []agent.NewSecret
}

func (v *vaultFake) ListSecrets(context.Context, agent.Principal) ([]agent.SecretInfo, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []agent.SecretInfo
	for _, s := range v.added {
		out = append(out, agent.SecretInfo{Name: s.Name, Hosts: s.Hosts, Injection: s.Injection})
	}
	return out, nil
}

func (v *vaultFake) AddSecret(_ context.Context, _ agent.Principal, s agent.NewSecret) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.added = append(v.added, s)
	return nil
}

func (v *vaultFake) RemoveSecret(context.Context, agent.Principal, string) error { return nil }

// approvalTools has one tool that needs the owner's approval.
type approvalTools struct{ rt *agent.Runtime }

func (a approvalTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "deploy", Description: "Deploy.", Parameters: json.RawMessage(`{"type":"object"}`)}}, nil
}

func (a approvalTools) Run(ctx context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	ok, err := a.rt.RequestApproval(ctx, agent.ApprovalRequest{Key: c.Key, Turn: c.Turn, CallID: c.ID, Tool: c.Name, Description: "deploy to production"})
	if err != nil || !ok {
		return agent.ToolResult{IsError: true, Content: "not approved"}, err
	}
	return agent.ToolResult{Content: "deployed"}, nil
}

func script(req llmtest.Request) llmtest.Response {
	last := req.Messages[len(req.Messages)-1]
	switch {
	case last.Role == llm.RoleTool:
		return llmtest.Response{Text: "result: " + last.Content}
	case last.Content == "deploy":
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "deploy", Arguments: `{}`}}}
	}
	return llmtest.Response{Text: "echo: " + last.Content}
}

// converse runs a terminal conversation on input and returns its output.
func converse(t *testing.T, input string, secrets agent.Secrets) (string, *llmtest.Server, string) {
	t.Helper()
	srv := llmtest.NewServer(t, script)
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL, Model: "m", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	rt := &agent.Runtime{Store: db, LLM: p, Log: zerolog.Nop(), Secrets: secrets, ApprovalTimeout: time.Minute}
	rt.Tools = approvalTools{rt}
	var out bytes.Buffer
	term := &terminal.Adapter{In: strings.NewReader(input), Out: &out, Runtime: rt}
	rt.Register(term)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rt.Run(rctx) }()
	<-rt.Ready()
	if err := term.Run(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db.Close()
	return out.String(), srv, path
}

func TestApprovalAnsweredAtThePrompt(t *testing.T) {
	for _, tc := range []struct{ answer, want string }{{"y", "result: deployed"}, {"n", "result: not approved"}} {
		out, _, _ := converse(t, "deploy\n"+tc.answer+"\nafter\n", nil)
		if !strings.Contains(out, "The tool deploy wants to: deploy to production") || !strings.Contains(out, tc.want) {
			t.Errorf("answer %q: output\n%s\nwant %q", tc.answer, out, tc.want)
		}
		if !strings.Contains(out, "echo: after") || strings.Contains(out, "echo: "+tc.answer) {
			t.Errorf("answer %q: the answer line became a message or the next line was lost:\n%s", tc.answer, out)
		}
	}
}

func TestSecretPromptKeepsValueOutOfMessages(t *testing.T) {
	const value = "s3cr3t-value-that-must-not-leak-7781"
	v := &vaultFake{}
	out, srv, path := converse(t, "/secret add github --host api.github.com\n"+value+"\n/secret\nhello\n", v)
	if len(v.added) != 1 || string(v.added[0].Value) != value || v.added[0].Hosts[0] != "api.github.com" {
		t.Fatalf("vault got %+v", v.added)
	}
	if !strings.Contains(out, "Stored github") || !strings.Contains(out, "github: ") || !strings.Contains(out, "echo: hello") {
		t.Errorf("output:\n%s", out)
	}
	if strings.Contains(out, value) {
		t.Error("the value was echoed to the output")
	}
	for _, r := range srv.Requests() {
		if bytes.Contains(r.Raw, []byte(value)) {
			t.Error("the value reached the model")
		}
	}
	for _, f := range []string{path, path + "-wal"} {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(value)) {
			t.Errorf("the value is in %s", filepath.Base(f))
		}
	}
}
