package slack

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// threadOf3 is a Slack thread in C1 under parent 5.000000: n messages by
// three people (U1 is the one who will mention the bot), the parent
// first, from index first on. The third of them attaches a file.
func threadOf3(first, n int) []map[string]any {
	var out []map[string]any
	for i := first; i < first+n; i++ {
		m := map[string]any{"type": "message", "channel": "C1", "user": fmt.Sprintf("U%d", i%3+1),
			"text": fmt.Sprintf("line %d from <@U%d>", i, (i+1)%3+1), "ts": fmt.Sprintf("5.%06d", i), "thread_ts": "5.000000"}
		if i%3 == 2 {
			m["files"] = []map[string]any{{"id": "F1", "name": "trace.log", "mimetype": "text/plain", "size": 2048}}
		}
		out = append(out, m)
	}
	return out
}

func (f *fakeSlack) historyForms() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, v := range f.historyCalls {
		out = append(out, v.Encode())
	}
	return out
}

// A mention inside a thread of 60 messages by three people: the model
// request holds all 60, each once, with its author's display name and
// time, the mentioner's marked as theirs and files named; the thread is
// read in pages through conversations.replies. A follow-up reads only what
// is new since the mention (oldest = its ts), and the request holds every
// message once.
func TestThreadContextRead(t *testing.T) {
	fs := newFakeSlack(t)
	fs.mu.Lock()
	fs.users = map[string]slackUser{"U1": {name: "Alice", team: team}, "U2": {name: "Bob", team: team}, "U3": {name: "Carol", team: team}}
	fs.mu.Unlock()
	parent := map[string]any{"type": "message", "channel": "C1", "user": "U2", "text": "line 0 from Bob", "ts": "5.000000", "thread_ts": "5.000000"}
	fs.seed(parent)
	fs.seed(threadOf3(1, 59)...)
	// Pages of 25, so that the 60 take three.
	h := startHarness(t, harnessOptions{mode: ModeSocket, fs: fs, model: llmtest.Text("ok"), tweak: func(a *Adapter) { a.threadPage = 25 }})

	fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "5.000060", "5.000000", "<@UBOT> summarise this thread")))
	fs.waitAcks(t, "e1")
	h.idle(t)
	reqs := h.llm.Requests()
	if len(reqs) != 1 {
		t.Fatalf("model requests = %d, want 1", len(reqs))
	}
	q := reqs[0].LastUserText()
	names := map[int]string{0: "Alice (the user you are answering)", 1: "Bob", 2: "Carol"}
	for i := 1; i < 60; i++ {
		mention := map[int]string{0: "Alice", 1: "Bob", 2: "Carol"}[(i+1)%3]
		line := fmt.Sprintf("> line %d from @%s\n", i, mention)
		if n := strings.Count(q, line); n != 1 {
			t.Errorf("%q appears %d times, want once", line, n)
			continue
		}
		header := fmt.Sprintf("[%s %s", time.Unix(5, int64(i)*1000).UTC().Format("2006-01-02 15:04 UTC"), names[i%3])
		if i%3 == 2 {
			header += "] attached: trace.log (text/plain, 2.0 KB)"
		} else {
			header += "]"
		}
		if !strings.Contains(q, header+"\n"+line) {
			t.Errorf("message %d is not under %q", i, header)
		}
	}
	if strings.Count(q, "> line 0 from Bob\n") != 1 || !strings.HasSuffix(q, "The user's message:\nsummarise this thread") {
		t.Errorf("the parent is not quoted once before the user's message:\n%s", q)
	}
	forms := fs.historyForms()
	if len(forms) != 3 {
		t.Errorf("the thread of 60 was read in %d calls, want 3 pages of 25", len(forms))
	}
	for _, f := range forms {
		if !strings.Contains(f, "channel=C1") || !strings.Contains(f, "ts=5.000000") || !strings.Contains(f, "latest=5.000060") {
			t.Errorf("conversations.replies asked %s; want thread 5.000000 of C1 up to the mention", f)
		}
	}

	// Five more messages, then a follow-up mention.
	fs.seed(threadOf3(61, 5)...)
	fs.send(eventsEnvelope("e2", "Ev2", channelMsg("app_mention", "U1", "5.000066", "5.000000", "<@UBOT> and now?")))
	fs.waitAcks(t, "e2")
	h.idle(t)
	forms = fs.historyForms()
	if last := forms[len(forms)-1]; !strings.Contains(last, "oldest=5.000060") {
		t.Errorf("the follow-up read %s, want from the first mention on", last)
	}
	reqs = h.llm.Requests()
	last := reqs[len(reqs)-1]
	var all strings.Builder
	for _, m := range last.Messages {
		all.WriteString(m.Content + "\n")
	}
	for i := 0; i < 66; i++ {
		if i == 60 {
			continue
		}
		if n := strings.Count(all.String(), fmt.Sprintf("> line %d from ", i)); n != 1 {
			t.Errorf("after the follow-up, line %d appears %d times in the request, want once", i, n)
		}
	}
	if q := last.LastUserText(); strings.Contains(q, "> line 59 ") || strings.Contains(q, "> ok") || !strings.Contains(q, "> line 65 ") {
		t.Errorf("the follow-up's question holds other than the new messages:\n%s", q)
	}
}

