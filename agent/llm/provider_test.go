package llm_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

const (
	testKey   = "sk-test-SECRET-0123456789"
	testModel = "test-model"
	canary    = "PROMPT-CANARY-42"
)

var kinds = []string{llmtest.OpenAI, llmtest.Anthropic}

// sleeps records the waits a provider asked for instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration // guarded by mu
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return ctx.Err()
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// newProvider builds the provider kind against srv with cfg's other fields.
func newProvider(t *testing.T, kind string, srv *llmtest.Server, cfg llm.Config) (llm.Provider, *sleeps) {
	t.Helper()
	cfg.Model = testModel
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	s := &sleeps{}
	switch kind {
	case llmtest.OpenAI:
		if cfg.BaseURL == "" {
			cfg.BaseURL = srv.URL
		}
		p, err := llm.NewOpenAI(cfg)
		if err != nil {
			t.Fatalf("NewOpenAI: %v", err)
		}
		p.Sleep = s.sleep
		return p, s
	case llmtest.Anthropic:
		if cfg.BaseURL == "" {
			cfg.BaseURL = srv.AnthropicURL
		}
		p, err := llm.NewAnthropic(cfg)
		if err != nil {
			t.Fatalf("NewAnthropic: %v", err)
		}
		p.Sleep = s.sleep
		return p, s
	}
	t.Fatalf("unknown provider %q", kind)
	return nil, nil
}

func userRequest(text string) llm.Request {
	return llm.Request{System: "be brief", Messages: []llm.Message{{Role: llm.RoleUser, Content: text}}}
}

