package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// fiveParts is an answer that Slack gets in five messages of at most 200
// bytes, one paragraph each.
func fiveParts() (text string, parts []string) {
	for i := 1; i <= 5; i++ {
		parts = append(parts, fmt.Sprintf("Part %d: %s(end of part %d)", i, strings.Repeat("words to fill the paragraph ", 4), i))
	}
	return strings.Join(parts, "\n\n"), parts
}

// checkEachPartOnce checks that the chat.postMessage calls of fs (with
// previews) hold each part exactly once, in order, in channel C1's thread
// thread.
func checkEachPartOnce(t *testing.T, fs *fakeSlack, parts []string, thread string) {
	t.Helper()
	var got []string
	for _, m := range fs.messages("chat.postMessage") {
		if m.Channel != "C1" || m.Thread != thread {
			t.Errorf("a message went to %s/%s, want C1/%s", m.Channel, m.Thread, thread)
		}
		got = append(got, strings.TrimSpace(m.Text))
	}
	var shown []string
	for _, p := range parts {
		n := 0
		for _, g := range got {
			if g == p {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%.7q… posted %d times, want once", p, n)
		}
		if i := slices.Index(got, p); i >= 0 {
			shown = append(shown, got[i])
		}
	}
	if !slices.Equal(shown, parts) || len(got) != len(parts) {
		t.Errorf("posts, in order: %d of them (%.7q…), want the %d parts in order", len(got), got, len(parts))
	}
}

// startReplying starts a harness on fs and dbPath whose model answers
// text, with five-part replies posted without waiting, and sends it a
// mention in C1 that is answered in the thread 30.000100.
func startReplying(t *testing.T, fs *fakeSlack, dbPath, text string, stream bool) *harness {
	t.Helper()
	h := startHarness(t, harnessOptions{mode: ModeSocket, fs: fs, dbPath: dbPath, model: llmtest.Text(text), grace: 50 * time.Millisecond,
		tweak: func(a *Adapter) {
			a.Config.MaxMessageChars, a.Config.PostInterval = 200, time.Millisecond
			a.Config.StreamEdits, a.Config.StreamInterval = stream, 200*time.Millisecond
		}})
	return h
}

// A reply cut short by a crash after its second part (the third was never
// posted: Slack did not get it) continues after the restart with the third:
// each part is posted once, in order, in the thread.
func TestLongReplyResumedAfterRestart(t *testing.T) {
	fs := newFakeSlack(t)
	path := filepath.Join(t.TempDir(), "talon.db")
	text, parts := fiveParts()
	fs.postHang = "Part 3:"
	h1 := startReplying(t, fs, path, text, false)
	h1.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "30.000100", "", "<@UBOT> a long answer please")))
	waitHung(t, fs, "Part 3:")
	h1.stop()

	h2 := startReplying(t, fs, path, text, false)
	h2.idle(t)
	checkEachPartOnce(t, fs, parts, "30.000100")
	if left, err := h2.db.Undelivered(h2.ctx); err != nil || len(left) != 0 {
		t.Errorf("undelivered after the restart: %v, %v", left, err)
	}
}

// A crash between Slack posting a part and Talon recording it: the part is
// found again by its metadata after the restart, not posted a second time.
func TestLongReplyPartPostedButNotRecorded(t *testing.T) {
	fs := newFakeSlack(t)
	path := filepath.Join(t.TempDir(), "talon.db")
	text, parts := fiveParts()
	fs.postLost = "Part 3:"
	h1 := startReplying(t, fs, path, text, false)
	h1.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "31.000100", "", "<@UBOT> a long answer please")))
	waitHung(t, fs, "Part 3:")
	h1.stop()

	h2 := startReplying(t, fs, path, text, false)
	h2.idle(t)
	checkEachPartOnce(t, fs, parts, "31.000100")
	if !slices.Contains(fs.methodsCalled(), "conversations.replies") {
		t.Error("the thread was not read for parts already posted")
	}
}

