package egress

import (
	"fmt"

	"github.com/talonhq/talon/agent"
)

// DefaultTaintedURLData is Taint.MaxURLData's default: how many bytes of
// path and query a tainted turn may send to a trusted host unasked.
const DefaultTaintedURLData = 256

// Taint guards the requests of turns whose context holds untrusted content
// (agent.Taint): such a request needs its owner's approval when it goes to
// a host that is not trusted, or carries more data than a small bound. The
// sandbox asks before the first hop; the broker refuses any hop that needs
// approval and did not get it (a redirect included). The zero value trusts
// no host and uses DefaultTaintedURLData.
type Taint struct {
	// Trusted are the operator's trusted hosts (egress.trusted_hosts).
	// Rules of a tool's policy marked Trusted add theirs.
	Trusted agent.TrustedHosts
	// MaxURLData bounds the bytes of path and query a request may carry
	// unasked; 0 means DefaultTaintedURLData, negative means none.
	MaxURLData int
}

func (g *Taint) maxURLData() int {
	switch {
	case g == nil || g.MaxURLData == 0:
		return DefaultTaintedURLData
	case g.MaxURLData < 0:
		return 0
	}
	return g.MaxURLData
}

// Check returns why a request of a tainted turn, by a tool with policy pol,
// needs its owner's approval: its host is not trusted, its path and query
// are longer than the bound, or it has a body. It returns "" when it may
// go unasked. A URL the broker cannot send (malformed, not http(s), a host
// not in ASCII such as a look-alike "аpple.com") needs no approval: the
// broker refuses it, and asking would only show the person a deceptive
// destination.
func (g *Taint) Check(pol *Policy, method, rawURL, body string) string {
	t, _, err := parseTarget(rawURL)
	if err != nil {
		return ""
	}
	return g.check(pol, method, t, body)
}

func (g *Taint) check(pol *Policy, method string, t target, body string) string {
	if !g.trusts(pol, method, t) {
		return fmt.Sprintf("it goes to %s, which is not a trusted host", t.host.Name)
	}
	if n, max := len(t.u.EscapedPath())+len(t.u.RawQuery), g.maxURLData(); n > max {
		return fmt.Sprintf("its path and query carry %d bytes (more than %d)", n, max)
	}
	if body != "" {
		return fmt.Sprintf("it sends a %d-byte body", len(body))
	}
	return ""
}

// trusts reports whether t's host is trusted: by the operator's list, or by
// a rule of pol marked Trusted that allows method on t.
func (g *Taint) trusts(pol *Policy, method string, t target) bool {
	if g != nil && g.Trusted.Trusts(t.host.Name) {
		return true
	}
	if pol == nil {
		return false
	}
	r, reason := pol.match(method, t)
	return reason == "" && r.Trusted
}

// Untrusted reports whether content fetched from rawURL by a tool with
// policy pol is untrusted, i.e. taints the turn that reads it: every host
// but a trusted one.
func (g *Taint) Untrusted(pol *Policy, method, rawURL string) bool {
	t, _, err := parseTarget(rawURL)
	if err != nil {
		return true
	}
	return !g.trusts(pol, method, t)
}
