package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Role is the author of a message in a conversation with the model.
type Role string

// The roles a Message can have.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
	RoleTool      Role = "tool"
)

// Message is one entry of the conversation sent to the model. The system
// prompt is not a Message: it travels in Request.System.
type Message struct {
	Role Role `json:"role"`
	// Content is the text of the message. For RoleTool it is the tool's result.
	Content string `json:"content,omitempty"`
	// ToolCalls are the calls the assistant asked for (RoleAssistant only).
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID names the call a RoleTool message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// ToolName is the name of the tool a RoleTool message answers (Anthropic
	// does not need it; some OpenAI-compatible servers do).
	ToolName string `json:"tool_name,omitempty"`
	// IsError marks a RoleTool result that reports a failure.
	IsError bool `json:"is_error,omitempty"`
	// Parts are what a RoleUser message carries beside its Content: the
	// text of attached files and images. Providers send them after
	// Content, as content parts (OpenAI) or blocks (Anthropic).
	Parts []Part `json:"parts,omitempty"`
}

// PartKind says what a Part holds.
type PartKind string

// The kinds of Part.
const (
	// PartText is text read from a file, framed by the agent.
	PartText PartKind = "text"
	// PartImage is an image the model is shown.
	PartImage PartKind = "image"
)

// Part is a piece of a user message beside its text.
type Part struct {
	Kind PartKind `json:"kind"`
	// Text is a PartText's text.
	Text string `json:"text,omitempty"`
	// Name is the file the part came from, for notes about it.
	Name string `json:"name,omitempty"`
	// MediaType is a PartImage's type: image/png, image/jpeg, image/gif
	// or image/webp.
	MediaType string `json:"media_type,omitempty"`
	// Ref names the stored bytes of a PartImage (a content hash): the
	// history keeps the reference, never the bytes.
	Ref string `json:"ref,omitempty"`
	// Data are a PartImage's encoded bytes, which the agent fills in from
	// Ref before the request is sent. They are never stored; a PartImage
	// without Data cannot be sent.
	Data []byte `json:"-"`
}

// ToolCall is a request from the model to run a tool.
type ToolCall struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Arguments is the raw JSON text the model produced. It is not validated
	// by the provider: it may be malformed, and the agent must cope.
	Arguments string `json:"arguments"`
}

// Tool describes a tool the model may call.
type Tool struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Parameters is a JSON Schema object describing the arguments.
	Parameters json.RawMessage `json:"parameters"`
}

// Request is one call to the model.
type Request struct {
	System   string
	Messages []Message
	Tools    []Tool
	// ToolChoice, when set, names the one of Tools the model must call in
	// this answer (OpenAI's tool_choice function, Anthropic's tool_choice
	// tool); empty leaves the choice to the model. A name not in Tools is
	// an invalid request. Some OpenAI-compatible servers ignore it: the
	// caller that needs the call checks the answer's ToolCalls.
	ToolChoice string
	// MaxTokens bounds the reply; zero means the provider's default.
	MaxTokens int
	// OnDelta, when set, asks the provider to stream and receives each piece
	// of assistant text as it arrives. It is called from the goroutine that
	// called Complete, never concurrently.
	OnDelta func(text string)
}

// checkToolChoice refuses a ToolChoice that names no tool of the request.
func checkToolChoice(req Request) *failure {
	for _, t := range req.Tools {
		if t.Name == req.ToolChoice {
			return nil
		}
	}
	return invalidRequest("tool_choice names %q, which is not among the request's tools", req.ToolChoice)
}

// Usage counts tokens as reported by the provider.
type Usage struct {
	InputTokens  int
	OutputTokens int
}

// Response is the model's answer to a Request.
type Response struct {
	// Message has RoleAssistant, with Content and/or ToolCalls.
	Message Message
	Usage   Usage
	// StopReason is the provider's reason, normalised to "stop",
	// "tool_calls", "length" or the provider's own word.
	StopReason string
}

// Provider is a language model endpoint.
type Provider interface {
	// Complete sends the request and returns the whole answer. It retries
	// rate limits and server errors itself; the error it returns is final
	// and is an *Error.
	Complete(ctx context.Context, req Request) (*Response, error)
	// Name is the provider kind ("openai", "anthropic").
	Name() string
	// Model is the model name requests use.
	Model() string
}

// ErrorKind classifies a failed call so the operator and the user can be told
// what to do.
type ErrorKind int

// The kinds of Error.
const (
	ErrUnknown     ErrorKind = iota
	ErrAuth                  // the key is missing, wrong or revoked
	ErrModel                 // the model does not exist or is not available
	ErrUnreachable           // the endpoint could not be reached
	ErrRateLimit             // still rate limited after retries
	ErrServer                // the provider failed (5xx) after retries
	ErrTimeout               // the call took longer than allowed
	ErrBadResponse           // the provider answered something we cannot read
	ErrBadRequest            // the provider refused the request (4xx)
)

func (k ErrorKind) String() string {
	switch k {
	case ErrAuth:
		return "auth"
	case ErrModel:
		return "model"
	case ErrUnreachable:
		return "unreachable"
	case ErrRateLimit:
		return "rate_limit"
	case ErrServer:
		return "server"
	case ErrTimeout:
		return "timeout"
	case ErrBadResponse:
		return "bad_response"
	case ErrBadRequest:
		return "bad_request"
	}
	return "unknown"
}

// Error is the error every Provider returns. Its message is written for the
// operator and never contains the API key or the prompt.
type Error struct {
	Kind     ErrorKind
	Provider string
	// Status is the HTTP status, or 0 when there was no response.
	Status int
	// RetryAfter is what the provider asked us to wait, if it said.
	RetryAfter time.Duration
	// Hint says what the operator should do.
	Hint string
	Err  error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("llm %s: %s", e.Provider, e.Kind)
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err if it is (or wraps) an *Error.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ErrUnknown
}

// ImageTokens is what an image is counted as in history budgets: about what
// providers charge for an image scaled to their limit (Anthropic: width ×
// height / 750 for 1,568 pixels on the long side).
const ImageTokens = 1600

// EstimateTokens is a cheap, provider-independent estimate of the tokens in a
// text (about four bytes a token), used for history budgets.
func EstimateTokens(s string) int { return (len(s) + 3) / 4 }
