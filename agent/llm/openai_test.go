package llm_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// These tests pin the OpenAI-compatible client against what real servers
// send besides the textbook answer, and against hostile answers: the
// endpoint's answers are untrusted input.

var eventStream = map[string]string{"Content-Type": "text/event-stream"}

func sseChunk(json string) string { return "data: " + json + "\n\n" }

// textChunk is a chunk with one piece of assistant text.
func textChunk(s string) string {
	return sseChunk(fmt.Sprintf(`{"choices":[{"index":0,"delta":{"content":%q}}]}`, s))
}

func finishChunk(reason string) string {
	return sseChunk(fmt.Sprintf(`{"choices":[{"index":0,"delta":{},"finish_reason":%q}]}`, reason))
}

const usageChunk = `data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7}}` + "\n\n"

// completeRaw sends one request to a server that answers body (as an event
// stream when stream is set) and returns the result, the deltas and the
// number of requests the server got.
func completeRaw(t *testing.T, body string, stream bool) (*llm.Response, error, []string, int) {
	t.Helper()
	resp := llmtest.Response{RawBody: body}
	if stream {
		resp.Header = eventStream
	}
	srv := llmtest.NewServer(t, llmtest.Script(resp))
	p, _ := newProvider(t, llmtest.OpenAI, srv, llm.Config{})
	req := userRequest(canary)
	var deltas []string
	if stream {
		req.OnDelta = func(d string) { deltas = append(deltas, d) }
	}
	r, err := p.Complete(t.Context(), req)
	return r, err, deltas, len(srv.Requests())
}

func TestOpenAIStreamVariants(t *testing.T) {
	call := func(id, name, args string) llm.ToolCall { return llm.ToolCall{ID: id, Name: name, Arguments: args} }
	cases := []struct {
		name  string
		body  string
		want  llm.Message
		stop  string
		usage llm.Usage
	}{
		{
			name: "textbook, usage in a final chunk",
			body: textChunk("Hel") + textChunk("lo") + finishChunk("stop") + usageChunk + "data: [DONE]\n\n",
			want: llm.Message{Role: llm.RoleAssistant, Content: "Hello"}, stop: "stop", usage: llm.Usage{InputTokens: 11, OutputTokens: 7},
		},
		{
			name: "no [DONE], no final blank line",
			body: textChunk("Hel") + textChunk("lo") + strings.TrimSuffix(finishChunk("length"), "\n\n"),
			want: llm.Message{Role: llm.RoleAssistant, Content: "Hello"}, stop: "length",
		},
		{
			name: "CRLF line ends, keep-alive comments and event fields",
			body: strings.ReplaceAll(": keep-alive\n\nevent: message\n"+textChunk("Hel")+":\n"+textChunk("lo")+": ping\n"+finishChunk("stop")+"data: [DONE]\n\n", "\n", "\r\n"),
			want: llm.Message{Role: llm.RoleAssistant, Content: "Hello"}, stop: "stop",
		},
		{
			name: "lone CR line ends",
			body: strings.ReplaceAll(textChunk("Hel")+textChunk("lo")+finishChunk("stop"), "\n", "\r"),
			want: llm.Message{Role: llm.RoleAssistant, Content: "Hello"}, stop: "stop",
		},
		{
			name: "a chunk in several data lines",
			body: "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"Hello\"}}]}\n\n" + finishChunk("stop"),
			want: llm.Message{Role: llm.RoleAssistant, Content: "Hello"}, stop: "stop",
		},
		{
			name: "tool calls by index, fragments interleaved",
			body: sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\""}},{"index":1,"id":"c2","type":"function","function":{"name":"g","arguments":""}}]}}]}`) +
				sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}},{"index":0,"function":{"arguments":":1}"}}]}}]}`) +
				finishChunk("tool_calls"),
			want: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call("c1", "f", `{"a":1}`), call("c2", "g", `{}`)}}, stop: "tool_calls",
		},
		{
			name: "no index: index 0 reused with a new id; Ollama's stop with tool calls",
			body: sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}`) +
				sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c2","function":{"name":"g","arguments":"{}"}}]}}]}`) +
				finishChunk("stop"),
			want: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call("c1", "f", `{"a":1}`), call("c2", "g", `{}`)}}, stop: "tool_calls",
		},
		{
			name: "arguments as an object",
			body: sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":{"a":1}}}]}}]}`) + finishChunk("tool_calls"),
			want: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call("c1", "f", `{"a":1}`)}}, stop: "tool_calls",
		},
		{
			name: "loose types: string index, float usage, null fields, content parts, other choices ignored",
			body: sseChunk(`{"choices":[{"index":"0","delta":{"role":null,"content":[{"type":"text","text":"Hel"}]},"finish_reason":null},{"index":1,"delta":{"content":"other"}}]}`) +
				sseChunk(`{"choices":[{"index":0.0,"delta":{"content":"lo","tool_calls":null}}],"usage":null}`) +
				finishChunk("stop") + `data: {"choices":null,"usage":{"prompt_tokens":11.0,"completion_tokens":"7"}}` + "\n\n",
			want: llm.Message{Role: llm.RoleAssistant, Content: "Hello"}, stop: "stop", usage: llm.Usage{InputTokens: 11, OutputTokens: 7},
		},
		{
			name: "escaped lone surrogate becomes U+FFFD",
			body: sseChunk(`{"choices":[{"index":0,"delta":{"content":"a\ud800b"}}]}`) + finishChunk("stop"),
			want: llm.Message{Role: llm.RoleAssistant, Content: "a\uFFFDb"}, stop: "stop",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err, deltas, _ := completeRaw(t, tc.body, true)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if diff := cmp.Diff(tc.want, resp.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			if resp.StopReason != tc.stop || resp.Usage != tc.usage {
				t.Errorf("stop %q usage %+v, want %q %+v", resp.StopReason, resp.Usage, tc.stop, tc.usage)
			}
			if got := strings.Join(deltas, ""); got != tc.want.Content {
				t.Errorf("deltas %q, want them to make %q", deltas, tc.want.Content)
			}
		})
	}
}

