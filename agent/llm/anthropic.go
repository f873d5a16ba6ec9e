package llm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// Anthropic is a Provider for Anthropic's Messages API. It is safe for
// concurrent use once constructed.
type Anthropic struct {
	// Sleep waits between retries; nil means a real timer. Tests replace it.
	// Set it before the first call.
	Sleep SleepFunc
	// Now is the clock used to read HTTP-date Retry-After headers; nil means
	// time.Now.
	Now func() time.Time

	call     caller
	messages anthropic.MessageService
}

var _ Provider = (*Anthropic)(nil)

// NewAnthropic returns a provider for the Messages API in cfg. APIKey is
// required. It reads nothing from the environment: the SDK's own
// ANTHROPIC_* defaults, profiles and retries are not used.
func NewAnthropic(cfg Config) (*Anthropic, error) {
	cfg, err := cfg.withDefaults(DefaultAnthropicBaseURL)
	if err == nil && cfg.APIKey == "" {
		err = errors.New("api key is required")
	}
	if err != nil {
		return nil, fmt.Errorf("llm anthropic: config: %w", err)
	}
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(strings.TrimSuffix(cfg.BaseURL, "/") + "/"),
		option.WithHTTPClient(cfg.HTTPClient),
		option.WithMaxRetries(0),
		option.WithAPIKey(cfg.APIKey),
	}
	for k, v := range cfg.Headers {
		opts = append(opts, option.WithHeader(k, v))
	}
	client := anthropic.NewClient(opts...)
	return &Anthropic{
		call:     caller{provider: "anthropic", keyHint: "llm.api_key / ANTHROPIC_API_KEY", cfg: cfg},
		messages: client.Messages,
	}, nil
}

// Name returns "anthropic".
func (a *Anthropic) Name() string { return "anthropic" }

// Model returns the configured model name.
func (a *Anthropic) Model() string { return a.call.cfg.Model }

// Complete sends req to the Messages API, streaming when req.OnDelta is set,
// and retries rate limits, overload, server errors and connection failures.
// A stream that fails after text reached OnDelta is not retried. Every error
// is an *Error.
func (a *Anthropic) Complete(ctx context.Context, req Request) (*Response, error) {
	params, f := a.params(req)
	if f != nil {
		return nil, a.call.finalError(f)
	}
	return a.call.do(ctx, a.Sleep, func(ctx context.Context) (*Response, *failure) {
		if req.OnDelta != nil {
			return a.stream(ctx, params, req.OnDelta)
		}
		return a.once(ctx, params)
	})
}

func (a *Anthropic) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// params maps req to the wire request. Tool results become user messages
// of tool_result blocks, consecutive results sharing one message; stored
// tool arguments that are not a JSON object are sent as {} so that the
// history stays sendable.
func (a *Anthropic) params(req Request) (anthropic.MessageNewParams, *failure) {
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = a.call.cfg.MaxTokens
	}
	if maxTokens == 0 {
		maxTokens = DefaultAnthropicMaxTokens
	}
	p := anthropic.MessageNewParams{Model: anthropic.Model(a.call.cfg.Model), MaxTokens: int64(maxTokens)}
	if req.System != "" {
		p.System = []anthropic.TextBlockParam{{Text: req.System}}
	}
	toolResults := false // the last message holds only tool results
	for i, m := range req.Messages {
		switch m.Role {
		case RoleUser:
			blocks, f := anthropicBlocks(i, m)
			if f != nil {
				return p, f
			}
			p.Messages = append(p.Messages, anthropic.NewUserMessage(blocks...))
			toolResults = false
		case RoleAssistant:
			var blocks []anthropic.ContentBlockParamUnion
			if m.Content != "" {
				blocks = append(blocks, anthropic.NewTextBlock(m.Content))
			}
			for _, tc := range m.ToolCalls {
				blocks = append(blocks, anthropic.NewToolUseBlock(tc.ID, toolInput(tc.Arguments), tc.Name))
			}
			if len(blocks) == 0 {
				continue // an empty assistant turn cannot be sent
			}
			p.Messages = append(p.Messages, anthropic.NewAssistantMessage(blocks...))
			toolResults = false
		case RoleTool:
			block := anthropic.ToolResultBlockParam{ToolUseID: m.ToolCallID, IsError: anthropic.Bool(m.IsError)}
			if m.Content != "" {
				block.Content = []anthropic.ToolResultBlockParamContentUnion{{OfText: &anthropic.TextBlockParam{Text: m.Content}}}
			}
			u := anthropic.ContentBlockParamUnion{OfToolResult: &block}
			if toolResults {
				last := &p.Messages[len(p.Messages)-1]
				last.Content = append(last.Content, u)
			} else {
				p.Messages = append(p.Messages, anthropic.NewUserMessage(u))
				toolResults = true
			}
		default:
			return p, invalidRequest("message %d has unknown role %q", i, m.Role)
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.Parameters)
		if err != nil {
			return p, invalidRequest("tool %q: %w", t.Name, err)
		}
		in := anthropic.ToolInputSchemaParam{ExtraFields: map[string]any{}}
		for k, v := range schema {
			switch k {
			case "type":
			case "properties":
				in.Properties = v
			case "required":
				if list, ok := v.([]any); ok {
					for _, r := range list {
						if s, ok := r.(string); ok {
							in.Required = append(in.Required, s)
						}
					}
				}
			default:
				in.ExtraFields[k] = v
			}
		}
		tool := anthropic.ToolParam{Name: t.Name, InputSchema: in}
		if t.Description != "" {
			tool.Description = anthropic.String(t.Description)
		}
		p.Tools = append(p.Tools, anthropic.ToolUnionParam{OfTool: &tool})
	}
	if req.ToolChoice != "" {
		if f := checkToolChoice(req); f != nil {
			return p, f
		}
		p.ToolChoice = anthropic.ToolChoiceUnionParam{OfTool: &anthropic.ToolChoiceToolParam{Name: req.ToolChoice}}
	}
	return p, nil
}

