package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/shared"
)

// OpenAI is a Provider for any OpenAI-compatible Chat Completions endpoint:
// OpenAI, Ollama, vLLM, llama.cpp's server, OpenRouter. It is safe for
// concurrent use once constructed.
type OpenAI struct {
	// Sleep waits between retries; nil means a real timer. Tests replace it.
	// Set it before the first call.
	Sleep SleepFunc
	// Now is the clock used to read HTTP-date Retry-After headers; nil means
	// time.Now.
	Now func() time.Time

	call        caller
	completions openai.ChatCompletionService
	// completionTokens sends max_completion_tokens (api.openai.com) instead
	// of the max_tokens other servers understand.
	completionTokens bool
}

var _ Provider = (*OpenAI)(nil)

// NewOpenAI returns a provider for the OpenAI-compatible endpoint in cfg.
// It reads nothing from the environment: the SDK's own OPENAI_* defaults
// and retries are not used.
func NewOpenAI(cfg Config) (*OpenAI, error) {
	cfg, err := cfg.withDefaults(DefaultOpenAIBaseURL)
	if err != nil {
		return nil, fmt.Errorf("llm openai: config: %w", err)
	}
	opts := []option.RequestOption{
		option.WithBaseURL(strings.TrimSuffix(cfg.BaseURL, "/") + "/"),
		option.WithHTTPClient(cfg.HTTPClient),
		option.WithMaxRetries(0),
	}
	if cfg.APIKey != "" {
		opts = append(opts, option.WithAPIKey(cfg.APIKey))
	}
	for k, v := range cfg.Headers {
		opts = append(opts, option.WithHeader(k, v))
	}
	u, _ := url.Parse(cfg.BaseURL)
	return &OpenAI{
		call:             caller{provider: "openai", keyHint: "llm.api_key / OPENAI_API_KEY", cfg: cfg},
		completions:      openai.NewChatCompletionService(opts...),
		completionTokens: strings.EqualFold(u.Hostname(), "api.openai.com"),
	}, nil
}

// Name returns "openai".
func (o *OpenAI) Name() string { return "openai" }

// Model returns the configured model name.
func (o *OpenAI) Model() string { return o.call.cfg.Model }

// Complete sends req to the Chat Completions endpoint, streaming when
// req.OnDelta is set, and retries rate limits, server errors and connection
// failures. A stream that fails after text reached OnDelta is not retried.
// Every error is an *Error.
func (o *OpenAI) Complete(ctx context.Context, req Request) (*Response, error) {
	params, f := o.params(req)
	if f != nil {
		return nil, o.call.finalError(f)
	}
	return o.call.do(ctx, o.Sleep, func(ctx context.Context) (*Response, *failure) {
		if req.OnDelta != nil {
			return o.stream(ctx, params, req.OnDelta)
		}
		return o.once(ctx, params)
	})
}

func (o *OpenAI) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// params maps req to the wire request.
func (o *OpenAI) params(req Request) (openai.ChatCompletionNewParams, *failure) {
	p := openai.ChatCompletionNewParams{Model: shared.ChatModel(o.call.cfg.Model)}
	if req.System != "" {
		p.Messages = append(p.Messages, openai.SystemMessage(req.System))
	}
	for i, m := range req.Messages {
		switch m.Role {
		case RoleUser:
			p.Messages = append(p.Messages, openai.UserMessage(m.Content))
		case RoleAssistant:
			var a openai.ChatCompletionAssistantMessageParam
			if m.Content != "" || len(m.ToolCalls) == 0 {
				a.Content.OfString = openai.String(m.Content)
			}
			for _, tc := range m.ToolCalls {
				a.ToolCalls = append(a.ToolCalls, openai.ChatCompletionMessageToolCallUnionParam{
					OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
						ID: tc.ID,
						Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{
							Name:      tc.Name,
							Arguments: tc.Arguments,
						},
					},
				})
			}
			p.Messages = append(p.Messages, openai.ChatCompletionMessageParamUnion{OfAssistant: &a})
		case RoleTool:
			p.Messages = append(p.Messages, openai.ToolMessage(m.Content, m.ToolCallID))
		default:
			return p, invalidRequest("message %d has unknown role %q", i, m.Role)
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.Parameters)
		if err != nil {
			return p, invalidRequest("tool %q: %w", t.Name, err)
		}
		def := shared.FunctionDefinitionParam{Name: t.Name, Parameters: shared.FunctionParameters(schema)}
		if t.Description != "" {
			def.Description = openai.String(t.Description)
		}
		p.Tools = append(p.Tools, openai.ChatCompletionFunctionTool(def))
	}
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = o.call.cfg.MaxTokens
	}
	if maxTokens > 0 {
		if o.completionTokens {
			p.MaxCompletionTokens = openai.Int(int64(maxTokens))
		} else {
			p.MaxTokens = openai.Int(int64(maxTokens))
		}
	}
	return p, nil
}

