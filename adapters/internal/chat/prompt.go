package chat

import (
	"cmp"
	"strconv"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
)

// Prompt is an approval prompt as Slack and Discord show it: the same
// facts, in the same order and within the same bounds, each platform
// rendering them with its own Markup. Everything in it but Owner may come
// from the model or a tool, so it is shown only in code spans and blocks,
// escaped, with no backtick left that could close one.
type Prompt struct {
	// Tool is the tool's name.
	Tool string
	// Owner is the user id of the only person who may decide.
	Owner string
	// Request is the HTTP request to approve, "POST
	// api.github.com/repos/o/r/issues?state=…"; "" for a whole call.
	Request string
	// Args are the call's arguments as compact JSON, redacted and cut by
	// the runtime; ArgsOmitted counts the bytes it cut.
	Args        string
	ArgsOmitted int
	// Description says what is asked when neither Request nor Args do
	// (an approval stored by an older version).
	Description string
	// Reason says why a request of a turn that read untrusted content is
	// asked (agent.ApprovalDetail.Reason); Request then shows the query's
	// values, and URLBytes and BodyBytes the whole URL's and body's sizes.
	Reason              string
	URLBytes, BodyBytes int
	// Expires is when the approval expires unanswered; zero: not shown.
	Expires time.Time
}

// PromptOf is the prompt p shows.
func PromptOf(p agent.ApprovalPrompt) Prompt {
	pr := Prompt{Tool: p.Tool, Owner: p.Key.Principal.User, Args: p.Detail.Args, ArgsOmitted: p.Detail.ArgsOmitted,
		Description: p.Description, Expires: p.ExpiresAt,
		Reason: p.Detail.Reason, URLBytes: p.Detail.URLBytes, BodyBytes: p.Detail.BodyBytes}
	if d := p.Detail; d.Host != "" {
		pr.Request = strings.TrimSpace(d.Method + " " + d.Host + d.Path)
	}
	return pr
}

// Markup is how a platform writes a prompt.
type Markup struct {
	// Bold renders s in bold.
	Bold func(s string) string
	// Mention renders a user id as a mention, or "" for what is not an id.
	Mention func(user string) string
	// Time renders when a prompt expires ("2026-12-01 15:04 UTC").
	Time func(t time.Time) string
	// Escape escapes text for the platform, inside code spans and blocks
	// too (Slack: & < >); nil leaves it as it is.
	Escape func(s string) string
	// Len measures text as the platform's limit counts it (bytes, runes);
	// it must be additive. nil counts bytes.
	Len func(s string) int
	// Limit bounds the whole text of a prompt or of its outcome.
	Limit int
}

func (m Markup) esc(s string) string {
	if m.Escape == nil {
		return s
	}
	return m.Escape(s)
}

func (m Markup) len(s string) int {
	if m.Len == nil {
		return len(s)
	}
	return m.Len(s)
}

// Ask is the text of the prompt, asking Owner to decide.
func (p Prompt) Ask(m Markup) string {
	owner := m.Mention(p.Owner)
	head := m.Bold("Approval needed")
	if owner != "" {
		head += " " + owner
	}
	tail := "Only " + cmp.Or(owner, "the person who started this conversation") + " can decide."
	if !p.Expires.IsZero() && m.Time != nil {
		tail += " Expires " + m.Time(p.Expires) + "."
	}
	return p.render(m, head+": the tool ", " wants to ", tail)
}

// Done is the text of the prompt once decided: what was asked and the
// outcome, by (a user id, "" for an expiry).
func (p Prompt) Done(m Markup, state agent.ApprovalState, by string) string {
	return p.render(m, "The tool ", " wanted to ", Outcome(m, state, by))
}

// Outcome is the line that says how an approval ended.
func Outcome(m Markup, state agent.ApprovalState, by string) string {
	who := m.Mention(by)
	switch state {
	case agent.ApprovalApproved:
		if who == "" {
			return "✅ Approved."
		}
		return "✅ Approved by " + who + "."
	case agent.ApprovalDenied:
		if who == "" {
			return "❌ Denied."
		}
		return "❌ Denied by " + who + "."
	case agent.ApprovalExpired:
		return "⌛ Expired without a decision; not run."
	}
	return "Decided: " + m.esc(string(state)) + "."
}

// render lays out a prompt: lead, the tool, verb and what it wants, the
// detail, then tail, within m.Limit. The arguments take what room is
// left; what does not fit is counted in a note.
func (p Prompt) render(m Markup, lead, verb, tail string) string {
	tool := m.span(p.Tool, 100)
	var what, detail string
	switch {
	case p.Request != "" && p.Reason != "":
		what, detail = "send data out:", m.span(p.Request, m.Limit/3)+"\n"+p.sizes()+
			"\nAsked because "+m.span(p.Reason, m.Limit/4)+"."
	case p.Request != "":
		what, detail = "send this request:", m.span(p.Request, m.Limit/3)
	case p.Args != "" || p.ArgsOmitted > 0:
		what = "run with these arguments:"
	default:
		what, detail = "do this:", m.span(cmp.Or(p.Description, "run tool "+p.Tool), m.Limit/3)
	}
	head := lead + tool + verb + what
	if detail != "" {
		return head + "\n" + detail + "\n" + tail
	}
	const open, close = "```\n", "\n```"
	total := p.ArgsOmitted + len(p.Args)
	room := m.Limit - m.len(head+"\n"+open+close+"\n"+tail) - m.len("\n"+More(total))
	shown, rest := fit(m, p.Args, room, jsonTicks)
	var b strings.Builder
	b.WriteString(head + "\n" + open + shown + close)
	if more := p.ArgsOmitted + rest; more > 0 {
		b.WriteString("\n" + More(more))
	}
	b.WriteString("\n" + tail)
	return b.String()
}

// sizes says how much a request of a tainted turn would send.
func (p Prompt) sizes() string {
	s := "The URL is " + thousands(p.URLBytes) + " bytes long"
	if p.BodyBytes > 0 {
		s += ", with a body of " + thousands(p.BodyBytes) + " bytes (not shown)"
	}
	return s + "."
}

// span renders s as a code span of at most room (as m measures it), cut
// with "…" when it does not fit.
func (m Markup) span(s string, room int) string {
	if s == "" {
		return "(none)"
	}
	shown, rest := fit(m, s, room-m.len("``…"), plainTicks)
	if rest > 0 {
		return "`" + shown + "…`"
	}
	return "`" + shown + "`"
}

// Ways to write a backtick inside code, where it would end the span or
// block: as a JSON escape inside the arguments (which are JSON, and mean
// the same with it), as a look-alike elsewhere.
const (
	jsonTicks  = `\u0060`
	plainTicks = "ˋ"
)

// fit escapes s, backticks written as ticks, up to room as m measures it.
// It returns the escaped text and how many bytes of s did not fit.
func fit(m Markup, s string, room int, ticks string) (string, int) {
	var b strings.Builder
	used := 0
	for i, c := range s {
		piece := string(c)
		if c == '`' {
			piece = ticks
		}
		piece = m.esc(piece)
		n := m.len(piece)
		if used+n > room {
			return b.String(), len(s) - i
		}
		used += n
		b.WriteString(piece)
	}
	return b.String(), 0
}

// More is the note that ends cut arguments: "… (1,234 more bytes)".
func More(n int) string {
	unit := " more bytes)"
	if n == 1 {
		unit = " more byte)"
	}
	return "… (" + thousands(n) + unit
}

// thousands writes n with a comma every three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