func TestComplete(t *testing.T) {
	for _, kind := range kinds {
		for _, stream := range []bool{false, true} {
			name := kind
			if stream {
				name += "/stream"
			}
			t.Run(name, func(t *testing.T) {
				srv := llmtest.NewServer(t, llmtest.Echo())
				p, _ := newProvider(t, kind, srv, llm.Config{})
				req := userRequest("hello there")
				var deltas []string
				if stream {
					req.OnDelta = func(s string) { deltas = append(deltas, s) }
				}
				resp, err := p.Complete(t.Context(), req)
				if err != nil {
					t.Fatalf("Complete: %v", err)
				}
				want := llm.Message{Role: llm.RoleAssistant, Content: "echo: hello there"}
				if diff := cmp.Diff(want, resp.Message); diff != "" {
					t.Errorf("message (-want +got):\n%s", diff)
				}
				if resp.StopReason != "stop" {
					t.Errorf("stop reason = %q, want stop", resp.StopReason)
				}
				if resp.Usage.InputTokens == 0 || resp.Usage.OutputTokens == 0 {
					t.Errorf("usage = %+v, want both counts", resp.Usage)
				}
				if stream {
					if len(deltas) < 2 || strings.Join(deltas, "") != want.Content {
						t.Errorf("deltas = %q, want several making %q", deltas, want.Content)
					}
				}
				reqs := srv.Requests()
				if len(reqs) != 1 {
					t.Fatalf("server got %d requests, want 1", len(reqs))
				}
				got := reqs[0]
				if got.Provider != kind || got.Model != testModel || got.System != "be brief" || got.Stream != stream {
					t.Errorf("request = provider %q model %q system %q stream %v", got.Provider, got.Model, got.System, got.Stream)
				}
				if diff := cmp.Diff(req.Messages, got.Messages); diff != "" {
					t.Errorf("messages sent (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestStreamDeltasInOrder(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			text := "one two three four five"
			srv := llmtest.NewServer(t, llmtest.Text(text))
			p, _ := newProvider(t, kind, srv, llm.Config{})
			var deltas []string
			req := userRequest("count")
			req.OnDelta = func(s string) { deltas = append(deltas, s) }
			resp, err := p.Complete(t.Context(), req)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			want := []string{"one", " two", " three", " four", " five"}
			if diff := cmp.Diff(want, deltas); diff != "" {
				t.Errorf("deltas (-want +got):\n%s", diff)
			}
			if resp.Message.Content != text {
				t.Errorf("content = %q, want %q", resp.Message.Content, text)
			}
		})
	}
}

func TestToolCallRoundTrip(t *testing.T) {
	tools := []llm.Tool{
		{Name: "get_weather", Description: "weather for a city", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)},
		{Name: "broken", Description: "gets malformed arguments"},
	}
	calls := []llm.ToolCall{
		{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`},
		{ID: "call_2", Name: "broken", Arguments: `{"x":`},
	}
	for _, kind := range kinds {
		for _, stream := range []bool{false, true} {
			name := kind
			if stream {
				name += "/stream"
			}
			t.Run(name, func(t *testing.T) {
				srv := llmtest.NewServer(t, llmtest.Script(
					llmtest.Response{Text: "let me check", ToolCalls: calls},
					llmtest.Response{Text: "sunny"},
				))
				p, _ := newProvider(t, kind, srv, llm.Config{})
				req := userRequest("weather in Paris?")
				req.Tools = tools
				if stream {
					req.OnDelta = func(string) {}
				}
				resp, err := p.Complete(t.Context(), req)
				if err != nil {
					t.Fatalf("Complete: %v", err)
				}
				wantCalls := calls
				if kind == llmtest.Anthropic && !stream {
					// A JSON answer cannot carry invalid JSON; the fake sends it as a string.
					wantCalls = []llm.ToolCall{calls[0], {ID: "call_2", Name: "broken", Arguments: `"{\"x\":"`}}
				}
				if diff := cmp.Diff(wantCalls, resp.Message.ToolCalls); diff != "" {
					t.Errorf("tool calls (-want +got):\n%s", diff)
				}
				if resp.StopReason != "tool_calls" || resp.Message.Content != "let me check" {
					t.Errorf("stop %q content %q, want tool_calls and the text", resp.StopReason, resp.Message.Content)
				}

				req.Messages = append(req.Messages,
					llm.Message{Role: llm.RoleAssistant, Content: "let me check", ToolCalls: calls},
					llm.Message{Role: llm.RoleTool, ToolCallID: "call_1", ToolName: "get_weather", Content: "sunny, 21C"},
					llm.Message{Role: llm.RoleTool, ToolCallID: "call_2", ToolName: "broken", Content: "invalid arguments", IsError: true},
				)
				if _, err := p.Complete(t.Context(), req); err != nil {
					t.Fatalf("second Complete: %v", err)
				}
				reqs := srv.Requests()
				if len(reqs) != 2 {
					t.Fatalf("server got %d requests, want 2", len(reqs))
				}
				if diff := cmp.Diff([]string{"get_weather", "broken"}, reqs[0].Tools); diff != "" {
					t.Errorf("tools offered (-want +got):\n%s", diff)
				}
				sentCalls := calls
				if kind == llmtest.Anthropic {
					sentCalls = []llm.ToolCall{calls[0], {ID: "call_2", Name: "broken", Arguments: `{}`}}
				}
				wantMsgs := []llm.Message{
					{Role: llm.RoleUser, Content: "weather in Paris?"},
					{Role: llm.RoleAssistant, Content: "let me check", ToolCalls: sentCalls},
					{Role: llm.RoleTool, ToolCallID: "call_1", Content: "sunny, 21C"},
					{Role: llm.RoleTool, ToolCallID: "call_2", Content: "invalid arguments", IsError: kind == llmtest.Anthropic},
				}
				if diff := cmp.Diff(wantMsgs, reqs[1].Messages); diff != "" {
					t.Errorf("history sent (-want +got):\n%s", diff)
				}
				checkToolWireShape(t, kind, reqs[1].Raw)
			})
		}
	}
}

// checkToolWireShape asserts the tool results' wire form: OpenAI tool
// messages with tool_call_id; Anthropic one user message of tool_result
// blocks.
func checkToolWireShape(t *testing.T, kind string, raw []byte) {
	t.Helper()
	var body struct {
		Messages []struct {
			Role       string          `json:"role"`
			Content    json.RawMessage `json:"content"`
			ToolCallID string          `json:"tool_call_id"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("decode sent body: %v", err)
	}
	var roles []string
	for _, m := range body.Messages {
		roles = append(roles, m.Role)
	}
	if kind == llmtest.OpenAI {
		want := []string{"system", "user", "assistant", "tool", "tool"}
		if diff := cmp.Diff(want, roles); diff != "" {
			t.Errorf("roles (-want +got):\n%s", diff)
		}
		if len(body.Messages) == 5 && body.Messages[3].ToolCallID != "call_1" {
			t.Errorf("tool_call_id = %q, want call_1", body.Messages[3].ToolCallID)
		}
		return
	}
	if diff := cmp.Diff([]string{"user", "assistant", "user"}, roles); diff != "" {
		t.Fatalf("roles (-want +got):\n%s", diff)
	}
	var blocks []struct {
		Type      string `json:"type"`
		ToolUseID string `json:"tool_use_id"`
		IsError   bool   `json:"is_error"`
	}
	if err := json.Unmarshal(body.Messages[2].Content, &blocks); err != nil {
		t.Fatalf("decode tool results: %v", err)
	}
	want := []struct {
		Type      string `json:"type"`
		ToolUseID string `json:"tool_use_id"`
		IsError   bool   `json:"is_error"`
	}{{"tool_result", "call_1", false}, {"tool_result", "call_2", true}}
	if diff := cmp.Diff(want, blocks); diff != "" {
		t.Errorf("tool_result blocks (-want +got):\n%s", diff)
	}
}

func TestRetryAfterThenSuccess(t *testing.T) {
	cases := []struct {
		name   string
		status int
		header map[string]string
		want   time.Duration
	}{
		{"429 seconds", 429, map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"429 milliseconds", 429, map[string]string{"retry-after-ms": "1500"}, 1500 * time.Millisecond},
		{"503 seconds", 503, map[string]string{"Retry-After": "2"}, 2 * time.Second},
		{"429 capped", 429, map[string]string{"Retry-After": "3600"}, llm.MaxRetryAfter},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				srv := llmtest.NewServer(t, llmtest.Script(
					llmtest.Response{Status: tc.status, Header: tc.header},
					llmtest.Response{Text: "ok"},
				))
				p, s := newProvider(t, kind, srv, llm.Config{})
				resp, err := p.Complete(t.Context(), userRequest("hi"))
				if err != nil {
					t.Fatalf("Complete: %v", err)
				}
				if resp.Message.Content != "ok" {
					t.Errorf("content = %q, want ok", resp.Message.Content)
				}
				if diff := cmp.Diff([]time.Duration{tc.want}, s.got()); diff != "" {
					t.Errorf("sleeps (-want +got):\n%s", diff)
				}
				if n := len(srv.Requests()); n != 2 {
					t.Errorf("server got %d requests, want 2", n)
				}
			})
		}
	}
}

func TestStreamRetriedBeforeFirstDelta(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{Status: 500}, llmtest.Response{Text: "fine now"}))
			p, s := newProvider(t, kind, srv, llm.Config{})
			req := userRequest("hi")
			var got strings.Builder
			req.OnDelta = func(d string) { got.WriteString(d) }
			if _, err := p.Complete(t.Context(), req); err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if got.String() != "fine now" || len(s.got()) != 1 || len(srv.Requests()) != 2 {
				t.Errorf("deltas %q, %d sleeps, %d requests; want the text, 1, 2", got.String(), len(s.got()), len(srv.Requests()))
			}
		})
	}
}

