package llm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds on an OpenAI-compatible endpoint's answers, which are untrusted: a
// broken or hostile server costs at most this much memory, and a larger
// answer is an ErrBadResponse. Time is bounded by Config.Timeout.
const (
	// MaxResponseBytes bounds a non-streamed answer's body, one line or
	// one event of a streamed answer, and the text and tool arguments a
	// streamed answer accumulates: 8 MiB, some two million tokens, far
	// beyond any model's output limit.
	MaxResponseBytes = 8 << 20
	// MaxToolCalls bounds the tool calls of one answer, and the index a
	// streamed tool-call fragment may name.
	MaxToolCalls = 256
)

// OpenAI is a Provider for any OpenAI-compatible Chat Completions endpoint:
// OpenAI, Ollama, vLLM, llama.cpp's server, OpenRouter. It speaks the one
// call Talon needs, POST {base}/chat/completions, streamed or not, with
// net/http and encoding/json. It is safe for concurrent use once
// constructed.
type OpenAI struct {
	// Sleep waits between retries; nil means a real timer. Tests replace it.
	// Set it before the first call.
	Sleep SleepFunc
	// Now is the clock used to read HTTP-date Retry-After headers; nil means
	// time.Now.
	Now func() time.Time

	call     caller
	client   *http.Client
	endpoint string // {base}/chat/completions
	// completionTokens sends max_completion_tokens (api.openai.com) instead
	// of the max_tokens other servers understand.
	completionTokens bool
}

var _ Provider = (*OpenAI)(nil)

