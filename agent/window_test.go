package agent

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent/llm"
)

// histGen writes random session histories the way the runtime writes them:
// turns of a question, tool exchanges with parallel calls, and an answer,
// with the results of some calls missing (a crash, a failed turn) and, when
// corrupt is set, tool results that answer no call.
type histGen struct {
	rng     *rand.Rand
	corrupt bool
	next    int64 // last id given
	calls   int
	hist    []StoredMessage
}

func (g *histGen) add(m llm.Message) {
	g.next += int64(1 + g.rng.IntN(3)) // ids grow, not always by one
	g.hist = append(g.hist, StoredMessage{ID: g.next, Message: m})
}

// text is a content of random size: mostly short, sometimes thousands of
// bytes.
func (g *histGen) text(prefix string) string {
	n := g.rng.IntN(40)
	if g.rng.IntN(8) == 0 {
		n = g.rng.IntN(20000)
	}
	return filler[:len(prefix)+n] // no copy: thousands of histories are made
}

var filler = strings.Repeat("x", 20000)

func (g *histGen) question() { g.add(llm.Message{Role: llm.RoleUser, Content: g.text("q")}) }

// exchange adds an assistant message with 1 to 5 calls and their results,
// in any order, some of them missing.
func (g *histGen) exchange() {
	n := 1 + g.rng.IntN(5)
	if g.rng.IntN(4) == 0 {
		n = 1
	}
	calls := make([]llm.ToolCall, n)
	for i := range calls {
		g.calls++
		calls[i] = llm.ToolCall{ID: fmt.Sprintf("c%d", g.calls), Name: "tool", Arguments: `{"a":1}`}
	}
	g.add(llm.Message{Role: llm.RoleAssistant, Content: g.text(""), ToolCalls: calls})
	order := g.rng.Perm(n)
	missing := g.rng.IntN(10) == 0
	for _, i := range order {
		if missing && g.rng.IntN(2) == 0 {
			continue
		}
		g.add(llm.Message{Role: llm.RoleTool, ToolCallID: calls[i].ID, ToolName: "tool", Content: g.text("r")})
	}
	if g.corrupt && g.rng.IntN(6) == 0 {
		g.add(llm.Message{Role: llm.RoleTool, ToolCallID: "nobody", ToolName: "tool", Content: "orphan"})
	}
}

// turn adds a finished (or failed) turn.
func (g *histGen) turn() {
	g.question()
	for range g.rng.IntN(4) {
		g.exchange()
	}
	if g.rng.IntN(8) != 0 { // a failed turn has no answer
		g.add(llm.Message{Role: llm.RoleAssistant, Content: g.text("a")})
	}
}

func randomLimits(rng *rand.Rand) windowLimits {
	switch rng.IntN(4) {
	case 0: // tiny
		return windowLimits{Messages: 1 + rng.IntN(3), Tokens: 1 + rng.IntN(50)}
	case 1: // large
		return windowLimits{Messages: 100 + rng.IntN(1000), Tokens: 100000 + rng.IntN(1000000)}
	default:
		return windowLimits{Messages: 1 + rng.IntN(60), Tokens: 1 + rng.IntN(20000)}
	}
}

// checkWindow asserts what every window must be, whatever the history: not
// empty, starting with a user message (the current question), every tool
// call answered exactly once in the messages right after it and no other
// tool message, within the limits unless the question alone is not, and
// every message taken from hist except the results made up for calls that
// have none there.
func checkWindow(t *testing.T, hist []StoredMessage, w window, l windowLimits) {
	t.Helper()
	ms := w.Messages
	if len(ms) == 0 {
		t.Fatal("empty window")
	}
	if ms[0].Msg.Role != llm.RoleUser {
		t.Fatalf("window starts with a %s message", ms[0].Msg.Role)
	}
	var question windowMsg
	for _, m := range hist {
		if m.Message.Role == llm.RoleUser {
			question = windowMsg{m.ID, m.Message}
		}
	}
	if !slices.ContainsFunc(ms, func(m windowMsg) bool { return m.ID == question.ID }) {
		t.Fatalf("the current question (id %d) is not in the window", question.ID)
	}
	for i := 0; i < len(ms); i++ {
		m := ms[i].Msg
		if m.Role == llm.RoleTool {
			t.Fatalf("message %d: a tool result that follows no call", i)
		}
		if m.Role != llm.RoleAssistant || len(m.ToolCalls) == 0 {
			continue
		}
		want := map[string]bool{}
		for _, c := range m.ToolCalls {
			want[c.ID] = true
		}
		for range m.ToolCalls {
			i++
			if i >= len(ms) || ms[i].Msg.Role != llm.RoleTool || !want[ms[i].Msg.ToolCallID] {
				t.Fatalf("message %d: the calls of the assistant message are not all answered right after it", i)
			}
			delete(want, ms[i].Msg.ToolCallID)
		}
	}
	used := budget{}
	for _, m := range ms {
		used = used.plus(newUnit(unitUser, m))
	}
	if !used.within(windowLimits{max(l.Messages, 1), max(l.Tokens, 1)}) && len(ms) != 1 {
		t.Fatalf("window of %d messages, %d tokens exceeds %+v and is not the question alone", used.n, used.tokens, l)
	}
	byID := map[int64]llm.Message{}
	for _, m := range hist {
		byID[m.ID] = m.Message
	}
	for _, m := range ms {
		if m.ID == 0 {
			if m.Msg.Role != llm.RoleTool || m.Msg.Content != interruptedResult {
				t.Fatalf("a made-up message that is not an interrupted result: %+v", m.Msg)
			}
			continue
		}
		if !sameMsg(byID[m.ID], m.Msg) {
			diff := cmp.Diff(byID[m.ID], m.Msg)
			t.Fatalf("message %d differs from the history (-history +window):\n%s", m.ID, diff)
		}
	}
}