func TestStreamNotRetriedAfterDeltas(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{Text: "partial answer here", Truncate: true}, llmtest.Response{Text: "second"}))
			p, _ := newProvider(t, kind, srv, llm.Config{})
			req := userRequest("hi")
			var deltas []string
			req.OnDelta = func(d string) { deltas = append(deltas, d) }
			_, err := p.Complete(t.Context(), req)
			if err == nil {
				t.Fatal("Complete succeeded on a broken stream")
			}
			if len(deltas) == 0 {
				t.Errorf("no deltas before the break")
			}
			if n := len(srv.Requests()); n != 1 {
				t.Errorf("server got %d requests, want 1 (no retry after deltas)", n)
			}
			var e *llm.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *llm.Error", err)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name       string
		only       string // provider, or "" for both
		resp       llmtest.Response
		stream     bool
		wantKind   llm.ErrorKind
		wantStatus int
		wantReqs   int // with MaxRetries 2
		hint       string
	}{
		{name: "401", resp: llmtest.Response{Status: 401}, wantKind: llm.ErrAuth, wantStatus: 401, wantReqs: 1, hint: "API key"},
		{name: "403", resp: llmtest.Response{Status: 403}, wantKind: llm.ErrAuth, wantStatus: 403, wantReqs: 1, hint: "API key"},
		{name: "401 stream", resp: llmtest.Response{Status: 401}, stream: true, wantKind: llm.ErrAuth, wantStatus: 401, wantReqs: 1, hint: "API key"},
		{name: "404 model", resp: llmtest.Response{Status: 404}, wantKind: llm.ErrModel, wantStatus: 404, wantReqs: 1, hint: testModel},
		{name: "400 model not found", only: llmtest.OpenAI, resp: llmtest.Response{Status: 400, RawBody: `{"error":{"message":"model \"test-model\" not found, try pulling it first"}}`}, wantKind: llm.ErrModel, wantStatus: 400, wantReqs: 1, hint: "llm.model"},
		{name: "400", resp: llmtest.Response{Status: 400}, wantKind: llm.ErrBadRequest, wantStatus: 400, wantReqs: 1, hint: "refused"},
		{name: "500 forever", resp: llmtest.Response{Status: 500}, wantKind: llm.ErrServer, wantStatus: 500, wantReqs: 3, hint: "try again"},
		{name: "500 forever stream", resp: llmtest.Response{Status: 500}, stream: true, wantKind: llm.ErrServer, wantStatus: 500, wantReqs: 3, hint: "try again"},
		{name: "529 overloaded", only: llmtest.Anthropic, resp: llmtest.Response{Status: 529}, wantKind: llm.ErrServer, wantStatus: 529, wantReqs: 3, hint: "try again"},
		{name: "429 forever", resp: llmtest.Response{Status: 429, Header: map[string]string{"Retry-After": "1"}}, wantKind: llm.ErrRateLimit, wantStatus: 429, wantReqs: 3, hint: "rate limit"},
		{name: "malformed body", resp: llmtest.Response{RawBody: `this is not json {`}, wantKind: llm.ErrBadResponse, wantStatus: 200, wantReqs: 1, hint: "llm.base_url"},
		{name: "wrong json", resp: llmtest.Response{RawBody: `{"hello":"world"}`}, wantKind: llm.ErrBadResponse, wantStatus: 200, wantReqs: 1, hint: "llm.base_url"},
		{name: "malformed stream", resp: llmtest.Response{RawBody: `{"hello":"world"}`}, stream: true, wantKind: llm.ErrBadResponse, wantStatus: 200, wantReqs: 1, hint: "llm.base_url"},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			if tc.only != "" && tc.only != kind {
				continue
			}
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				srv := llmtest.NewServer(t, llmtest.Script(tc.resp))
				p, s := newProvider(t, kind, srv, llm.Config{MaxRetries: 2})
				req := userRequest(canary)
				if tc.stream {
					req.OnDelta = func(string) {}
				}
				_, err := p.Complete(t.Context(), req)
				e := checkError(t, err, tc.wantKind, tc.hint)
				if e != nil && e.Status != tc.wantStatus {
					t.Errorf("status = %d, want %d", e.Status, tc.wantStatus)
				}
				if n := len(srv.Requests()); n != tc.wantReqs {
					t.Errorf("server got %d requests, want %d", n, tc.wantReqs)
				}
				if n := len(s.got()); n != tc.wantReqs-1 {
					t.Errorf("slept %d times, want %d", n, tc.wantReqs-1)
				}
			})
		}
	}
}

