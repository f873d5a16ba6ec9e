package llmtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/talonhq/talon/agent/llm"
)

// imagesOf reads the image parts of an OpenAI content array: data: URLs
// become PartImage with their bytes; any other URL is kept in Ref.
func imagesOf(raw json.RawMessage) []llm.Part {
	var parts []struct {
		Type     string `json:"type"`
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &parts) != nil {
		return nil
	}
	var out []llm.Part
	for _, p := range parts {
		if p.Type != "image_url" {
			continue
		}
		part := llm.Part{Kind: llm.PartImage, Ref: p.ImageURL.URL}
		if rest, ok := strings.CutPrefix(p.ImageURL.URL, "data:"); ok {
			mt, data, _ := strings.Cut(rest, ";base64,")
			if b, err := base64.StdEncoding.DecodeString(data); err == nil {
				part = llm.Part{Kind: llm.PartImage, MediaType: mt, Data: b}
			}
		}
		out = append(out, part)
	}
	return out
}

// textOf reads a content field that is either a string or an array of
// blocks with text.
func textOf(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return b.String()
}

func joinSystem(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n\n" + b
}

func parseOpenAI(raw []byte) (Request, error) {
	var body struct {
		Model    string `json:"model"`
		Messages []struct {
			Role      string          `json:"role"`
			Content   json.RawMessage `json:"content"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
			ToolCallID string `json:"tool_call_id"`
			Name       string `json:"name"`
		} `json:"messages"`
		Tools []struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tools"`
		// ToolChoice is "auto", "none", "required" or an object naming a
		// function.
		ToolChoice          json.RawMessage `json:"tool_choice"`
		Stream              bool            `json:"stream"`
		MaxTokens           int             `json:"max_tokens"`
		MaxCompletionTokens int             `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return Request{}, err
	}
	req := Request{Model: body.Model, Stream: body.Stream, MaxTokens: max(body.MaxTokens, body.MaxCompletionTokens)}
	for _, m := range body.Messages {
		text := textOf(m.Content)
		switch m.Role {
		case "system", "developer":
			req.System = joinSystem(req.System, text)
		case "tool":
			req.Messages = append(req.Messages, llm.Message{Role: llm.RoleTool, Content: text, ToolCallID: m.ToolCallID, ToolName: m.Name})
		case "assistant":
			msg := llm.Message{Role: llm.RoleAssistant, Content: text}
			for _, tc := range m.ToolCalls {
				msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
			}
			req.Messages = append(req.Messages, msg)
		default:
			req.Messages = append(req.Messages, llm.Message{Role: llm.Role(m.Role), Content: text, Parts: imagesOf(m.Content)})
		}
	}
	for _, t := range body.Tools {
		req.Tools = append(req.Tools, t.Function.Name)
	}
	var pick struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(body.ToolChoice, &pick) == nil && pick.Type == "function" {
		req.ToolChoice = pick.Function.Name
	}
	return req, nil
}

func parseAnthropic(raw []byte) (Request, error) {
	var body struct {
		Model    string          `json:"model"`
		System   json.RawMessage `json:"system"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
		ToolChoice struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"tool_choice"`
		Stream    bool `json:"stream"`
		MaxTokens int  `json:"max_tokens"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return Request{}, err
	}
	req := Request{Model: body.Model, System: textOf(body.System), Stream: body.Stream, MaxTokens: body.MaxTokens}
	for _, m := range body.Messages {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			req.Messages = append(req.Messages, llm.Message{Role: llm.Role(m.Role), Content: s})
			continue
		}
		var blocks []struct {
			Type      string          `json:"type"`
			Text      string          `json:"text"`
			ID        string          `json:"id"`
			Name      string          `json:"name"`
			Input     json.RawMessage `json:"input"`
			ToolUseID string          `json:"tool_use_id"`
			Content   json.RawMessage `json:"content"`
			IsError   bool            `json:"is_error"`
			Source    struct {
				Type      string `json:"type"`
				MediaType string `json:"media_type"`
				Data      string `json:"data"`
			} `json:"source"`
		}
		if err := json.Unmarshal(m.Content, &blocks); err != nil {
			return Request{}, err
		}
		msg := llm.Message{Role: llm.Role(m.Role)}
		var text strings.Builder
		for _, b := range blocks {
			switch b.Type {
			case "text":
				text.WriteString(b.Text)
			case "tool_use":
				args := string(b.Input)
				var c bytes.Buffer
				if json.Compact(&c, b.Input) == nil {
					args = c.String()
				}
				msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: b.ID, Name: b.Name, Arguments: args})
			case "image":
				part := llm.Part{Kind: llm.PartImage, MediaType: b.Source.MediaType}
				part.Data, _ = base64.StdEncoding.DecodeString(b.Source.Data)
				msg.Parts = append(msg.Parts, part)
			case "tool_result":
				req.Messages = append(req.Messages, llm.Message{Role: llm.RoleTool, Content: textOf(b.Content), ToolCallID: b.ToolUseID, IsError: b.IsError})
			}
		}
		msg.Content = text.String()
		if msg.Content != "" || len(msg.ToolCalls) > 0 || len(msg.Parts) > 0 {
			req.Messages = append(req.Messages, msg)
		}
	}
	for _, t := range body.Tools {
		req.Tools = append(req.Tools, t.Name)
	}
	if body.ToolChoice.Type == "tool" {
		req.ToolChoice = body.ToolChoice.Name
	}
	return req, nil
}

