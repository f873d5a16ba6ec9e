// Package llm owns the conversation with language models: the message and
// tool types, the Provider interface, and its implementations for
// OpenAI-compatible endpoints and Anthropic's Messages API.
//
// It never stores anything, never runs tools and never logs prompts or
// replies: it turns a Request into a Response or a classified *Error.
package llm