// checkError asserts err is an *llm.Error of kind with a hint containing
// hint, and that it leaks neither the key nor the prompt.
func checkError(t *testing.T, err error, kind llm.ErrorKind, hint string) *llm.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("Complete succeeded, want %v error", kind)
	}
	var e *llm.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T (%v) is not *llm.Error", err, err)
	}
	if e.Kind != kind {
		t.Errorf("kind = %v, want %v (error: %v)", e.Kind, kind, err)
	}
	if !strings.Contains(e.Hint, hint) {
		t.Errorf("hint = %q, want it to mention %q", e.Hint, hint)
	}
	if s := err.Error(); strings.Contains(s, testKey) || strings.Contains(s, canary) {
		t.Errorf("error leaks the key or the prompt: %s", s)
	}
	return e
}

func TestUnreachable(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, nil)
			p, s := newProvider(t, kind, srv, llm.Config{MaxRetries: 1})
			srv.Close()
			_, err := p.Complete(t.Context(), userRequest(canary))
			checkError(t, err, llm.ErrUnreachable, "127.0.0.1")
			if n := len(s.got()); n != 1 {
				t.Errorf("slept %d times, want 1 (connection errors are retried)", n)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	cases := []struct {
		name    string
		timeout time.Duration // llm.Config.Timeout
		ctx     time.Duration // caller's deadline
		stream  bool
	}{
		{name: "attempt timeout", timeout: 50 * time.Millisecond},
		{name: "attempt timeout stream", timeout: 50 * time.Millisecond, stream: true},
		{name: "caller deadline", ctx: 50 * time.Millisecond},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{Hang: true}))
				p, _ := newProvider(t, kind, srv, llm.Config{Timeout: tc.timeout})
				ctx := t.Context()
				if tc.ctx > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.ctx)
					defer cancel()
				}
				req := userRequest(canary)
				if tc.stream {
					req.OnDelta = func(string) {}
				}
				_, err := p.Complete(ctx, req)
				checkError(t, err, llm.ErrTimeout, "llm.timeout")
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("errors.Is(err, DeadlineExceeded) = false for %v", err)
				}
				// A timeout is not retried. (Under heavy load the attempt's
				// 50 ms can pass before the server has read the request, so
				// none at all is no failure.)
				if n := len(srv.Requests()); n > 1 {
					t.Errorf("server got %d requests, want at most 1 (a timeout is not retried)", n)
				}
			})
		}
	}
}