// partition merges, by history id, everything a sequence of builds
// summarised and the last window sent (its made-up results left out).
func partition(parts ...[]windowMsg) []windowMsg {
	var all []windowMsg
	for _, p := range parts {
		for _, m := range p {
			if m.ID != 0 {
				all = append(all, m)
			}
		}
	}
	slices.SortStableFunc(all, func(a, b windowMsg) int { return int(a.ID - b.ID) })
	return all
}

func asWindowMsgs(hist []StoredMessage) []windowMsg {
	out := make([]windowMsg, len(hist))
	for i, m := range hist {
		out[i] = windowMsg{m.ID, m.Message}
	}
	return out
}

// TestWindowProperties runs the context builder over thousands of random
// histories the way a session lives: turns of many steps, the window
// rebuilt for every model call, summaries folded (or failing) at random,
// and a summary point left at any message by an older version. After every
// build the window is valid (checkWindow), and what the session's summary
// took, what the turn's summary took, what this build summarises and the
// window together are the whole history, each message exactly once and as
// stored. A summary that failed moves nothing, so what it should have
// taken is summarised by a later build, never lost.
func TestWindowProperties(t *testing.T) {
	seed := uint64(20261201)
	rng := rand.New(rand.NewPCG(seed, 11))
	const sessions = 1000
	builds := 0
	for s := range sessions {
		g := &histGen{rng: rng, corrupt: s%5 == 0}
		for range rng.IntN(8) {
			g.turn()
		}
		// An older version may have left the summary point at any message.
		start := 0
		if len(g.hist) > 0 && rng.IntN(3) == 0 {
			start = rng.IntN(len(g.hist))
		}
		l := randomLimits(rng)
		var (
			compacted []windowMsg // what the session's summary took
			summaryAt = start     // index in g.hist of the first unsummarised message
		)
		for range 1 + rng.IntN(3) { // turns run by the runtime
			g.question()
			var (
				folded     []windowMsg // what this turn's summary took
				foldedUpTo int64
			)
			for range 1 + rng.IntN(8) { // steps of the turn
				hist := g.hist[summaryAt:]
				w := buildWindow(hist, foldedUpTo, llm.Message{Role: llm.RoleUser, Content: "fallback"}, l)
				builds++
				checkWindow(t, hist, w, l)
				if !g.corrupt && len(w.Skipped) > 0 {
					t.Fatalf("session %d: %d messages skipped in a history the runtime could write", s, len(w.Skipped))
				}
				got := partition(compacted, w.Compact, folded, w.Fold, w.Messages, w.Skipped)
				if want := asWindowMsgs(g.hist[start:]); !sameMsgs(want, got) {
					diff := cmp.Diff(want, got)
					t.Fatalf("session %d (seed %d): summaries + window != history (-history +got):\n%s", s, seed, diff)
				}
				if len(w.Compact) > 0 {
					n := len(partition(w.Compact))
					if !slices.Equal(ids(partition(w.Compact)), ids(asWindowMsgs(hist[:n]))) {
						t.Fatalf("session %d: the compacted part is not a prefix of the history", s)
					}
					if hist[n].Message.Role != llm.RoleUser {
						t.Fatalf("session %d: the summary point is not right before a user message", s)
					}
					if rng.IntN(5) != 0 { // else the summary failed: nothing moves
						compacted = append(compacted, w.Compact...)
						summaryAt += n
					}
				}
				if len(w.Fold) > 0 {
					if rng.IntN(5) != 0 {
						folded = append(folded, w.Fold...)
						foldedUpTo = w.FoldUpTo()
					}
				}
				g.exchange()
			}
			g.add(llm.Message{Role: llm.RoleAssistant, Content: g.text("a")})
		}
	}
	t.Logf("%d builds over %d random sessions (seed %d)", builds, sessions, seed)
}

// sameMsgs is cmp.Equal for windowMsg slices, fast enough for thousands
// of histories.
func sameMsgs(a, b []windowMsg) bool {
	return slices.EqualFunc(a, b, func(x, y windowMsg) bool { return x.ID == y.ID && sameMsg(x.Msg, y.Msg) })
}

func sameMsg(a, b llm.Message) bool {
	return a.Role == b.Role && a.Content == b.Content && a.ToolCallID == b.ToolCallID && a.ToolName == b.ToolName &&
		a.IsError == b.IsError && slices.Equal(a.ToolCalls, b.ToolCalls)
}

func ids(ms []windowMsg) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// A history with no user message at all (never written by the runtime)
// still gives a window: the question alone, everything else summarised.
func TestWindowWithoutQuestion(t *testing.T) {
	hist := []StoredMessage{
		{ID: 1, Message: llm.Message{Role: llm.RoleAssistant, Content: "hello"}},
		{ID: 2, Message: llm.Message{Role: llm.RoleTool, ToolCallID: "x", Content: "orphan"}},
	}
	q := llm.Message{Role: llm.RoleUser, Content: "the question"}
	w := buildWindow(hist, 0, q, windowLimits{Messages: 40, Tokens: 12000})
	if diff := cmp.Diff([]windowMsg{{Msg: q}}, w.Messages); diff != "" {
		t.Errorf("window (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(asWindowMsgs(hist), w.Compact); diff != "" {
		t.Errorf("compacted (-want +got):\n%s", diff)
	}
}