// A streamed answer whose preview was posted when the process died (the
// edit of the preview into the first part never reached Slack) is
// finished after the restart by editing that preview, not left stale
// beside a second copy of the answer.
func TestStreamedPreviewFinishedAfterRestart(t *testing.T) {
	fs := newFakeSlack(t)
	path := filepath.Join(t.TempDir(), "talon.db")
	text, parts := fiveParts()
	fs.postHang = "(end of part 1)"
	h1 := startReplying(t, fs, path, text, true)
	h1.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "32.000100", "", "<@UBOT> stream a long answer")))
	waitHung(t, fs, "(end of part 1)")
	h1.stop()
	before := outgoing(fs)
	if len(before) == 0 || before[0].Method != "chat.postMessage" {
		t.Fatalf("calls before the restart = %+v, want the preview first", before)
	}
	preview := before[0]
	for _, c := range before {
		if c.TS != preview.TS || strings.Contains(c.Text, "(end of part 1)") {
			t.Fatalf("calls before the restart = %+v, want the preview and its edits only, never the whole part 1", before)
		}
	}

	h2 := startReplying(t, fs, path, text, true)
	h2.idle(t)
	type call struct{ Method, TS, Text string }
	var got []call
	for _, m := range outgoing(fs)[len(before):] {
		got = append(got, call{m.Method, m.TS, strings.TrimSpace(m.Text)})
	}
	want := []call{{"chat.update", preview.TS, parts[0]}}
	for i, p := range parts[1:] {
		if len(got) > i+1 {
			want = append(want, call{"chat.postMessage", got[i+1].TS, p})
		}
	}
	if !slices.Equal(got, want) || len(got) != len(parts) {
		t.Errorf("calls after the restart = %+v,\nwant %+v", got, want)
	}
}

// waitHung waits until the fake holds the post of text.
func waitHung(t *testing.T, fs *fakeSlack, text string) {
	t.Helper()
	select {
	case got := <-fs.hung:
		if !strings.Contains(got, text) {
			t.Fatalf("the fake held %.20q, want %q", got, text)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no post of %q in 15 s", text)
	}
}

// stallingTools offers one tool, "lookup": while started is set, a call
// signals it and then waits for the turn to end (the gateway stops in the
// middle of it); otherwise it answers "42".
type stallingTools struct{ started chan struct{} }

func (s *stallingTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "lookup", Description: "look something up", Parameters: json.RawMessage(`{"type":"object"}`)}}, nil
}

func (s *stallingTools) Run(ctx context.Context, _ agent.ToolCall) (agent.ToolResult, error) {
	if s.started == nil {
		return agent.ToolResult{Content: "42"}, nil
	}
	s.started <- struct{}{}
	<-ctx.Done()
	return agent.ToolResult{}, ctx.Err()
}

// A turn stopped while it streamed (its preview posted, a tool running)
// resumes after the restart and delivers its answer into that preview: the
// preview is not left showing the first words beside a second message.
func TestPreviewOfATurnInterruptedMidStreamIsItsReply(t *testing.T) {
	fs := newFakeSlack(t)
	path := filepath.Join(t.TempDir(), "talon.db")
	model := func(req llmtest.Request) llmtest.Response {
		if last := req.Messages[len(req.Messages)-1]; last.Role == llm.RoleTool {
			return llmtest.Response{Text: "The answer is " + last.Content + "."}
		}
		return llmtest.Response{Text: "Let me look that up for you.", ToolCalls: []llm.ToolCall{{ID: "c1", Name: "lookup", Arguments: `{}`}}}
	}
	start := func(tools agent.ToolRunner) *harness {
		return startHarness(t, harnessOptions{mode: ModeSocket, fs: fs, dbPath: path, model: model, grace: 50 * time.Millisecond,
			tweak: func(a *Adapter) {
				a.Config.StreamEdits, a.Config.StreamInterval = true, time.Millisecond
				a.Runtime.(*testRuntime).Tools = tools
			}})
	}
	started := make(chan struct{}, 1)
	h1 := start(&stallingTools{started: started})
	h1.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "33.000100", "", "<@UBOT> what is it?")))
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("the tool was never called")
	}
	h1.stop()
	before := outgoing(fs)
	if len(before) == 0 || before[0].Method != "chat.postMessage" {
		t.Fatalf("calls before the restart = %+v, want a preview posted", before)
	}
	preview := before[0].TS

	h2 := start(&stallingTools{})
	h2.idle(t)
	type call struct{ Method, TS, Text string }
	var got []call
	for _, m := range outgoing(fs)[len(before):] {
		got = append(got, call{m.Method, m.TS, m.Text})
	}
	// The call cut short is not run again: the model is told so, and
	// answers with what it was told.
	if len(got) != 1 || got[0].Method != "chat.update" || got[0].TS != preview || !strings.HasPrefix(got[0].Text, "The answer is ") {
		t.Errorf("calls after the restart = %+v,\nwant the preview %s edited into the answer, nothing posted", got, preview)
	}
}
