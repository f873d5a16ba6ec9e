package llmtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm"
)

// Provider names used in Request.Provider.
const (
	OpenAI    = "openai"
	Anthropic = "anthropic"
)

// Request is a request the server received, parsed into provider-neutral
// terms.
type Request struct {
	// Provider is OpenAI or Anthropic, from the path that was called.
	Provider string
	Model    string
	// System is the system prompt (OpenAI system/developer messages joined
	// by blank lines).
	System string
	// Messages are the conversation converted back to llm types: tool
	// results are RoleTool messages, assistant tool calls are ToolCalls
	// with their arguments as sent.
	Messages []llm.Message
	// Tools are the names of the tools offered.
	Tools []string
	// ToolChoice is the tool the request forces the model to call
	// (OpenAI's tool_choice function, Anthropic's tool_choice tool), or ""
	// when the choice is left to the model.
	ToolChoice string
	// Stream reports whether a streamed answer was asked for.
	Stream bool
	// MaxTokens is the reply cap sent (max_tokens or max_completion_tokens).
	MaxTokens int
	// Raw is the request body as received, for leak assertions.
	Raw []byte
	// Header is the request's headers.
	Header http.Header
}

// LastUserText returns the content of the last user message, or "".
func (r Request) LastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == llm.RoleUser {
			return r.Messages[i].Content
		}
	}
	return ""
}

// Response is the answer a Handler scripts. The zero value is an empty
// successful answer.
type Response struct {
	// Text is the assistant's text. Streamed answers split it into several
	// deltas.
	Text string
	// ToolCalls are the calls the model asks for. Arguments are sent
	// verbatim and may be invalid JSON on purpose (a non-streamed Anthropic
	// answer cannot carry invalid JSON, so there they are sent as a JSON
	// string).
	ToolCalls []llm.ToolCall
	// StopReason overrides the stop reason, in llm's words ("stop",
	// "tool_calls", "length"); empty derives it from ToolCalls.
	StopReason string
	// Status, when non-zero and not 200, answers with this HTTP status and
	// an error body in the calling provider's shape.
	Status int
	// Header is added to the answer's headers, e.g. "Retry-After".
	Header map[string]string
	// RawBody, when non-empty, is sent exactly as the body (status 200
	// unless Status says otherwise), for malformed answers.
	RawBody string
	// Delay waits before answering; the wait ends early if the client goes
	// away or the server closes.
	Delay time.Duration
	// Hang never answers: the request stays open until the client goes away
	// or the server closes.
	Hang bool
	// Truncate drops the connection part-way: a stream stops after the text
	// deltas without its final events; a JSON answer after half its body.
	Truncate bool
}

// Handler decides the answer to each request. It is called concurrently.
type Handler func(req Request) Response

// Script answers with responses in order; once they run out the last one
// repeats. With no responses it answers with empty text.
func Script(responses ...Response) Handler {
	var (
		mu sync.Mutex
		n  int // guarded by mu
	)
	return func(Request) Response {
		if len(responses) == 0 {
			return Response{}
		}
		mu.Lock()
		defer mu.Unlock()
		r := responses[min(n, len(responses)-1)]
		n++
		return r
	}
}

// Echo answers "echo: " followed by the last user message's text.
func Echo() Handler {
	return func(req Request) Response {
		return Response{Text: "echo: " + req.LastUserText()}
	}
}

// Text always answers with text.
func Text(text string) Handler {
	return func(Request) Response { return Response{Text: text} }
}

// Server is a fake LLM endpoint on 127.0.0.1. It is safe for concurrent use.
type Server struct {
	// URL is the base URL to configure: it ends with /v1 and works for
	// OpenAI-compatible clients (…/v1/chat/completions) and for Anthropic
	// clients alike (the server routes on the path's suffix).
	URL string
	// AnthropicURL is the base URL without /v1, as Anthropic's API is
	// usually configured.
	AnthropicURL string

	h         Handler
	srv       *httptest.Server
	done      chan struct{} // closed when the server shuts down
	closeOnce sync.Once

	mu   sync.Mutex
	reqs []Request // guarded by mu
	n    int       // ids issued; guarded by mu
}