// anthropicBlocks is user message i (m) as blocks: its text, then each
// part, images as base64 image blocks. The API refuses an empty text
// block, so a message with parts and no text starts with its parts.
func anthropicBlocks(i int, m Message) ([]anthropic.ContentBlockParamUnion, *failure) {
	if len(m.Parts) == 0 {
		return []anthropic.ContentBlockParamUnion{anthropic.NewTextBlock(m.Content)}, nil
	}
	var blocks []anthropic.ContentBlockParamUnion
	if m.Content != "" {
		blocks = append(blocks, anthropic.NewTextBlock(m.Content))
	}
	for j, pt := range m.Parts {
		switch pt.Kind {
		case PartText:
			blocks = append(blocks, anthropic.NewTextBlock(pt.Text))
		case PartImage:
			if len(pt.Data) == 0 {
				return nil, invalidRequest("message %d: image %d has no data", i, j)
			}
			blocks = append(blocks, anthropic.NewImageBlockBase64(pt.MediaType, base64.StdEncoding.EncodeToString(pt.Data)))
		default:
			return nil, invalidRequest("message %d: part %d has unknown kind %q", i, j, pt.Kind)
		}
	}
	return blocks, nil
}

// toolInput is the stored arguments as a JSON object, or {} when they are
// not one.
func toolInput(args string) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(args), &obj) != nil || obj == nil {
		return json.RawMessage(`{}`)
	}
	return json.RawMessage(args)
}

// once makes one non-streaming attempt.
func (a *Anthropic) once(ctx context.Context, p anthropic.MessageNewParams) (*Response, *failure) {
	var res *http.Response
	m, err := a.messages.New(ctx, p, option.WithResponseInto(&res))
	if err != nil {
		return nil, a.classify(err, res)
	}
	if m.Type != "message" && m.Role != "assistant" {
		return nil, badBody(res)
	}
	msg := Message{Role: RoleAssistant}
	var text strings.Builder
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: b.ID, Name: b.Name, Arguments: string(b.Input)})
		}
	}
	msg.Content = text.String()
	return &Response{
		Message:    msg,
		Usage:      anthropicUsage(m.Usage.InputTokens+m.Usage.CacheReadInputTokens+m.Usage.CacheCreationInputTokens, m.Usage.OutputTokens),
		StopReason: anthropicStop(string(m.StopReason)),
	}, nil
}