func TestHeadersAndKey(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, nil)
			p, _ := newProvider(t, kind, srv, llm.Config{Headers: map[string]string{"X-Talon-Test": "yes", "HTTP-Referer": "https://talon.example"}})
			if _, err := p.Complete(t.Context(), userRequest("hi")); err != nil {
				t.Fatalf("Complete: %v", err)
			}
			h := srv.Requests()[0].Header
			if h.Get("X-Talon-Test") != "yes" || h.Get("HTTP-Referer") != "https://talon.example" {
				t.Errorf("extra headers missing: %v", h)
			}
			var auth string
			if kind == llmtest.OpenAI {
				auth = strings.TrimPrefix(h.Get("Authorization"), "Bearer ")
			} else {
				auth = h.Get("X-Api-Key")
			}
			if auth != testKey {
				t.Errorf("key header = %q, want the configured key", auth)
			}
		})
	}
}

func TestOpenAIWithoutKey(t *testing.T) {
	srv := llmtest.NewServer(t, nil)
	p, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL, Model: "llama3"})
	if err != nil {
		t.Fatalf("NewOpenAI: %v", err)
	}
	if _, err := p.Complete(t.Context(), userRequest("hi")); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if got := srv.Requests()[0].Header.Get("Authorization"); got != "" {
		t.Errorf("Authorization = %q, want none without a key", got)
	}
}

