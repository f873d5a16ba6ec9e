// Package agent is Talon's core: the vocabulary every part shares
// (Principal, SessionKey, Inbound, Reply), the runtime that queues messages
// per session and bounds concurrency, and the turn loop that calls the model
// and its tools.
//
// Every request to a model is built by one context builder (window.go:
// what part of the history is sent, what is summarised) and sent through
// one model path (model.go: scrubbed of secrets, metered).
//
// It declares the interfaces it consumes (Store, ToolRunner, Channel) and
// imports no package of ours except agent/llm. It never talks to a platform,
// opens a database or runs a tool itself.
package agent
