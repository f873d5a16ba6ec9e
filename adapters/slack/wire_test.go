package slack

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// checkNoDoubleEscape fails when anything the fake Slack received carries
// an entity escaped twice (what Slack would show as "&lt;").
func checkNoDoubleEscape(t *testing.T, f *fakeSlack) {
	t.Helper()
	for _, m := range f.messages("") {
		for _, twice := range []string{"&amp;amp;", "&amp;lt;", "&amp;gt;", `\u0026amp;amp;`, `\u0026amp;lt;`, `\u0026amp;gt;`} {
			if strings.Contains(m.Text, twice) || strings.Contains(m.Blocks, twice) {
				t.Errorf("%s to %s escaped twice (%s): %q %q", m.Method, m.Channel, twice, m.Text, m.Blocks)
			}
		}
	}
}

// modelTexts returns the last user message of every model request.
func modelTexts(s *llmtest.Server) []string {
	var out []string
	for _, r := range s.Requests() {
		out = append(out, r.LastUserText())
	}
	return out
}

// TestSlackTextDecodedAndEncodedOnce: Slack's wire text reaches the model
// as the user typed it (entities decoded, a pasted URL exactly as pasted,
// mentions named), and the reply is escaped exactly once on the wire.
func TestSlackTextDecodedAndEncodedOnce(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.mu.Lock()
	h.fs.users = map[string]slackUser{"U2": {name: "Ada Lovelace", team: team}}
	h.fs.channels = map[string]string{"C9": "general"}
	h.fs.mu.Unlock()
	wire := "a &lt; b &amp;&amp; c <https://x.y/?a=1&amp;b=2> <@U2> <#C9> <#C7|random> <!here>"
	typed := "a < b && c https://x.y/?a=1&b=2 @Ada Lovelace #general #random @here"
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "20.000100", wire)))
	// A mention in a channel: the bot's own mention goes, the rest stays.
	h.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("app_mention", "U1", "20.000200", "", "<@UBOT> is 1 &lt; 2?")))
	h.fs.waitAcks(t, "e1", "e2")
	h.idle(t)

	if diff := cmp.Diff([]string{typed, "is 1 < 2?"}, modelTexts(h.llm), sortStrings); diff != "" {
		t.Errorf("what the model read (-want +got):\n%s", diff)
	}
	want := []posted{
		{Channel: "D1", Text: "echo: a &lt; b &amp;&amp; c https://x.y/?a=1&amp;b=2 @Ada Lovelace #general #random @here"},
		{Channel: "C1", Thread: "20.000200", Text: "echo: is 1 &lt; 2?"},
	}
	if diff := cmp.Diff(want, replies(h.fs), sortPosts); diff != "" {
		t.Errorf("replies on the wire (-want +got):\n%s", diff)
	}
	// What a Slack user sees: the wire text with its entities shown.
	var seen []string
	for _, p := range replies(h.fs) {
		seen = append(seen, decodeText(p.Text, botUser, nil))
	}
	if diff := cmp.Diff([]string{"echo: " + typed, "echo: is 1 < 2?"}, seen, sortStrings); diff != "" {
		t.Errorf("what Slack shows (-want +got):\n%s", diff)
	}
	checkNoDoubleEscape(t, h.fs)
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// TestModelReplyEscapedOnceOnEveryPath: a reply "a < b && c" shows exactly
// that in Slack whichever way it goes out: posted, streamed (previews and
// final edit), as an ephemeral answer to a slash command (response_url and
// chat.postEphemeral), and in an approval prompt and its outcome.
func TestModelReplyEscapedOnceOnEveryPath(t *testing.T) {
	const answer = "a < b && c > d, see [docs](https://x.y/?a=1&b=2)"
	const onWire = "a &lt; b &amp;&amp; c &gt; d, see <https://x.y/?a=1&amp;b=2|docs>"
	clock := newFakeClock(300 * time.Millisecond)
	h := newHarnessLLM(t, ModeSocket, llmtest.Text(answer), func(a *Adapter) {
		a.Config.StreamEdits, a.Config.StreamInterval = true, time.Second
		a.Now, a.Sleep = clock.Now, clock.Sleep
	})
	h.fs.setClock(clock)
	ev := dm("U1", "21.000200", "go")
	ev["thread_ts"] = "21.000100"
	h.fs.send(eventsEnvelope("e1", "Ev1", ev))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	calls := outgoing(h.fs)
	if len(calls) == 0 || calls[len(calls)-1].Text != onWire {
		t.Fatalf("streamed reply = %+v, want it to end as %q", calls, onWire)
	}
	for _, c := range calls {
		if !strings.HasPrefix(onWire, strings.TrimSpace(c.Text)) && !strings.HasPrefix(escape(answer), strings.TrimSpace(c.Text)) {
			t.Errorf("preview %q is not a beginning of the escaped answer", c.Text)
		}
	}

	// Ephemeral answers, through response_url and chat.postEphemeral.
	rep := agent.Reply{ID: 900, Text: answer, ReplyTo: replyTo{Channel: "C1", Ephemeral: "U1",
		ResponseURL: h.fs.responseURL("r1"), Until: clock.peek().Add(time.Hour).Unix()}.encode()}
	if _, err := h.ad.Deliver(h.ctx, rep); err != nil {
		t.Fatal(err)
	}
	rep.ID, rep.ReplyTo = 901, replyTo{Channel: "C1", Ephemeral: "U1"}.encode()
	if _, err := h.ad.Deliver(h.ctx, rep); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"response_url", "chat.postEphemeral"} {
		if got := h.fs.messages(method); len(got) != 1 || got[0].Text != onWire {
			t.Errorf("%s = %+v, want one message %q", method, got, onWire)
		}
	}

	// An approval prompt and its outcome.
	p := agent.ApprovalPrompt{ID: 7, Key: agent.SessionKey{Principal: agent.Principal{Platform: Platform, Workspace: team, User: "U1"}},
		ReplyTo: replyTo{Channel: "C1", Thread: "21.000100"}.encode(), Tool: "http_fetch", Description: "GET https://x.y/?a=1&b=2 (a < b)"}
	msg, err := h.ad.AskApproval(h.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	p.Message = msg
	if err := h.ad.ApprovalDone(h.ctx, p, agent.ApprovalApproved, p.Key.Principal); err != nil {
		t.Fatal(err)
	}
	for _, m := range h.fs.messages("") {
		if m.Blocks != "" && !strings.Contains(m.Text, "GET https://x.y/?a=1&amp;b=2 (a &lt; b)") {
			t.Errorf("approval %s = %q, want the request escaped once", m.Method, m.Text)
		}
	}
	checkNoDoubleEscape(t, h.fs)
}