func TestMaxTokens(t *testing.T) {
	cases := []struct {
		kind     string
		cfg, req int
		wantSent int
	}{
		{llmtest.Anthropic, 0, 0, llm.DefaultAnthropicMaxTokens},
		{llmtest.Anthropic, 1000, 0, 1000},
		{llmtest.Anthropic, 1000, 50, 50},
		{llmtest.OpenAI, 0, 0, 0},
		{llmtest.OpenAI, 1000, 0, 1000},
		{llmtest.OpenAI, 1000, 50, 50},
	}
	for _, tc := range cases {
		srv := llmtest.NewServer(t, nil)
		p, _ := newProvider(t, tc.kind, srv, llm.Config{MaxTokens: tc.cfg})
		req := userRequest("hi")
		req.MaxTokens = tc.req
		if _, err := p.Complete(t.Context(), req); err != nil {
			t.Fatalf("%s: Complete: %v", tc.kind, err)
		}
		if got := srv.Requests()[0].MaxTokens; got != tc.wantSent {
			t.Errorf("%s cfg %d req %d: sent max tokens %d, want %d", tc.kind, tc.cfg, tc.req, got, tc.wantSent)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		new  func(llm.Config) error
		cfg  llm.Config
	}{
		{"openai no model", func(c llm.Config) error { _, err := llm.NewOpenAI(c); return err }, llm.Config{}},
		{"openai bad url", func(c llm.Config) error { _, err := llm.NewOpenAI(c); return err }, llm.Config{Model: "m", BaseURL: "localhost:11434"}},
		{"anthropic no key", func(c llm.Config) error { _, err := llm.NewAnthropic(c); return err }, llm.Config{Model: "m"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.new(tc.cfg); err == nil {
				t.Errorf("constructor accepted %+v", tc.cfg)
			}
		})
	}
}

func TestInvalidToolSchemaIsBadRequest(t *testing.T) {
	for _, kind := range kinds {
		srv := llmtest.NewServer(t, nil)
		p, _ := newProvider(t, kind, srv, llm.Config{})
		req := userRequest("hi")
		req.Tools = []llm.Tool{{Name: "t", Parameters: json.RawMessage(`[1,2]`)}}
		_, err := p.Complete(t.Context(), req)
		if llm.KindOf(err) != llm.ErrBadRequest {
			t.Errorf("%s: kind = %v, want bad_request (%v)", kind, llm.KindOf(err), err)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Errorf("%s: %d requests sent, want none", kind, n)
		}
	}
}

func TestConcurrentCalls(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, nil)
			p, _ := newProvider(t, kind, srv, llm.Config{})
			const n = 50
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					req := userRequest("hi")
					if i%2 == 0 {
						req.OnDelta = func(string) {}
					}
					if _, err := p.Complete(t.Context(), req); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("Complete: %v", err)
			}
			if got := len(srv.Requests()); got != n {
				t.Errorf("server got %d requests, want %d", got, n)
			}
		})
	}
}

func TestStreamErrorEvent(t *testing.T) {
	cases := []struct {
		kind string
		body string
	}{
		{llmtest.OpenAI, "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n"},
		{llmtest.Anthropic, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"x\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n" +
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Script(
				llmtest.Response{RawBody: tc.body, Header: map[string]string{"Content-Type": "text/event-stream"}},
				llmtest.Response{Text: "recovered"},
			))
			p, s := newProvider(t, tc.kind, srv, llm.Config{})
			req := userRequest("hi")
			req.OnDelta = func(string) {}
			resp, err := p.Complete(t.Context(), req)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if resp.Message.Content != "recovered" || len(s.got()) != 1 {
				t.Errorf("content %q after %d sleeps, want a retried success", resp.Message.Content, len(s.got()))
			}
		})
	}
}

// A request's ToolChoice reaches the endpoint in the provider's own shape
// (the fake parses OpenAI's function object and Anthropic's tool block);
// none is sent without it, and one naming no offered tool is refused
// before anything is sent.
func TestToolChoice(t *testing.T) {
	tools := []llm.Tool{{Name: "a", Parameters: json.RawMessage(`{"type":"object"}`)}, {Name: "b", Parameters: json.RawMessage(`{"type":"object"}`)}}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, nil)
			p, _ := newProvider(t, kind, srv, llm.Config{})
			for _, pick := range []string{"b", ""} {
				req := userRequest("hi")
				req.Tools, req.ToolChoice = tools, pick
				if _, err := p.Complete(t.Context(), req); err != nil {
					t.Fatalf("tool choice %q: %v", pick, err)
				}
				reqs := srv.Requests()
				if got := reqs[len(reqs)-1].ToolChoice; got != pick {
					t.Errorf("tool choice sent: got %q, want %q; body %s", got, pick, reqs[len(reqs)-1].Raw)
				}
			}
			req := userRequest("hi")
			req.Tools, req.ToolChoice = tools, "c"
			_, err := p.Complete(t.Context(), req)
			if llm.KindOf(err) != llm.ErrBadRequest || !strings.Contains(err.Error(), `"c"`) {
				t.Errorf("a choice of no offered tool: %v, want a bad request naming it", err)
			}
			if n := len(srv.Requests()); n != 2 {
				t.Errorf("%d requests sent, want the 2 valid ones", n)
			}
		})
	}
}