// writeError answers status with an error body of the provider's shape.
func writeError(w http.ResponseWriter, provider string, status int, model string) {
	var typ, code, msg string
	if provider == Anthropic {
		switch {
		case status == 400:
			typ, msg = "invalid_request_error", "invalid request"
		case status == 401:
			typ, msg = "authentication_error", "invalid x-api-key"
		case status == 403:
			typ, msg = "permission_error", "permission denied"
		case status == 404:
			typ, msg = "not_found_error", "model: "+model
		case status == 413:
			typ, msg = "request_too_large", "request too large"
		case status == 429:
			typ, msg = "rate_limit_error", "rate limited"
		case status == 529:
			typ, msg = "overloaded_error", "Overloaded"
		case status >= 500:
			typ, msg = "api_error", "Internal server error"
		default:
			typ, msg = "invalid_request_error", http.StatusText(status)
		}
		writeJSON(w, status, map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
		return
	}
	switch {
	case status == 401:
		typ, code, msg = "invalid_request_error", "invalid_api_key", "Incorrect API key provided."
	case status == 403:
		typ, code, msg = "permission_error", "", "Permission denied."
	case status == 404:
		typ, code, msg = "invalid_request_error", "model_not_found", fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model)
	case status == 429:
		typ, code, msg = "requests", "rate_limit_exceeded", "Rate limit reached."
	case status >= 500:
		typ, msg = "server_error", "The server had an error while processing your request."
	default:
		typ, msg = "invalid_request_error", http.StatusText(status)
	}
	var c any
	if code != "" {
		c = code
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": c}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// answer writes a scripted Response in one provider's wire format.
type answer struct {
	id          int
	model       string
	resp        Response
	inputTokens int
}

func (a answer) outputTokens() int {
	n := llm.EstimateTokens(a.resp.Text)
	for _, tc := range a.resp.ToolCalls {
		n += llm.EstimateTokens(tc.Name + tc.Arguments)
	}
	return max(n, 1)
}

func (a answer) stop() string {
	switch {
	case a.resp.StopReason != "":
		return a.resp.StopReason
	case len(a.resp.ToolCalls) > 0:
		return "tool_calls"
	}
	return "stop"
}

func (a answer) anthropicStop() string {
	switch s := a.stop(); s {
	case "stop":
		return "end_turn"
	case "tool_calls":
		return "tool_use"
	case "length":
		return "max_tokens"
	default:
		return s
	}
}

// writeBody writes a JSON answer, or half of it and drops the connection
// when the response says Truncate.
func (a answer) writeBody(w http.ResponseWriter, v any) {
	if !a.resp.Truncate {
		writeJSON(w, http.StatusOK, v)
		return
	}
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b[:len(b)/2])
	drop(w)
}

// drop flushes what was written and closes the connection without ending
// the response, so the client sees a broken body.
func drop(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	conn, _, err := rc.Hijack()
	if err != nil {
		return
	}
	_ = conn.Close()
}

func (a answer) openAIJSON(w http.ResponseWriter) {
	msg := map[string]any{"role": "assistant", "content": nil}
	if a.resp.Text != "" {
		msg["content"] = a.resp.Text
	}
	if len(a.resp.ToolCalls) > 0 {
		var calls []any
		for _, tc := range a.resp.ToolCalls {
			calls = append(calls, map[string]any{"id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Name, "arguments": tc.Arguments}})
		}
		msg["tool_calls"] = calls
	}
	out := a.outputTokens()
	a.writeBody(w, map[string]any{
		"id": fmt.Sprintf("chatcmpl-%d", a.id), "object": "chat.completion", "created": time.Now().Unix(), "model": a.model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "logprobs": nil, "finish_reason": a.stop()}},
		"usage":   map[string]any{"prompt_tokens": a.inputTokens, "completion_tokens": out, "total_tokens": a.inputTokens + out},
	})
}

// sse writes server-sent events, flushing each one.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSE(w http.ResponseWriter) sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return sse{w: w, rc: http.NewResponseController(w)}
}

