// Package mcp offers the tools of remote MCP servers (Model Context
// Protocol, streamable HTTP or the older SSE transport) to the agent, on
// each user's own account: one session per server and user, opened on
// first use and reused.
//
// It speaks the protocol with the official Go SDK and reaches the network
// only through the egress broker's RoundTripper (sandbox/egress): the
// server's origin is the only host allowed, the SSRF rules and the leak
// check apply, and a bearer credential is injected there from the user's
// vault entry, so neither the SDK nor the model ever holds it.
//
// It owns the naming of tools (<server>__<tool>, sanitised and bounded),
// the bounds on what a server may send (tools, descriptions, schemas,
// results), approval of calls that are not read-only, and pinning: a
// hash of each tool's description and schema is recorded, and a tool that
// changes after it was approved is disabled until the operator approves it
// again. It never runs a local (stdio) server: that would run native code
// outside the sandbox.
package mcp