func TestOpenAIBodyVariants(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		want  llm.Message
		stop  string
		usage llm.Usage
	}{
		{
			name: "arguments as an object, Ollama's stop with tool calls",
			body: `{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":{"a":1}}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}`,
			want: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: `{"a":1}`}}}, stop: "tool_calls", usage: llm.Usage{InputTokens: 3, OutputTokens: 2},
		},
		{
			name: "loose types",
			body: `{"choices":[{"index":"0","message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},"finish_reason":"length"}],"usage":{"prompt_tokens":"3","completion_tokens":2.9}}`,
			want: llm.Message{Role: llm.RoleAssistant, Content: "ab"}, stop: "length", usage: llm.Usage{InputTokens: 3, OutputTokens: 2},
		},
		{
			name: "usage of the wrong shape is no usage",
			body: `{"choices":[{"message":{"content":"hi"}}],"usage":42}`,
			want: llm.Message{Role: llm.RoleAssistant, Content: "hi"}, stop: "stop",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err, _, _ := completeRaw(t, tc.body, false)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if diff := cmp.Diff(tc.want, resp.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			if resp.StopReason != tc.stop || resp.Usage != tc.usage {
				t.Errorf("stop %q usage %+v, want %q %+v", resp.StopReason, resp.Usage, tc.stop, tc.usage)
			}
		})
	}
}

// toolCallChunks is n tool calls in one chunk each, with distinct ids and
// no index.
func toolCallChunks(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(sseChunk(fmt.Sprintf(`{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c%d","function":{"name":"f","arguments":"{}"}}]}}]}`, i)))
	}
	return b.String()
}

