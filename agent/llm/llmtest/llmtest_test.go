package llmtest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

func TestScriptRepeatsLast(t *testing.T) {
	h := llmtest.Script(llmtest.Response{Text: "a"}, llmtest.Response{Text: "b"})
	var got []string
	for range 4 {
		got = append(got, h(llmtest.Request{}).Text)
	}
	if diff := cmp.Diff([]string{"a", "b", "b", "b"}, got); diff != "" {
		t.Errorf("script (-want +got):\n%s", diff)
	}
}

func TestEcho(t *testing.T) {
	req := llmtest.Request{Messages: []llm.Message{
		{Role: llm.RoleUser, Content: "first"},
		{Role: llm.RoleAssistant, Content: "x"},
		{Role: llm.RoleUser, Content: "second"},
		{Role: llm.RoleTool, Content: "result"},
	}}
	if got := llmtest.Echo()(req).Text; got != "echo: second" {
		t.Errorf("Echo = %q, want %q", got, "echo: second")
	}
}

// post sends body to the server's path and returns the SSE event names.
func post(t *testing.T, url, body string) (*http.Response, []string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer res.Body.Close()
	var events []string
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, name)
		}
	}
	return res, events
}

func TestAnthropicEventSequence(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{
		Text:      "hi there",
		ToolCalls: []llm.ToolCall{{ID: "t1", Name: "look", Arguments: `{"q":"x"}`}},
	}))
	_, events := post(t, srv.URL+"/messages", `{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hello"}]}`)
	want := []string{
		"message_start", "ping",
		"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
		"message_delta", "message_stop",
	}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 || reqs[0].Provider != llmtest.Anthropic || reqs[0].LastUserText() != "hello" || !reqs[0].Stream {
		t.Errorf("recorded %+v", reqs)
	}
}

func TestErrorShapes(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{Status: 429, Header: map[string]string{"Retry-After": "3"}}))
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		res, _ := post(t, srv.AnthropicURL+path, `{"model":"m","messages":[]}`)
		if res.StatusCode != 429 || res.Header.Get("Retry-After") != "3" {
			t.Errorf("%s: status %d Retry-After %q", path, res.StatusCode, res.Header.Get("Retry-After"))
		}
	}
}

func TestParsesOpenAIHistory(t *testing.T) {
	srv := llmtest.NewServer(t, nil)
	body, _ := json.Marshal(map[string]any{
		"model": "m",
		"messages": []any{
			map[string]any{"role": "system", "content": "sys"},
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "q"}}},
			map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c1", "type": "function", "function": map[string]any{"name": "f", "arguments": "{bad"}}}},
			map[string]any{"role": "tool", "tool_call_id": "c1", "name": "f", "content": "r"},
		},
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "f"}}},
	})
	post(t, srv.URL+"/chat/completions", string(body))
	got := srv.Requests()[0]
	want := []llm.Message{
		{Role: llm.RoleUser, Content: "q"},
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: "{bad"}}},
		{Role: llm.RoleTool, ToolCallID: "c1", ToolName: "f", Content: "r"},
	}
	if diff := cmp.Diff(want, got.Messages); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if got.System != "sys" || !cmp.Equal(got.Tools, []string{"f"}) {
		t.Errorf("system %q tools %v", got.System, got.Tools)
	}
}

func TestCloseEndsHang(t *testing.T) {
	started := make(chan struct{})
	srv := llmtest.NewServer(t, func(llmtest.Request) llmtest.Response {
		close(started)
		return llmtest.Response{Hang: true}
	})
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/chat/completions", strings.NewReader(`{"model":"m"}`))
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	<-started
	srv.Close()
	<-done // returns only because Close released the hanging request
}
