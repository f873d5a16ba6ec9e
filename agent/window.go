package agent

import (
	"github.com/talonhq/talon/agent/llm"
)

// This file is the context builder: it decides which part of a session's
// history a model call carries and which part is folded into a summary.
// It is a pure function of the history, so that property tests can check
// it over many random histories (window_test.go).
//
// The history is read as units the builder never splits:
//   - a user message;
//   - an assistant message without tool calls;
//   - a tool exchange: an assistant message with tool calls and, right
//     after it, one result per call. A call whose result is missing (the
//     process died, or the turn failed, before it was written) gets an
//     "interrupted" result made up here, marked synthetic;
//   - a tool result that answers no call right before it (an orphan). The
//     runtime never writes one; the builder can summarise it but never
//     sends it.
//
// A group is a user message and the units after it up to the next user
// message; units before the first user message form a leading group
// without a question (left by an older version that summarised up to any
// message). The current group is the last one: the question being answered
// and what the turn did so far.
//
// The window is the current question, a contiguous run of the current
// group's latest units, and, when the whole current group fits, the latest
// older groups that fit whole. So it is never empty, starts with a user
// message, and carries every tool call with its results. Everything else is
// summarised: older groups go to the session's summary (persisted; its
// point is always just before a user message), and the current group's
// earlier units go to the turn's summary (kept for the turn only, and made
// again from the history if the turn resumes after a restart).

// windowLimits bound a window: at most Messages messages and Tokens
// estimated tokens, unless the current question alone is larger.
type windowLimits struct {
	Messages int
	Tokens   int
}

// windowMsg is one message of a window or of a summary's input.
type windowMsg struct {
	// ID is the history row, or 0 for a synthetic message.
	ID  int64
	Msg llm.Message
}

// window is what the context builder decided for one model call.
type window struct {
	// Messages are sent to the model, in order.
	Messages []windowMsg
	// Compact are the oldest messages, whole groups, to fold into the
	// session's summary; the summary's point moves to the last of them.
	Compact []windowMsg
	// Fold are units of the current group, after the question and after
	// what the turn's summary covers already, to fold into the turn's
	// summary.
	Fold []windowMsg
	// Skipped are orphan tool results inside the window's span: they
	// cannot be sent and are not summarised.
	Skipped []windowMsg
}

// CompactUpTo is the history id the session's summary covers after
// Compact is folded into it; 0 when Compact is empty.
func (w window) CompactUpTo() int64 { return lastID(w.Compact) }

// FoldUpTo is the history id the turn's summary covers after Fold is
// folded into it; 0 when Fold is empty.
func (w window) FoldUpTo() int64 { return lastID(w.Fold) }

func lastID(ms []windowMsg) int64 {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].ID != 0 {
			return ms[i].ID
		}
	}
	return 0
}

type unitKind int

const (
	unitUser unitKind = iota
	unitAnswer
	unitExchange
	unitOrphan
)

type unit struct {
	kind unitKind
	msgs []windowMsg
	// n and tokens are what the unit costs in a window (an orphan costs
	// nothing: it is never sent).
	n, tokens int
}

// units reads hist as units, synthesising the results of unanswered calls.
func units(hist []StoredMessage) []unit {
	var out []unit
	for i := 0; i < len(hist); {
		m := hist[i]
		switch {
		case m.Message.Role == llm.RoleUser:
			out = append(out, newUnit(unitUser, windowMsg{m.ID, m.Message}))
			i++
		case m.Message.Role == llm.RoleAssistant && len(m.Message.ToolCalls) > 0:
			u := unit{kind: unitExchange, msgs: []windowMsg{{m.ID, m.Message}}}
			pending := make(map[string]bool, len(m.Message.ToolCalls))
			for _, c := range m.Message.ToolCalls {
				pending[c.ID] = true
			}
			i++
			for i < len(hist) && hist[i].Message.Role == llm.RoleTool && pending[hist[i].Message.ToolCallID] {
				delete(pending, hist[i].Message.ToolCallID)
				u.msgs = append(u.msgs, windowMsg{hist[i].ID, hist[i].Message})
				i++
			}
			for _, c := range m.Message.ToolCalls {
				if pending[c.ID] {
					delete(pending, c.ID)
					u.msgs = append(u.msgs, windowMsg{Msg: llm.Message{Role: llm.RoleTool, ToolCallID: c.ID, ToolName: c.Name, Content: interruptedResult, IsError: true}})
				}
			}
			out = append(out, u.costed())
		case m.Message.Role == llm.RoleTool:
			out = append(out, unit{kind: unitOrphan, msgs: []windowMsg{{m.ID, m.Message}}})
			i++
		default:
			out = append(out, newUnit(unitAnswer, windowMsg{m.ID, m.Message}))
			i++
		}
	}
	return out
}

