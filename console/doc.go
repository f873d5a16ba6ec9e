// Package console is the operator's web console: usage, cost and what the
// gateway did, served under /console/ on the gateway's HTTP listener.
//
// It renders HTML on the server through one escaping writer (html.go:
// everything users wrote is untrusted text, and only the console's own
// constant markup is written unescaped), draws its charts as SVG on the
// server (chart.go), and embeds its stylesheet: no JavaScript, no build step. It reads
// through the store's queries (Store) and changes things only through the
// services the CLI uses. It never shows a credential's value, a prompt it
// has not stored, or a token; it never logs request bodies.
//
// Sign-in exchanges the admin token (TALON_CONSOLE_TOKEN, compared in
// constant time, rate-limited per client address) for a session cookie
// (HttpOnly, SameSite=Strict, Secure behind https) that expires, and so does
// "Sign in with Slack" (OpenID Connect, oidc.go) for the Slack principals
// among the admins; every POST
// carries the session's CSRF token; every response carries a strict
// Content-Security-Policy. Admin actions land in an audit log shown on the
// Overview page.
package console
