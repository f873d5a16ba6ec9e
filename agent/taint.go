package agent

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/talonhq/talon/agent/llm"
)

// Taint is the mark of a turn whose model context holds untrusted content:
// text that someone other than the session's owner (or the operator) wrote,
// and that may carry instructions the model would follow. A tainted turn
// may not send data to a host the operator does not trust, nor send much
// data anywhere, without asking its owner first (the sandbox asks, with the
// durable approval prompts), so that an injected instruction cannot carry
// the conversation out.
//
// A source is a short, human text naming where the content came from:
// "tool http_fetch: example.org", "thread message by U123", "file
// report.csv", "mcp server docs". It is shown to the owner (/talon status,
// approval prompts) and persisted with the turn, never logged with the
// content itself.
//
// Sources of untrusted content, and where they mark the turn:
//   - tool results from the network: the sandbox, and the MCP client for
//     every result of a remote MCP server, set ToolResult.Taint; the
//     runtime marks the turn when it records the result (runTool);
//   - thread messages not written by the turn's owner or the bot
//     (withThread) and attached files (ingest): the turn is marked right
//     after it starts, before its first model call (Runtime.turn);
//   - memory: a search's result that holds an entry written by someone
//     else, or saved by a tainted turn, sets ToolResult.Taint like a
//     tool's network result (package memory);
//   - any later source (channel history): whatever adds the content to the model's context calls
//     Runtime.Taint with the turn's id and a source, before the model call
//     that reads it. A source known before the turn starts is kept and
//     passed to Taint once StartTurn has given the turn its id, as the
//     thread and files are.
//
// A session stays tainted once one of its turns is (its history, or the
// summary of it, keeps the content): every later turn starts tainted with
// the source "earlier in this conversation: …", until /new.
const (
	// TaintPrefixTool starts the source of a tool's network result.
	TaintPrefixTool = "tool "
	// TaintPrefixEarlier starts the source inherited from an earlier turn.
	TaintPrefixEarlier = "earlier in this conversation: "
)

// maxTaintSource bounds a source as it is stored and shown, in bytes.
const maxTaintSource = 200

// Taint marks turn t tainted by untrusted content from source, which must
// name where the content came from (see TaintPrefixTool for the form). The
// first source of a turn is kept; later ones change nothing. The mark is
// persisted with the turn and its session, so that a resumed turn and the
// session's later turns stay tainted; a failure to persist is logged and
// the turn is still treated as tainted. Safe for concurrent use; a call for
// a turn that is not running only persists.
func (r *Runtime) Taint(ctx context.Context, t TurnID, source string) {
	r.init()
	source = clip(visible(strings.TrimSpace(source)), maxTaintSource)
	if source == "" {
		source = "untrusted content"
	}
	r.mu.Lock()
	st, running := r.taints[t]
	if running && st.source != "" {
		r.mu.Unlock()
		return
	}
	if running {
		st.source = source
		r.taints[t] = st
	}
	r.mu.Unlock()
	if err := r.Store.TaintTurn(context.WithoutCancel(ctx), t, source); err != nil {
		r.Log.Error().Err(err).Int64("turn", int64(t)).Msg("could not persist the turn's taint; it stays tainted until it ends")
	}
}

// TurnTaint returns the source of turn t's taint, "" when t is not
// tainted (or not running in this runtime).
func (r *Runtime) TurnTaint(t TurnID) string {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.taints[t].source
}

// turnTaint is the taint state of a running turn.
type turnTaint struct {
	source string
}

// startTaint registers running turn t, tainted when its session is (an
// earlier turn, or t itself before a restart, read untrusted content).
func (r *Runtime) startTaint(ctx context.Context, t TurnID, s Session) {
	src := s.Taint
	r.mu.Lock()
	r.taints[t] = turnTaint{}
	r.mu.Unlock()
	if src == "" {
		return
	}
	if !strings.HasPrefix(src, TaintPrefixEarlier) {
		src = TaintPrefixEarlier + src
	}
	r.Taint(ctx, t, src)
}

func (r *Runtime) endTaint(t TurnID) {
	r.mu.Lock()
	delete(r.taints, t)
	r.mu.Unlock()
}

// TrustedHosts is the operator's list of hosts that a tainted turn may send
// data to without asking (egress.trusted_hosts), and whose links a channel
// may let the platform unfurl. The zero value trusts nothing.
type TrustedHosts struct {
	exact    map[string]bool
	suffixes []string // ".example.com" for "*.example.com"
}

// ParseTrustedHosts reads patterns: an exact host ("api.github.com") or
// "*.suffix" (any host below suffix, not suffix itself). Hosts are
// compared in lower case, without a trailing dot; non-ASCII names must be
// written in their ASCII (xn--) form, so that a look-alike is never
// trusted by mistake.
func ParseTrustedHosts(patterns []string) (TrustedHosts, error) {
	var th TrustedHosts
	var bad []string
	for _, p := range patterns {
		h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(p)), ".")
		wild := strings.HasPrefix(h, "*.")
		name := strings.TrimPrefix(h, "*.")
		if !validHostName(name) {
			bad = append(bad, fmt.Sprintf("%q", p))
			continue
		}
		if wild {
			th.suffixes = append(th.suffixes, "."+name)
			continue
		}
		if th.exact == nil {
			th.exact = make(map[string]bool)
		}
		th.exact[name] = true
	}
	if len(bad) > 0 {
		return TrustedHosts{}, fmt.Errorf("not a host name or *.suffix (ASCII, xn-- for other scripts, no port): %s", strings.Join(bad, ", "))
	}
	return th, nil
}

// validHostName reports whether s is an ASCII DNS name or an IP literal.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	if net.ParseIP(s) != nil {
		return true
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Trusts reports whether host (a name, without port) is trusted. A name
// that is not plain ASCII is never trusted.
func (th TrustedHosts) Trusts(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" || !validHostName(h) {
		return false
	}
	if th.exact[h] {
		return true
	}
	for _, s := range th.suffixes {
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// TrustsURL reports whether raw is an http(s) URL whose host is trusted.
func (th TrustedHosts) TrustsURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return false
	}
	return th.Trusts(u.Hostname())
}

// Empty reports whether th trusts no host.
func (th TrustedHosts) Empty() bool { return len(th.exact) == 0 && len(th.suffixes) == 0 }

// storedTaint is the taint of the question turn t of session s stored when
// it started, for a turn resumed after a restart: its thread's messages or
// its files, "" for neither. It is read only on that rare path.
func (r *Runtime) storedTaint(ctx context.Context, s SessionID, t TurnID) string {
	msgs, err := r.Store.Recent(ctx, s, 0)
	if err != nil {
		r.Log.Warn().Err(err).Int64("turn", int64(t)).Msg("could not check a resumed turn's question for untrusted content; treating it as tainted")
		return "untrusted content (a resumed turn whose question could not be checked)"
	}
	for _, m := range msgs {
		if m.Turn != t || m.Message.Role != llm.RoleUser {
			continue
		}
		if strings.Contains(m.Message.Content, threadEnd) {
			return "thread messages read before a restart"
		}
		for _, p := range m.Message.Parts {
			if p.Name != "" {
				return "file " + p.Name
			}
		}
	}
	return ""
}