func newUnit(k unitKind, m windowMsg) unit {
	return unit{kind: k, msgs: []windowMsg{m}}.costed()
}

func (u unit) costed() unit {
	if u.kind == unitOrphan {
		return u
	}
	u.n, u.tokens = len(u.msgs), 0
	for _, m := range u.msgs {
		u.tokens += messageTokens(m.Msg)
	}
	return u
}

// budget counts what a window holds so far.
type budget struct{ n, tokens int }

func (b budget) plus(u unit) budget { return budget{b.n + u.n, b.tokens + u.tokens} }

func (b budget) within(l windowLimits) bool { return b.n <= l.Messages && b.tokens <= l.Tokens }

// buildWindow decides the window of one model call over hist, the
// session's history after its summary point, oldest first. foldedUpTo is
// the last history id the turn's summary covers (0 for none): those units
// of the current group are neither sent nor folded again. question is sent
// alone if hist has no user message at all (which the runtime never
// writes: a turn's question is stored when it starts).
//
// When everything unsummarised fits within l, it is all sent. Otherwise the
// window is cut to about half of l (so that the next calls do not summarise
// again at once), keeping the latest tool exchange if it fits within l.
func buildWindow(hist []StoredMessage, foldedUpTo int64, question llm.Message, l windowLimits) window {
	l.Messages = max(l.Messages, 1)
	l.Tokens = max(l.Tokens, 1)
	us := units(hist)

	// The current question is the last user unit.
	cur := -1
	for i := len(us) - 1; i >= 0; i-- {
		if us[i].kind == unitUser {
			cur = i
			break
		}
	}
	if cur < 0 {
		var w window
		for _, u := range us {
			w.Compact = append(w.Compact, u.msgs...)
		}
		w.Messages = []windowMsg{{Msg: question}}
		return w
	}
	// The current group's units after the question: the first `folded` of
	// them are covered by the turn's summary already.
	rest := us[cur+1:]
	folded := 0
	for folded < len(rest) && foldedUpTo > 0 && lastID(rest[folded].msgs) != 0 && lastID(rest[folded].msgs) <= foldedUpTo {
		folded++
	}
	live := rest[folded:]
	// Older units start at the first user unit; any before it lead.
	first := 0
	for first < cur && us[first].kind != unitUser {
		first++
	}

	// keepFrom is the index in live of the first unit sent; keepOlder the
	// index in us of the first older unit sent (cur when none).
	keepFrom, keepOlder := 0, first
	all := budget{}
	for _, u := range us[first:cur] {
		all = all.plus(u)
	}
	all = all.plus(us[cur])
	for _, u := range live {
		all = all.plus(u)
	}
	if !all.within(l) {
		target := windowLimits{Messages: max(l.Messages/2, 1), Tokens: max(l.Tokens/2, 1)}
		used := budget{}.plus(us[cur])
		keepFrom = len(live)
		if keepFrom > 0 && used.plus(live[keepFrom-1]).within(l) {
			used = used.plus(live[keepFrom-1])
			keepFrom--
		}
		for keepFrom > 0 && used.plus(live[keepFrom-1]).within(target) {
			used = used.plus(live[keepFrom-1])
			keepFrom--
		}
		keepOlder = cur
		if keepFrom == 0 {
			// The whole current group is sent: add the latest older
			// groups that fit whole.
			for start := cur - 1; start >= first; start-- {
				if us[start].kind != unitUser {
					continue
				}
				g := used
				for _, u := range us[start:keepOlder] {
					g = g.plus(u)
				}
				if !g.within(target) {
					break
				}
				used, keepOlder = g, start
			}
		}
	}

	var w window
	for _, u := range us[:keepOlder] {
		w.Compact = append(w.Compact, u.msgs...)
	}
	send := func(u unit) {
		if u.kind == unitOrphan {
			w.Skipped = append(w.Skipped, u.msgs...)
			return
		}
		w.Messages = append(w.Messages, u.msgs...)
	}
	for _, u := range us[keepOlder:cur] {
		send(u)
	}
	send(us[cur])
	for _, u := range live[:keepFrom] {
		w.Fold = append(w.Fold, u.msgs...)
	}
	for _, u := range live[keepFrom:] {
		send(u)
	}
	return w
}
