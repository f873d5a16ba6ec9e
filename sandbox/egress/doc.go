// Package egress is the only place that opens outbound connections for
// tools and MCP servers. It checks every request against the tool's
// allowlist and the SSRF rules, dials the address it checked, follows
// redirects itself (Do) or refuses them (RoundTripper, for clients that
// speak a protocol over HTTP), and is the seam where credentials are
// injected and leaks are checked.
//
// It never lets a guest choose the address it connects to, set hop or
// authentication headers, or see a credential's value.
package egress