func TestOpenAIHostileAnswers(t *testing.T) {
	big := strings.Repeat("x", llm.MaxResponseBytes)
	manyCalls := make([]string, llm.MaxToolCalls+1)
	for i := range manyCalls {
		manyCalls[i] = fmt.Sprintf(`{"id":"c%d","function":{"name":"f","arguments":"{}"}}`, i)
	}
	cases := []struct {
		name   string
		body   string
		stream bool
		text   bool // some text reached OnDelta first
	}{
		{name: "invalid UTF-8 in a chunk", stream: true, body: textChunk("ok") + "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n" + finishChunk("stop"), text: true},
		{name: "invalid JSON chunk", stream: true, body: sseChunk(`{"choices":[{"index":0,"delta":{"content":"a"`) + finishChunk("stop")},
		{name: "a chunk that is not an object", stream: true, body: sseChunk(`[1,2,3]`) + finishChunk("stop")},
		{name: "choices of the wrong shape", stream: true, body: sseChunk(`{"choices":{"index":0}}`) + finishChunk("stop")},
		{name: "only [DONE]", stream: true, body: "data: [DONE]\n\n"},
		{name: "only comments", stream: true, body: ": keep-alive\n\n: keep-alive\n\n"},
		{name: "a line over the bound, never ended", stream: true, body: "data: " + big},
		{name: "an event over the bound in many lines", stream: true, body: strings.Repeat("data: "+strings.Repeat("x", 1<<20)+"\n", 9) + "\n"},
		{name: "a streamed answer over the bound", stream: true, body: strings.Repeat(textChunk(strings.Repeat("y", 1<<20)), 9) + finishChunk("stop"), text: true},
		{name: "a huge tool call index", stream: true, body: sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":4294967296,"id":"c","function":{"name":"f"}}]}}]}`) + finishChunk("tool_calls")},
		{name: "a negative tool call index", stream: true, body: sseChunk(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":-1,"id":"c","function":{"name":"f"}}]}}]}`) + finishChunk("tool_calls")},
		{name: "an index past the bound", stream: true, body: sseChunk(fmt.Sprintf(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":%d,"id":"c"}]}}]}`, llm.MaxToolCalls)) + finishChunk("tool_calls")},
		{name: "too many streamed tool calls", stream: true, body: toolCallChunks(llm.MaxToolCalls+1) + finishChunk("tool_calls")},
		{name: "invalid UTF-8 body", body: "{\"choices\":[{\"message\":{\"content\":\"\xff\"}}]}"},
		{name: "a body over the bound", body: `{"choices":[{"message":{"content":"` + big + `"}}]}`},
		{name: "a body that is not an object", body: `[{"choices":[]}]`},
		{name: "a message of the wrong shape", body: `{"choices":[{"message":"hi"}]}`},
		{name: "too many tool calls", body: `{"choices":[{"message":{"tool_calls":[` + strings.Join(manyCalls, ",") + `]}}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err, deltas, reqs := completeRaw(t, tc.body, tc.stream)
			e := checkError(t, err, llm.ErrBadResponse, "llm.base_url")
			if e != nil && (e.Status != 200 || len(e.Err.Error()) > 100) {
				t.Errorf("status %d, error %q; want 200 and a short error of ours", e.Status, e.Err)
			}
			if reqs != 1 {
				t.Errorf("server got %d requests, want 1 (a bad answer is not retried)", reqs)
			}
			if (len(deltas) > 0) != tc.text {
				t.Errorf("deltas %.40q, want text shown: %v", deltas, tc.text)
			}
		})
	}
}

func TestOpenAIStreamFailures(t *testing.T) {
	cases := []struct {
		name      string
		body      string
		header    map[string]string
		wantKind  llm.ErrorKind
		wantReqs  int // with MaxRetries 2, the same answer every time
		wantDelta bool
	}{
		{name: "error event", body: "event: error\ndata: {\"message\":\"overloaded\"}\n\n", wantKind: llm.ErrServer, wantReqs: 3},
		{name: "error in a chunk after text", body: textChunk("partial") + sseChunk(`{"error":{"message":"boom","type":"server_error"}}`), wantKind: llm.ErrServer, wantReqs: 1, wantDelta: true},
		{name: "ended before a finish reason", body: sseChunk(`{"choices":[{"index":0,"delta":{"role":"assistant"}}]}`), wantKind: llm.ErrServer, wantReqs: 3},
		{name: "ended before a finish reason, after text", body: textChunk("partial"), wantKind: llm.ErrServer, wantReqs: 1, wantDelta: true},
		{name: "redirect elsewhere", body: "moved", header: map[string]string{"Location": "http://198.51.100.7/v1/chat/completions"}, wantKind: llm.ErrBadResponse, wantReqs: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := llmtest.Response{RawBody: tc.body, Header: eventStream}
			if tc.header != nil {
				resp = llmtest.Response{RawBody: tc.body, Status: http.StatusTemporaryRedirect, Header: tc.header}
			}
			srv := llmtest.NewServer(t, llmtest.Script(resp))
			p, _ := newProvider(t, llmtest.OpenAI, srv, llm.Config{MaxRetries: 2})
			req := userRequest(canary)
			var deltas []string
			req.OnDelta = func(d string) { deltas = append(deltas, d) }
			_, err := p.Complete(t.Context(), req)
			checkError(t, err, tc.wantKind, "")
			if n := len(srv.Requests()); n != tc.wantReqs {
				t.Errorf("server got %d requests, want %d", n, tc.wantReqs)
			}
			if (len(deltas) > 0) != tc.wantDelta {
				t.Errorf("deltas %q, want text shown: %v", deltas, tc.wantDelta)
			}
		})
	}
}

// endless answers with headers and then never ends its body: with
// keepAlive it sends a comment every few milliseconds, otherwise nothing.
func endless(t *testing.T, stream, keepAlive bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if stream {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte(textChunk("still thinking")))
		} else {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"choices":[{"message":{"content":"`))
		}
		_ = rc.Flush()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				if keepAlive {
					_, _ = w.Write([]byte(": keep-alive\n\n"))
					_ = rc.Flush()
				}
			}
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

func TestOpenAIBodyThatNeverEnds(t *testing.T) {
	for _, tc := range []struct {
		name              string
		stream, keepAlive bool
	}{{"stream", true, false}, {"stream with keep-alives", true, true}, {"json", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := endless(t, tc.stream, tc.keepAlive)
			p, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL + "/v1", Model: testModel, Timeout: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			p.Sleep = (&sleeps{}).sleep
			req := userRequest(canary)
			var deltas []string
			if tc.stream {
				req.OnDelta = func(d string) { deltas = append(deltas, d) }
			}
			_, err = p.Complete(t.Context(), req)
			checkError(t, err, llm.ErrTimeout, "llm.timeout")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(err, DeadlineExceeded) = false for %v", err)
			}
			if tc.stream && strings.Join(deltas, "") != "still thinking" {
				t.Errorf("deltas %q, want the text sent before the stall", deltas)
			}
		})
	}
}

func TestOpenAIRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"choices":[{"message":{"content":"from elsewhere"}}]}`))
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved/chat/completions":
			http.Redirect(w, r, "/v1/chat/completions", http.StatusPermanentRedirect)
		case "/away/chat/completions":
			http.Redirect(w, r, other.URL+"/v1/chat/completions", http.StatusTemporaryRedirect)
		case "/v1/chat/completions":
			if r.Header.Get("Authorization") != "Bearer "+testKey {
				http.Error(w, `{"error":"no key"}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"choices":[{"message":{"content":"here"}}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	p, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL + "/moved", Model: testModel, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Complete(t.Context(), userRequest("hi"))
	if err != nil || resp.Message.Content != "here" {
		t.Fatalf("same-origin redirect: %v, %+v; want it followed with the key", err, resp)
	}

	p, err = llm.NewOpenAI(llm.Config{BaseURL: srv.URL + "/away", Model: testModel, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Complete(t.Context(), userRequest(canary))
	if e := checkError(t, err, llm.ErrBadResponse, "llm.base_url"); e != nil && e.Status != http.StatusTemporaryRedirect {
		t.Errorf("status %d, want 307", e.Status)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the other origin got %d requests, want none: the prompt and key stay with the configured endpoint", n)
	}
}