// NewOpenAI returns a provider for the OpenAI-compatible endpoint in cfg.
// It reads nothing from the environment. Redirects are followed only
// within the base URL's origin (scheme, host and port), so the prompt and
// the key never go elsewhere.
func NewOpenAI(cfg Config) (*OpenAI, error) {
	cfg, err := cfg.withDefaults(DefaultOpenAIBaseURL)
	if err != nil {
		return nil, fmt.Errorf("llm openai: config: %w", err)
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("llm openai: config: %w", err) // withDefaults parsed it already
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
		base.RawPath = ""
	}
	// As a relative reference, like the official client: the base's query
	// and fragment are not sent.
	endpoint := base.ResolveReference(&url.URL{Path: "chat/completions"})

	client := *cfg.HTTPClient
	next := client.CheckRedirect
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if !sameOrigin(req.URL, endpoint) {
			return http.ErrUseLastResponse
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &OpenAI{
		call:             caller{provider: "openai", keyHint: "llm.api_key / OPENAI_API_KEY", cfg: cfg},
		client:           &client,
		endpoint:         endpoint.String(),
		completionTokens: strings.EqualFold(base.Hostname(), "api.openai.com"),
	}, nil
}

// sameOrigin reports whether a and b have the same scheme, host and port.
func sameOrigin(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// Name returns "openai".
func (o *OpenAI) Name() string { return "openai" }

// Model returns the configured model name.
func (o *OpenAI) Model() string { return o.call.cfg.Model }

// Complete sends req to the Chat Completions endpoint, streaming when
// req.OnDelta is set, and retries rate limits, server errors and connection
// failures. A stream that fails after text reached OnDelta is not retried.
// OnDelta only ever receives valid UTF-8. Every error is an *Error.
func (o *OpenAI) Complete(ctx context.Context, req Request) (*Response, error) {
	body, f := o.body(req)
	if f != nil {
		return nil, o.call.finalError(f)
	}
	return o.call.do(ctx, o.Sleep, func(ctx context.Context) (*Response, *failure) {
		res, f := o.post(ctx, body, req.OnDelta != nil)
		if f != nil {
			return nil, f
		}
		defer res.Body.Close()
		var resp *Response
		if req.OnDelta != nil {
			resp, f = decodeOpenAIStream(res, req.OnDelta)
		} else {
			resp, f = decodeOpenAIBody(res)
		}
		if f != nil && ctx.Err() != nil {
			// The attempt's deadline or the caller's cancellation ended the
			// body, whatever error reading it reported.
			return nil, contextFailure(ctx.Err())
		}
		return resp, f
	})
}

func (o *OpenAI) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// The request body of POST /chat/completions, as much of it as Talon uses.
type (
	chatRequest struct {
		Model               string         `json:"model"`
		Messages            []chatMessage  `json:"messages"`
		Tools               []chatTool     `json:"tools,omitempty"`
		ToolChoice          *chatToolPick  `json:"tool_choice,omitempty"`
		MaxTokens           int            `json:"max_tokens,omitempty"`
		MaxCompletionTokens int            `json:"max_completion_tokens,omitempty"`
		Stream              bool           `json:"stream,omitempty"`
		StreamOptions       *streamOptions `json:"stream_options,omitempty"`
	}
	chatMessage struct {
		Role string `json:"role"`
		// Content is a *string, or for a user message with parts a
		// []contentPart; it is omitted only for an assistant message that
		// has tool calls and no text.
		Content    any            `json:"content,omitempty"`
		ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
		ToolCallID string         `json:"tool_call_id,omitempty"`
	}
	contentPart struct {
		Type     string    `json:"type"` // "text" or "image_url"
		Text     string    `json:"text,omitempty"`
		ImageURL *imageURL `json:"image_url,omitempty"`
	}
	imageURL struct {
		// URL is a data: URL of the image's bytes.
		URL string `json:"url"`
	}
	chatToolCall struct {
		ID       string       `json:"id"`
		Type     string       `json:"type"` // "function"
		Function chatFunction `json:"function"`
	}
	chatFunction struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	chatTool struct {
		Type     string          `json:"type"` // "function"
		Function chatFunctionDef `json:"function"`
	}
	chatFunctionDef struct {
		Name        string         `json:"name"`
		Description string         `json:"description,omitempty"`
		Parameters  map[string]any `json:"parameters"`
	}
	chatToolPick struct {
		Type     string       `json:"type"` // "function"
		Function chatToolName `json:"function"`
	}
	chatToolName struct {
		Name string `json:"name"`
	}
	streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
)

// body encodes req as the JSON request body; streaming when req.OnDelta is
// set, with the usage asked for in a final chunk.
func (o *OpenAI) body(req Request) ([]byte, *failure) {
	p := chatRequest{Model: o.call.cfg.Model}
	text := func(s string) *string { return &s }
	if req.System != "" {
		p.Messages = append(p.Messages, chatMessage{Role: "system", Content: text(req.System)})
	}
	for i, m := range req.Messages {
		switch m.Role {
		case RoleUser:
			if len(m.Parts) == 0 {
				p.Messages = append(p.Messages, chatMessage{Role: "user", Content: text(m.Content)})
				continue
			}
			parts, f := openAIParts(i, m)
			if f != nil {
				return nil, f
			}
			p.Messages = append(p.Messages, chatMessage{Role: "user", Content: parts})
		case RoleAssistant:
			a := chatMessage{Role: "assistant"}
			if m.Content != "" || len(m.ToolCalls) == 0 {
				a.Content = text(m.Content)
			}
			for _, tc := range m.ToolCalls {
				a.ToolCalls = append(a.ToolCalls, chatToolCall{ID: tc.ID, Type: "function",
					Function: chatFunction{Name: tc.Name, Arguments: tc.Arguments}})
			}
			p.Messages = append(p.Messages, a)
		case RoleTool:
			p.Messages = append(p.Messages, chatMessage{Role: "tool", Content: text(m.Content), ToolCallID: m.ToolCallID})
		default:
			return nil, invalidRequest("message %d has unknown role %q", i, m.Role)
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.Parameters)
		if err != nil {
			return nil, invalidRequest("tool %q: %w", t.Name, err)
		}
		p.Tools = append(p.Tools, chatTool{Type: "function",
			Function: chatFunctionDef{Name: t.Name, Description: t.Description, Parameters: schema}})
	}
	if req.ToolChoice != "" {
		if f := checkToolChoice(req); f != nil {
			return nil, f
		}
		p.ToolChoice = &chatToolPick{Type: "function", Function: chatToolName{Name: req.ToolChoice}}
	}
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = o.call.cfg.MaxTokens
	}
	if maxTokens > 0 {
		if o.completionTokens {
			p.MaxCompletionTokens = maxTokens
		} else {
			p.MaxTokens = maxTokens
		}
	}
	if req.OnDelta != nil {
		p.Stream = true
		p.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, invalidRequest("encode the request: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// openAIParts is user message i (m, with parts) as content parts: its text,
// then each part, images as data: URLs.
func openAIParts(i int, m Message) ([]contentPart, *failure) {
	var parts []contentPart
	if m.Content != "" {
		parts = append(parts, contentPart{Type: "text", Text: m.Content})
	}
	for j, pt := range m.Parts {
		switch pt.Kind {
		case PartText:
			parts = append(parts, contentPart{Type: "text", Text: pt.Text})
		case PartImage:
			if len(pt.Data) == 0 {
				return nil, invalidRequest("message %d: image %d has no data", i, j)
			}
			parts = append(parts, contentPart{Type: "image_url", ImageURL: &imageURL{URL: dataURL(pt.MediaType, pt.Data)}})
		default:
			return nil, invalidRequest("message %d: part %d has unknown kind %q", i, j, pt.Kind)
		}
	}
	if len(parts) == 0 {
		parts = append(parts, contentPart{Type: "text", Text: ""})
	}
	return parts, nil
}

// dataURL is data as a base64 data: URL of media type mt.
func dataURL(mt string, data []byte) string {
	const prefix = ";base64,"
	b := make([]byte, 0, len("data:")+len(mt)+len(prefix)+base64.StdEncoding.EncodedLen(len(data)))
	b = append(b, "data:"...)
	b = append(b, mt...)
	b = append(b, prefix...)
	b = base64.StdEncoding.AppendEncode(b, data)
	return string(b)
}

// post sends one attempt and returns the response of a 2xx status, whose
// body the caller closes; any other status is classified from its headers
// and the first 64 KiB of its body.
func (o *OpenAI) post(ctx context.Context, body []byte, stream bool) (*http.Response, *failure) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, o.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, invalidRequest("build the request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if stream {
		hr.Header.Set("Accept", "text/event-stream")
	} else {
		hr.Header.Set("Accept", "application/json")
	}
	hr.Header.Set("User-Agent", "talon")
	if k := o.call.cfg.APIKey; k != "" {
		hr.Header.Set("Authorization", "Bearer "+k)
	}
	for k, v := range o.call.cfg.Headers {
		hr.Header.Set(k, v)
	}
	res, err := o.client.Do(hr)
	if err != nil {
		return nil, classify(err, nil, o.now())
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return nil, statusFailure(res.StatusCode, res.Header, b, o.now())
	}
	return res, nil
}

// The parts of an answer Talon reads. Fields of scalar types tolerate what
// OpenAI-compatible servers send instead (see wireString, wireInt,
// wireText, wireArgs); a structure of the wrong shape is a bad response.
type (
	wireCompletion struct {
		Choices []struct {
			Message struct {
				Content   wireText       `json:"content"`
				ToolCalls []wireToolCall `json:"tool_calls"`
			} `json:"message"`
			FinishReason wireString `json:"finish_reason"`
		} `json:"choices"`
		Usage wireUsage `json:"usage"`
	}
	wireChunk struct {
		Choices []struct {
			Index wireInt `json:"index"`
			Delta struct {
				Content   wireText       `json:"content"`
				ToolCalls []wireToolCall `json:"tool_calls"`
			} `json:"delta"`
			FinishReason wireString `json:"finish_reason"`
		} `json:"choices"`
		Usage wireUsage       `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	wireToolCall struct {
		// Index places a streamed fragment; servers that omit it send 0.
		Index    wireInt    `json:"index"`
		ID       wireString `json:"id"`
		Function struct {
			Name      wireString `json:"name"`
			Arguments wireArgs   `json:"arguments"`
		} `json:"function"`
	}
)

// decodeOpenAIBody reads a non-streamed answer of at most MaxResponseBytes.
func decodeOpenAIBody(res *http.Response) (*Response, *failure) {
	raw, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, classify(err, res, time.Time{})
	}
	if len(raw) > MaxResponseBytes {
		return nil, tooLarge(res, "the answer")
	}
	if !utf8.Valid(raw) {
		return nil, &failure{kind: ErrBadResponse, status: res.StatusCode, err: errors.New("the answer is not valid UTF-8")}
	}
	var cc wireCompletion
	if !jsonObject(raw) || json.Unmarshal(raw, &cc) != nil || len(cc.Choices) == 0 {
		return nil, badBody(res)
	}
	choice := cc.Choices[0]
	if len(choice.Message.ToolCalls) > MaxToolCalls {
		return nil, &failure{kind: ErrBadResponse, status: res.StatusCode, err: fmt.Errorf("the answer has more than %d tool calls", MaxToolCalls)}
	}
	msg := Message{Role: RoleAssistant, Content: string(choice.Message.Content)}
	for _, tc := range choice.Message.ToolCalls {
		msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: string(tc.ID), Name: string(tc.Function.Name), Arguments: string(tc.Function.Arguments)})
	}
	return &Response{
		Message:    msg,
		Usage:      cc.Usage.usage(),
		StopReason: openAIStop(string(choice.FinishReason), len(msg.ToolCalls) > 0),
	}, nil
}

// openAIStream accumulates a streamed answer: text as it comes, tool-call
// fragments by index, the finish reason and the usage.
type openAIStream struct {
	onDelta func(string)

	text    strings.Builder
	calls   []streamedCall
	slots   map[int64]int // wire index → position in calls
	usage   Usage
	finish  string
	chunks  int
	size    int  // bytes of text and arguments so far
	emitted bool // text reached onDelta: the attempt cannot be retried
}

// decodeOpenAIStream reads a streamed answer from res's body, passing text
// to onDelta as it comes. A failure after text was passed on is never
// retryable.
func decodeOpenAIStream(res *http.Response, onDelta func(string)) (*Response, *failure) {
	st := &openAIStream{onDelta: onDelta, slots: map[int64]int{}}
	resp, f := st.read(res)
	if f != nil {
		if f.status == 0 {
			f.status = res.StatusCode
		}
		if st.emitted {
			f.retryable = false
		}
	}
	return resp, f
}

func (st *openAIStream) read(res *http.Response) (*Response, *failure) {
	events := newSSEReader(res.Body, MaxResponseBytes)
	for {
		ev, err := events.next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, errEventTooLarge) {
			return nil, tooLarge(res, "an event of the stream")
		}
		if err != nil {
			return nil, classify(err, res, time.Time{})
		}
		if bytes.HasPrefix(bytes.TrimLeft(ev.data, " \t"), []byte("[DONE]")) {
			break
		}
		if f := st.event(ev); f != nil {
			return nil, f
		}
	}
	switch {
	case st.chunks == 0:
		return nil, badBody(res)
	case st.finish == "":
		return nil, &failure{kind: ErrServer, retryable: true, err: errors.New("the stream ended before the answer was complete")}
	}
	msg := Message{Role: RoleAssistant, Content: st.text.String()}
	for _, c := range st.calls {
		msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: c.id, Name: c.name, Arguments: string(c.args)})
	}
	return &Response{Message: msg, Usage: st.usage, StopReason: openAIStop(st.finish, len(st.calls) > 0)}, nil
}

// event applies one event of the stream.
func (st *openAIStream) event(ev sseEvent) *failure {
	if ev.typ == "error" {
		return streamError(ev.data)
	}
	if !utf8.Valid(ev.data) {
		return &failure{kind: ErrBadResponse, err: errors.New("the stream sent an event that is not valid UTF-8")}
	}
	var ch wireChunk
	if !jsonObject(ev.data) || json.Unmarshal(ev.data, &ch) != nil {
		return &failure{kind: ErrBadResponse, err: errors.New("the stream sent an event that is not a JSON chunk")}
	}
	if len(ch.Error) > 0 && string(ch.Error) != "null" {
		return streamError(ev.data)
	}
	st.chunks++
	if u := ch.Usage.usage(); u.InputTokens > 0 || u.OutputTokens > 0 {
		st.usage = u
	}
	for _, c := range ch.Choices {
		if c.Index != 0 {
			continue
		}
		if d := string(c.Delta.Content); d != "" {
			if f := st.grow(len(d)); f != nil {
				return f
			}
			st.text.WriteString(d)
			st.emitted = true
			st.onDelta(d)
		}
		for _, tc := range c.Delta.ToolCalls {
			if f := st.toolCall(tc); f != nil {
				return f
			}
		}
		if c.FinishReason != "" {
			st.finish = string(c.FinishReason)
		}
	}
	return nil
}

// toolCall applies one tool-call fragment.
func (st *openAIStream) toolCall(tc wireToolCall) *failure {
	idx := int64(tc.Index)
	if idx < 0 || idx >= MaxToolCalls {
		return &failure{kind: ErrBadResponse, err: fmt.Errorf("the stream sent a tool call index outside 0..%d", MaxToolCalls-1)}
	}
	id := string(tc.ID)
	pos, ok := st.slots[idx]
	if !ok || (id != "" && st.calls[pos].id != "" && st.calls[pos].id != id) {
		// A new call; servers that omit the index reuse 0 for every call,
		// so a new id also starts a new call.
		if len(st.calls) >= MaxToolCalls {
			return &failure{kind: ErrBadResponse, err: fmt.Errorf("the stream sent more than %d tool calls", MaxToolCalls)}
		}
		st.calls = append(st.calls, streamedCall{})
		pos = len(st.calls) - 1
		st.slots[idx] = pos
	}
	c := &st.calls[pos]
	if f := st.grow(len(id) + len(tc.Function.Name) + len(tc.Function.Arguments)); f != nil {
		return f
	}
	if id != "" {
		c.id = id
	}
	if tc.Function.Name != "" {
		c.name = string(tc.Function.Name)
	}
	c.args = append(c.args, tc.Function.Arguments...)
	return nil
}

// streamedCall is a tool call being assembled from fragments; its
// arguments grow in amortised linear time however finely they are cut.
type streamedCall struct {
	id, name string
	args     []byte
}

// grow counts n more bytes of the answer against MaxResponseBytes.
func (st *openAIStream) grow(n int) *failure {
	st.size += n
	if st.size > MaxResponseBytes {
		return &failure{kind: ErrBadResponse, err: fmt.Errorf("the streamed answer exceeds %d MiB", MaxResponseBytes>>20)}
	}
	return nil
}

// streamError is an error event inside the stream: the provider failed
// mid-answer. Only its code or type, if it is an identifier, is kept.
func streamError(data []byte) *failure {
	msg := "the stream reported an error"
	info := parseErrorBody(data)
	for _, id := range []string{identifier(info.code), identifier(info.typ)} {
		if id != "" {
			msg += " (" + id + ")"
			break
		}
	}
	return &failure{kind: ErrServer, retryable: true, err: errors.New(msg)}
}

// tooLarge reports an answer past MaxResponseBytes.
func tooLarge(res *http.Response, what string) *failure {
	return &failure{kind: ErrBadResponse, status: res.StatusCode, err: fmt.Errorf("%s exceeds %d MiB", what, MaxResponseBytes>>20)}
}

// jsonObject reports whether b holds a JSON object (rather than another
// JSON value, which json.Unmarshal would also accept into a struct).
func jsonObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// openAIStop normalises a finish_reason.
func openAIStop(reason string, toolCalls bool) string {
	switch reason {
	case "tool_calls", "function_call":
		return "tool_calls"
	case "stop", "":
		if toolCalls {
			return "tool_calls" // Ollama reports "stop" with tool calls
		}
		return "stop"
	}
	return reason
}

// wireString is a string field. null reads as "", a number or boolean as
// its literal text, an object or array as "".
type wireString string

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (s *wireString) UnmarshalJSON(b []byte) error {
	*s = ""
	switch {
	case len(b) == 0 || b[0] == '{' || b[0] == '[' || string(b) == "null":
	case b[0] == '"':
		var v string
		if json.Unmarshal(b, &v) == nil {
			*s = wireString(v)
		}
	default:
		*s = wireString(b)
	}
	return nil
}

// wireText is message content: a string, null, or an array of content
// parts whose text is joined.
type wireText string

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (t *wireText) UnmarshalJSON(b []byte) error {
	*t = ""
	if len(b) > 0 && b[0] == '[' {
		var parts []struct {
			Text wireString `json:"text"`
		}
		if json.Unmarshal(b, &parts) == nil {
			var sb strings.Builder
			for _, p := range parts {
				sb.WriteString(string(p.Text))
			}
			*t = wireText(sb.String())
		}
		return nil
	}
	var s wireString
	_ = s.UnmarshalJSON(b)
	*t = wireText(s)
	return nil
}

// wireArgs is a tool call's arguments: the JSON text in a string, or, from
// servers that send the arguments as an object, that object's JSON text.
type wireArgs string

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (a *wireArgs) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		*a = wireArgs(b)
		return nil
	}
	var s wireString
	_ = s.UnmarshalJSON(b)
	*a = wireArgs(s)
	return nil
}

// wireInt is an integer field: a JSON number (fractions dropped, clamped to
// ±2^53) or a string holding one; anything else reads as 0.
type wireInt int64

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (n *wireInt) UnmarshalJSON(b []byte) error {
	*n = 0
	if len(b) > 0 && b[0] == '"' {
		var s string
		if json.Unmarshal(b, &s) != nil {
			return nil
		}
		b = []byte(strings.TrimSpace(s))
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || math.IsNaN(f) {
		return nil
	}
	const limit = 1 << 53
	*n = wireInt(max(-limit, min(limit, math.Trunc(f))))
	return nil
}

// wireUsage is the token usage of an answer; anything but an object reads
// as no usage.
type wireUsage struct {
	PromptTokens     wireInt
	CompletionTokens wireInt
}

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (u *wireUsage) UnmarshalJSON(b []byte) error {
	*u = wireUsage{}
	var v struct {
		PromptTokens     wireInt `json:"prompt_tokens"`
		CompletionTokens wireInt `json:"completion_tokens"`
	}
	if json.Unmarshal(b, &v) == nil {
		u.PromptTokens, u.CompletionTokens = v.PromptTokens, v.CompletionTokens
	}
	return nil
}

func (u wireUsage) usage() Usage {
	count := func(n wireInt) int { return int(max(0, min(n, math.MaxInt32))) }
	return Usage{InputTokens: count(u.PromptTokens), OutputTokens: count(u.CompletionTokens)}
}