// A pasted link to a message of the same channel adds that message; a
// link to another channel is not followed.
func TestThreadContextMessageLink(t *testing.T) {
	fs := newFakeSlack(t)
	fs.seed(map[string]any{"type": "message", "channel": "C1", "user": "U2", "text": "deploy failed: exit 3", "ts": "1700000004.000100"},
		map[string]any{"type": "message", "channel": "C9", "user": "U2", "text": "private plans", "ts": "1700000004.000200"})
	h := startHarness(t, harnessOptions{mode: ModeSocket, fs: fs, model: llmtest.Text("ok")})
	fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "6.000100", "", "<@UBOT> why? <https://acme.slack.com/archives/C1/p1700000004000100>")))
	fs.send(eventsEnvelope("e2", "Ev2", channelMsg("app_mention", "U1", "6.000200", "", "<@UBOT> and <https://acme.slack.com/archives/C9/p1700000004000200>")))
	fs.waitAcks(t, "e1", "e2")
	h.idle(t)
	var qs []string
	for _, r := range h.llm.Requests() {
		qs = append(qs, r.LastUserText())
	}
	// Two sessions (two threads): their turns run in parallel.
	if strings.Contains(qs[1], "why?") {
		slices.Reverse(qs)
	}
	if len(qs) != 2 {
		t.Fatalf("model requests = %d, want 2", len(qs))
	}
	if !strings.Contains(qs[0], "The message the user refers to") || !strings.Contains(qs[0], "> deploy failed: exit 3\n") {
		t.Errorf("the linked message is not in the question:\n%s", qs[0])
	}
	if strings.Contains(qs[1], "private plans") || !strings.Contains(qs[1], "another conversation; it was not read") {
		t.Errorf("a link to another channel was followed, or the model not told:\n%s", qs[1])
	}
	for _, f := range fs.historyForms() {
		if strings.Contains(f, "C9") {
			t.Errorf("another channel was read: %s", f)
		}
	}
}

// A thread that cannot be read (a scope missing) leaves the message
// answered without it, and the operator's log says which scopes to add.
func TestThreadContextMissingScope(t *testing.T) {
	fs := newFakeSlack(t)
	fs.historyDenied = true
	fs.seed(threadOf3(1, 3)...)
	h := startHarness(t, harnessOptions{mode: ModeSocket, fs: fs})
	fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "5.000010", "5.000000", "<@UBOT> hi")))
	fs.waitAcks(t, "e1")
	h.idle(t)
	if got := replies(fs); len(got) != 1 || !strings.HasSuffix(got[0].Text, "hi") {
		t.Errorf("replies = %+v, want the message answered", got)
	}
	if !strings.Contains(h.logs.String(), "channels:history") {
		t.Error("the log does not name the scope to add")
	}
}