// NewServer starts a server that answers with h (Echo when h is nil). It is
// closed by t.Cleanup.
func NewServer(t testing.TB, h Handler) *Server {
	t.Helper()
	if h == nil {
		h = Echo()
	}
	s := &Server{h: h, done: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL + "/v1"
	s.AnthropicURL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close shuts the server down now, ending hanging requests; later
// requests fail to connect, which tests of unreachable endpoints use. It is
// safe to call more than once and is also called by t.Cleanup.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Requests returns every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

func (s *Server) record(r Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r)
	s.n++
	return s.n
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var provider string
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/chat/completions"):
		provider = OpenAI
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages"):
		provider = Anthropic
	default:
		writeError(w, OpenAI, http.StatusNotFound, "")
		return
	}
	raw, err := readBody(r)
	if err != nil {
		writeError(w, provider, http.StatusBadRequest, "")
		return
	}
	var req Request
	if provider == OpenAI {
		req, err = parseOpenAI(raw)
	} else {
		req, err = parseAnthropic(raw)
	}
	if err != nil {
		writeError(w, provider, http.StatusBadRequest, "")
		return
	}
	req.Provider, req.Raw, req.Header = provider, raw, r.Header.Clone()
	id := s.record(req)
	resp := s.h(req)

	if resp.Delay > 0 || resp.Hang {
		var wait <-chan time.Time
		if !resp.Hang {
			t := time.NewTimer(resp.Delay)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
	for k, v := range resp.Header {
		w.Header().Set(k, v)
	}
	switch {
	case resp.Status != 0 && resp.Status != http.StatusOK && resp.RawBody == "":
		writeError(w, provider, resp.Status, req.Model)
		return
	case resp.RawBody != "":
		status := resp.Status
		if status == 0 {
			status = http.StatusOK
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(resp.RawBody))
		return
	}
	a := answer{id: id, model: req.Model, resp: resp, inputTokens: inputTokens(req)}
	switch {
	case provider == OpenAI && req.Stream:
		a.openAIStream(w, includeUsage(raw))
	case provider == OpenAI:
		a.openAIJSON(w)
	case req.Stream:
		a.anthropicStream(w)
	default:
		a.anthropicJSON(w)
	}
}

func readBody(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	return io.ReadAll(io.LimitReader(r.Body, 64<<20))
}

func inputTokens(req Request) int {
	n := llm.EstimateTokens(req.System)
	for _, m := range req.Messages {
		n += llm.EstimateTokens(m.Content)
		for _, tc := range m.ToolCalls {
			n += llm.EstimateTokens(tc.Arguments)
		}
	}
	return max(n, 1)
}

func includeUsage(raw []byte) bool {
	var body struct {
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(raw, &body)
	return body.StreamOptions.IncludeUsage
}

// splitText cuts s into several deltas: at word starts, or in halves for a
// single word.
func splitText(s string) []string {
	if s == "" {
		return nil
	}
	var parts []string
	start := 0
	for i := 1; i < len(s); i++ {
		if s[i] == ' ' && s[i-1] != ' ' {
			parts = append(parts, s[start:i])
			start = i
		}
	}
	parts = append(parts, s[start:])
	if len(parts) == 1 {
		r := []rune(s)
		if len(r) >= 2 {
			return []string{string(r[:len(r)/2]), string(r[len(r)/2:])}
		}
	}
	return parts
}

// splitArgs cuts tool arguments into two fragments (byte-wise, as real
// servers do).
func splitArgs(s string) []string {
	if len(s) < 2 {
		return []string{s}
	}
	return []string{s[:len(s)/2], s[len(s)/2:]}
}