// classify adds Anthropic's in-stream error events (status 200, an error
// type in the body) to the shared classification.
func (a *Anthropic) classify(err error, res *http.Response) *failure {
	var aerr *anthropic.Error
	if errors.As(err, &aerr) && aerr.StatusCode < 400 {
		typ := string(aerr.Type())
		f := &failure{kind: ErrServer, retryable: true, err: fmt.Errorf("the stream reported an error (%s)", identifier(typ))}
		switch typ {
		case "rate_limit_error":
			f.kind = ErrRateLimit
		case "invalid_request_error":
			f.kind, f.retryable = ErrBadRequest, false
		case "authentication_error", "permission_error":
			f.kind, f.retryable = ErrAuth, false
		case "not_found_error":
			f.kind, f.retryable = ErrModel, false
		}
		return f
	}
	return classify(err, res, a.now())
}

// stream makes one streaming attempt over the Messages event sequence.
func (a *Anthropic) stream(ctx context.Context, p anthropic.MessageNewParams, onDelta func(string)) (*Response, *failure) {
	var res *http.Response
	s := a.messages.NewStreaming(ctx, p, option.WithResponseInto(&res))
	defer s.Close()

	type block struct {
		typ, id, name string
		input         strings.Builder
		startInput    string
	}
	var (
		blocks         []*block
		text           strings.Builder
		usage          Usage
		stop           string
		started, ended bool
		emitted        bool
		inputTokens    int64
	)
	byIndex := map[int64]*block{}
	for s.Next() {
		ev := s.Current()
		switch ev.Type {
		case "message_start":
			started = true
			u := ev.Message.Usage
			inputTokens = u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens
			usage = anthropicUsage(inputTokens, u.OutputTokens)
		case "content_block_start":
			b := &block{typ: ev.ContentBlock.Type, id: ev.ContentBlock.ID, name: ev.ContentBlock.Name}
			if b.typ == "text" && ev.ContentBlock.Text != "" {
				text.WriteString(ev.ContentBlock.Text)
				emitted = true
				onDelta(ev.ContentBlock.Text)
			}
			if b.typ == "tool_use" && ev.ContentBlock.Input != nil {
				if raw, err := json.Marshal(ev.ContentBlock.Input); err == nil {
					b.startInput = string(raw)
				}
			}
			blocks = append(blocks, b)
			byIndex[ev.Index] = b
		case "content_block_delta":
			b := byIndex[ev.Index]
			switch ev.Delta.Type {
			case "text_delta":
				if ev.Delta.Text != "" {
					text.WriteString(ev.Delta.Text)
					emitted = true
					onDelta(ev.Delta.Text)
				}
			case "input_json_delta":
				if b != nil {
					b.input.WriteString(ev.Delta.PartialJSON)
				}
			}
		case "message_delta":
			stop = string(ev.Delta.StopReason)
			usage.OutputTokens = int(ev.Usage.OutputTokens)
			if ev.Usage.JSON.InputTokens.Valid() && ev.Usage.InputTokens > 0 {
				usage.InputTokens = int(ev.Usage.InputTokens + ev.Usage.CacheReadInputTokens + ev.Usage.CacheCreationInputTokens)
			}
		case "message_stop":
			ended = true
		}
	}
	if err := s.Err(); err != nil {
		f := a.classify(err, res)
		if emitted {
			f.retryable = false
		}
		return nil, f
	}
	switch {
	case !started:
		return nil, badBody(res)
	case !ended:
		return nil, &failure{kind: ErrServer, status: res.StatusCode, retryable: !emitted, err: errors.New("the stream ended before the answer was complete")}
	}
	msg := Message{Role: RoleAssistant, Content: text.String()}
	for _, b := range blocks {
		if b.typ != "tool_use" {
			continue
		}
		args := b.input.String()
		if args == "" {
			args = b.startInput
		}
		if args == "" {
			args = "{}"
		}
		msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: b.id, Name: b.name, Arguments: args})
	}
	return &Response{Message: msg, Usage: usage, StopReason: anthropicStop(stop)}, nil
}

func anthropicUsage(in, out int64) Usage {
	return Usage{InputTokens: int(in), OutputTokens: int(out)}
}

// anthropicStop normalises a stop_reason.
func anthropicStop(reason string) string {
	switch reason {
	case "end_turn", "stop_sequence", "":
		return "stop"
	case "tool_use":
		return "tool_calls"
	case "max_tokens":
		return "length"
	}
	return reason
}