// once makes one non-streaming attempt.
func (o *OpenAI) once(ctx context.Context, p openai.ChatCompletionNewParams) (*Response, *failure) {
	var res *http.Response
	cc, err := o.completions.New(ctx, p, option.WithResponseInto(&res))
	if err != nil {
		return nil, classify(err, res, o.now())
	}
	if len(cc.Choices) == 0 {
		return nil, badBody(res)
	}
	choice := cc.Choices[0]
	msg := Message{Role: RoleAssistant, Content: choice.Message.Content}
	for _, tc := range choice.Message.ToolCalls {
		args := tc.Function.Arguments
		if raw := tc.Function.JSON.Arguments.Raw(); args == "" && strings.HasPrefix(raw, "{") {
			args = raw // some servers send the arguments as an object
		}
		msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: args})
	}
	return &Response{
		Message:    msg,
		Usage:      Usage{InputTokens: int(cc.Usage.PromptTokens), OutputTokens: int(cc.Usage.CompletionTokens)},
		StopReason: openAIStop(choice.FinishReason, len(msg.ToolCalls) > 0),
	}, nil
}

// stream makes one streaming attempt, passing text to onDelta as it comes
// and accumulating tool-call fragments by index.
func (o *OpenAI) stream(ctx context.Context, p openai.ChatCompletionNewParams, onDelta func(string)) (*Response, *failure) {
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	var res *http.Response
	s := o.completions.NewStreaming(ctx, p, option.WithResponseInto(&res))
	defer s.Close()

	var (
		text    strings.Builder
		calls   []ToolCall
		slots   = map[int64]int{} // wire index → position in calls
		usage   Usage
		finish  string
		chunks  int
		emitted bool
	)
	for s.Next() {
		ch := s.Current()
		chunks++
		if ch.JSON.Usage.Valid() && (ch.Usage.PromptTokens > 0 || ch.Usage.CompletionTokens > 0) {
			usage = Usage{InputTokens: int(ch.Usage.PromptTokens), OutputTokens: int(ch.Usage.CompletionTokens)}
		}
		for _, c := range ch.Choices {
			if c.Index != 0 {
				continue
			}
			if d := c.Delta.Content; d != "" {
				text.WriteString(d)
				emitted = true
				onDelta(d)
			}
			for _, tc := range c.Delta.ToolCalls {
				pos, ok := slots[tc.Index]
				if !ok || (tc.ID != "" && calls[pos].ID != "" && calls[pos].ID != tc.ID) {
					// A new call; servers that omit the index reuse 0 for
					// every call, so a new id also starts a new call.
					calls = append(calls, ToolCall{})
					pos = len(calls) - 1
					slots[tc.Index] = pos
				}
				if tc.ID != "" {
					calls[pos].ID = tc.ID
				}
				if tc.Function.Name != "" {
					calls[pos].Name = tc.Function.Name
				}
				calls[pos].Arguments += tc.Function.Arguments
			}
			if c.FinishReason != "" {
				finish = c.FinishReason
			}
		}
	}
	if err := s.Err(); err != nil {
		f := classify(err, res, o.now())
		if se := (*ssestream.StreamError)(nil); errors.As(err, &se) {
			// An error event inside the stream: the provider failed mid-answer.
			f = &failure{kind: ErrServer, retryable: true, err: errors.New("the stream reported an error")}
			if res != nil {
				f.status = res.StatusCode
			}
		}
		if emitted {
			f.retryable = false
		}
		return nil, f
	}
	switch {
	case chunks == 0:
		return nil, badBody(res)
	case finish == "":
		return nil, &failure{kind: ErrServer, status: res.StatusCode, retryable: !emitted, err: fmt.Errorf("the stream ended before the answer was complete")}
	}
	msg := Message{Role: RoleAssistant, Content: text.String(), ToolCalls: calls}
	return &Response{Message: msg, Usage: usage, StopReason: openAIStop(finish, len(calls) > 0)}, nil
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
