package terminal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
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

// longLine reads as n bytes of 'a' followed by rest, without holding the n
// bytes anywhere.
type longLine struct {
	n    int
	rest *strings.Reader
}

func (l *longLine) Read(p []byte) (int, error) {
	if l.n == 0 {
		return l.rest.Read(p)
	}
	k := min(len(p), l.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	l.n -= k
	return k, nil
}

func TestLineOverTheLimitIsRefusedAndTheNextAnswered(t *testing.T) {
	const notice = "That message is too long (the limit is 1 MiB a line); it was not sent."
	long := strings.Repeat("x", terminal.MaxLine)
	cases := []struct {
		name, input string
		want        []string // output lines, in order
		refused     bool     // the notice appears
	}{
		{"2 MiB then a line", strings.Repeat("x", 2<<20) + "\nhello\n", []string{notice, "echo: hello"}, true},
		{"one byte over", long + "y\nhello\n", []string{notice, "echo: hello"}, true},
		{"CRLF, over", long + "y\r\nhello\r\n", []string{notice, "echo: hello"}, true},
		{"last line over, no newline", "hello\n" + long + "y", []string{"echo: hello", notice}, true},
		{"exactly the limit", long + "\r\nhello\n", []string{"echo: " + long, "echo: hello"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, srv, _ := converse(t, tc.input, nil)
			if got := strings.Contains(out, notice); got != tc.refused {
				t.Errorf("notice shown: %v, want %v", got, tc.refused)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d output lines, want %d (%.200q)", len(lines), len(tc.want), out)
			}
			for i, w := range tc.want {
				if lines[i] != w {
					t.Errorf("line %d: got %.80q, want %.80q", i, lines[i], w)
				}
			}
			for _, r := range srv.Requests() {
				if len(r.Raw) > 2*terminal.MaxLine+(64<<10) {
					t.Errorf("a request of %d bytes reached the model", len(r.Raw))
				}
			}
		})
	}
}

func TestApprovalAnsweredWithTooLongLineIsDenied(t *testing.T) {
	out, _, _ := converse(t, "deploy\n"+strings.Repeat("y", 2<<20)+"\nafter\n", nil)
	for _, w := range []string{"too long", "result: not approved", "echo: after"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%.500s", w, out)
		}
	}
}

func TestEndlessLineIsNotHeldInMemory(t *testing.T) {
	// 256 MiB without a newline, then a message: reading it must cost far
	// less than the line.
	const size = 256 << 20
	in := &longLine{n: size, rest: strings.NewReader("\nhello\n")}
	srv := llmtest.NewServer(t, script)
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL, Model: "m", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	rt := &agent.Runtime{Store: db, LLM: p, Log: zerolog.Nop()}
	var out bytes.Buffer
	term := &terminal.Adapter{In: in, Out: &out, Runtime: rt}
	rt.Register(term)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rt.Run(rctx) }()
	<-rt.Ready()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = term.Run(ctx)
	runtime.ReadMemStats(&after)
	stop()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > size/8 {
		t.Errorf("reading a %d MiB line allocated %d MiB", size>>20, got>>20)
	}
	if !strings.Contains(out.String(), "too long") || !strings.HasSuffix(out.String(), "echo: hello\n") {
		t.Errorf("output: %.300q", out.String())
	}
}

// A reply's files are named, never printed: the terminal shows no files.
func TestReplyFilesAreNamed(t *testing.T) {
	var out bytes.Buffer
	term := &terminal.Adapter{Out: &out}
	_, err := term.Deliver(context.Background(), agent.Reply{ID: 1, Text: "Here.", Files: []agent.OutFile{{Name: "report.csv", Data: []byte("a,b\n")}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "Here.\n[a tool's file report.csv (4 bytes): the terminal does not show files]\n" {
		t.Errorf("output %q", got)
	}
}
