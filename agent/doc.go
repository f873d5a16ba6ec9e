// Package agent is Talon's core: the vocabulary every part shares
// (Principal, SessionKey, Inbound, Reply), the runtime that queues messages
// per session and bounds concurrency, and the turn loop that calls the model
// and its tools.
//
// Every request to a model is built by one context builder (window.go:
// what part of the history is sent, what is summarised) and sent through
// one model path (model.go: scrubbed of secrets, metered).
//
// A turn is tainted from the moment untrusted content enters its context
// (taint.go): a tool's network result (ToolResult.Taint), and any other
// source — another person's thread message, a file, an MCP result, memory
// written by someone else — marks it by calling Runtime.Taint(ctx, turn,
// source) when it adds the content, before the model call that reads it.
// The mark is persisted with the turn and its session; the tool calls of a
// tainted turn carry it (ToolCall.Taint), and the sandbox then asks the
// owner before a request sends data to a host the operator does not trust.
//
// It declares the interfaces it consumes (Store, ToolRunner, Channel) and
// imports no package of ours except agent/llm. It never talks to a platform,
// opens a database or runs a tool itself.
package agent