// lookups returns the ids the fake's users.info and conversations.info
// were asked for.
func (f *fakeSlack) lookedUp() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lookups...)
}

// TestMentionNamesBoundedLookups: mentioned users are named through
// users.info, once (cached); a users.info that hangs or answers 429 costs
// the name (the id is shown), not the acknowledgement, and stops further
// lookups for a while.
func TestMentionNamesBoundedLookups(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.mu.Lock()
	h.fs.users = map[string]slackUser{"U2": {name: "Ada Lovelace", team: team}}
	h.fs.mu.Unlock()
	say := func(env, ts, text string) {
		t.Helper()
		h.fs.send(eventsEnvelope(env, "Ev"+env, dm("U1", ts, text)))
		h.fs.waitAcks(t, env)
		h.idle(t)
	}
	say("e1", "22.000100", "<@U2> and <@U2>, meet <@U404>")
	say("e2", "22.000200", "hello <@U2>")
	if diff := cmp.Diff([]string{"U2", "U404"}, h.fs.lookedUp(), sortStrings); diff != "" {
		t.Errorf("users.info calls (-want +got):\n%s", diff)
	}

	// users.info hangs: the message is acknowledged and answered anyway,
	// the user shown by id; then no lookups are made for a while.
	h.fs.mu.Lock()
	h.fs.lookupHang = true
	h.fs.mu.Unlock()
	say("e3", "22.000300", "ping <@U3>")
	h.fs.mu.Lock()
	h.fs.lookupHang = false
	h.fs.mu.Unlock()
	say("e4", "22.000400", "ping <@U4>")
	if got := h.fs.lookedUp(); len(got) != 3 || got[2] != "U3" {
		t.Errorf("users.info calls = %v, want U3 asked once and U4 not asked during the pause", got)
	}
	want := []string{"@Ada Lovelace and @Ada Lovelace, meet @U404", "hello @Ada Lovelace", "ping @U3", "ping @U4"}
	if diff := cmp.Diff(want, modelTexts(h.llm), sortStrings); diff != "" {
		t.Errorf("what the model read (-want +got):\n%s", diff)
	}
}

func TestMentionNamesRateLimited(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.mu.Lock()
	h.fs.lookup429 = true
	h.fs.mu.Unlock()
	for i, text := range []string{"hi <@U5>", "hi <#C5>"} {
		env := string(rune('a' + i))
		h.fs.send(eventsEnvelope(env, "Ev"+env, dm("U1", "23.00010"+env, text)))
		h.fs.waitAcks(t, env)
	}
	h.idle(t)
	if got := h.fs.lookedUp(); len(got) != 1 {
		t.Errorf("lookups = %v, want one, then none until Retry-After", got)
	}
	if diff := cmp.Diff([]string{"hi @U5", "hi #C5"}, modelTexts(h.llm), sortStrings); diff != "" {
		t.Errorf("what the model read (-want +got):\n%s", diff)
	}
	if !strings.Contains(h.adLogs.String(), "rate limited") {
		t.Error("the 429 was not logged")
	}
}