func (s sse) send(event string, v any) error {
	var b []byte
	if raw, ok := v.(string); ok {
		b = []byte(raw)
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	if event != "" {
		fmt.Fprintf(&buf, "event: %s\n", event)
	}
	fmt.Fprintf(&buf, "data: %s\n\n", b)
	if _, err := s.w.Write(buf.Bytes()); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (a answer) openAIStream(w http.ResponseWriter, usage bool) {
	s := newSSE(w)
	base := map[string]any{"id": fmt.Sprintf("chatcmpl-%d", a.id), "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": a.model}
	chunk := func(delta map[string]any, finish any) map[string]any {
		c := map[string]any{"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}}
		for k, v := range base {
			c[k] = v
		}
		return c
	}
	if s.send("", chunk(map[string]any{"role": "assistant", "content": ""}, nil)) != nil {
		return
	}
	for _, p := range splitText(a.resp.Text) {
		if s.send("", chunk(map[string]any{"content": p}, nil)) != nil {
			return
		}
	}
	if a.resp.Truncate {
		drop(w)
		return
	}
	for i, tc := range a.resp.ToolCalls {
		first := map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Name, "arguments": ""}}}}
		if s.send("", chunk(first, nil)) != nil {
			return
		}
		for _, frag := range splitArgs(tc.Arguments) {
			d := map[string]any{"tool_calls": []any{map[string]any{"index": i, "function": map[string]any{"arguments": frag}}}}
			if s.send("", chunk(d, nil)) != nil {
				return
			}
		}
	}
	if s.send("", chunk(map[string]any{}, a.stop())) != nil {
		return
	}
	if usage {
		out := a.outputTokens()
		u := map[string]any{"choices": []any{}, "usage": map[string]any{"prompt_tokens": a.inputTokens, "completion_tokens": out, "total_tokens": a.inputTokens + out}}
		for k, v := range base {
			u[k] = v
		}
		if s.send("", u) != nil {
			return
		}
	}
	_ = s.send("", "[DONE]")
}

func (a answer) anthropicJSON(w http.ResponseWriter) {
	var content []any
	if a.resp.Text != "" {
		content = append(content, map[string]any{"type": "text", "text": a.resp.Text})
	}
	for _, tc := range a.resp.ToolCalls {
		var input any = json.RawMessage(tc.Arguments)
		if !json.Valid([]byte(tc.Arguments)) {
			input = tc.Arguments
		}
		content = append(content, map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Name, "input": input})
	}
	if content == nil {
		content = []any{}
	}
	a.writeBody(w, map[string]any{
		"id": fmt.Sprintf("msg_%d", a.id), "type": "message", "role": "assistant", "model": a.model,
		"content": content, "stop_reason": a.anthropicStop(), "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": a.inputTokens, "output_tokens": a.outputTokens()},
	})
}

// event is one server-sent event of Anthropic's stream.
type event struct {
	name string
	data any
}

func (a answer) anthropicStream(w http.ResponseWriter) {
	s := newSSE(w)
	events := []event{
		{"message_start", map[string]any{"type": "message_start", "message": map[string]any{
			"id": fmt.Sprintf("msg_%d", a.id), "type": "message", "role": "assistant", "model": a.model,
			"content": []any{}, "stop_reason": nil, "stop_sequence": nil,
			"usage": map[string]any{"input_tokens": a.inputTokens, "output_tokens": 1},
		}}},
		{"ping", map[string]any{"type": "ping"}},
	}
	send := func() bool {
		for _, e := range events {
			if s.send(e.name, e.data) != nil {
				return false
			}
		}
		events = events[:0]
		return true
	}
	index := 0
	if a.resp.Text != "" {
		events = append(events, event{"content_block_start", map[string]any{"type": "content_block_start", "index": index, "content_block": map[string]any{"type": "text", "text": ""}}})
		for _, p := range splitText(a.resp.Text) {
			events = append(events, event{"content_block_delta", map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "text_delta", "text": p}}})
		}
		if !send() {
			return
		}
		if a.resp.Truncate {
			drop(w)
			return
		}
		events = append(events, event{"content_block_stop", map[string]any{"type": "content_block_stop", "index": index}})
		index++
	}
	if a.resp.Truncate {
		_ = send()
		drop(w)
		return
	}
	for _, tc := range a.resp.ToolCalls {
		events = append(events, event{"content_block_start", map[string]any{"type": "content_block_start", "index": index, "content_block": map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Name, "input": map[string]any{}}}})
		for _, frag := range splitArgs(tc.Arguments) {
			events = append(events, event{"content_block_delta", map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "input_json_delta", "partial_json": frag}}})
		}
		events = append(events, event{"content_block_stop", map[string]any{"type": "content_block_stop", "index": index}})
		index++
	}
	events = append(events,
		event{"message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": a.anthropicStop(), "stop_sequence": nil}, "usage": map[string]any{"output_tokens": a.outputTokens()}}},
		event{"message_stop", map[string]any{"type": "message_stop"}},
	)
	_ = send()
}
