// Package llm owns the conversation with language models: the message and
// tool types, the Provider interface, and its implementations for
// OpenAI-compatible endpoints (our own client on net/http, which treats the
// endpoint's answers as untrusted input with the bounds MaxResponseBytes
// and MaxToolCalls) and Anthropic's Messages API (the official SDK).
//
// It never stores anything, never runs tools and never logs prompts or
// replies: it turns a Request into a Response or a classified *Error.
package llm
