package discord

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// fiveParts is an answer that Discord gets in five messages of at most 200
// characters, one paragraph each.
func fiveParts() (text string, parts []string) {
	for i := 1; i <= 5; i++ {
		parts = append(parts, fmt.Sprintf("Part %d: %s(end of part %d)", i, strings.Repeat("words to fill the paragraph ", 4), i))
	}
	return strings.Join(parts, "\n\n"), parts
}

// replyingOptions are the options of a gateway whose model answers text
// in five parts, on fake f and the database at path.
func replyingOptions(t *testing.T, f *fakeDiscord, path, text string, stream bool) options {
	return options{fakeDiscord: f, dbPath: path, handler: llmtest.Text(text),
		config: func(c *Config) {
			c.MaxMessageChars = 200
			c.StreamEdits, c.StreamInterval = stream, time.Second
		}}
}

// waitHung waits until the fake holds a write of text.
func waitHung(t *testing.T, f *fakeDiscord, text string) {
	t.Helper()
	select {
	case got := <-f.hung:
		if !strings.Contains(got, text) {
			t.Fatalf("the fake held %.20q, want %q", got, text)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no write of %q in 15 s", text)
	}
}

// idle waits until the runtime has answered and delivered everything.
func (e *env) idle() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	if err := e.rt.WaitIdle(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// checkEachPartOnce checks that the messages posted since from hold each
// part exactly once, in order, in the DM, and that only the first replies
// to the user's message 41.
func checkEachPartOnce(t *testing.T, posts []post, parts []string) {
	t.Helper()
	var got []string
	for i, p := range posts {
		c, _ := p.body["content"].(string)
		got = append(got, strings.TrimSpace(c))
		if p.channel != dmChannel {
			t.Errorf("post %d went to %s, want the DM %s", i, p.channel, dmChannel)
		}
		ref, _ := p.body["message_reference"].(map[string]any)
		if first := strings.HasPrefix(c, "Part 1:"); first != (ref != nil) || (ref != nil && ref["message_id"] != "41") {
			t.Errorf("post %d (%.7q…) replies to %v", i, c, p.body["message_reference"])
		}
	}
	if !slices.Equal(got, parts) {
		t.Errorf("posts: %d (%.7q…), want the %d parts, each once, in order", len(got), got, len(parts))
	}
}

// A reply cut short by a crash after its second part (the third never
// reached Discord) continues after the restart with the third: each part
// is posted once, in order, even when the restart comes after Discord's
// nonce window.
func TestLongReplyResumedAfterRestart(t *testing.T) {
	f := newFake(t)
	path := filepath.Join(t.TempDir(), "t.db")
	text, parts := fiveParts()
	f.postHang = "Part 3:"
	o := replyingOptions(t, f, path, text, false)
	e := start(t, o)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "a long answer please"))
	waitHung(t, f, "Part 3:")
	e.stop()
	f.forgetNonces()

	e = run(t, o)
	e.idle()
	checkEachPartOnce(t, f.postsSnapshot(), parts)
	if left, err := e.db.Undelivered(e.ctx); err != nil || len(left) != 0 {
		t.Errorf("undelivered after the restart: %v, %v", left, err)
	}
}

// A crash between Discord posting a part and Talon recording it, with the
// restart inside the nonce window: the part is sent again with its nonce,
// and Discord answers with the message it already has.
func TestLongReplyPartPostedButNotRecorded(t *testing.T) {
	f := newFake(t)
	path := filepath.Join(t.TempDir(), "t.db")
	text, parts := fiveParts()
	f.postLost = "Part 3:"
	o := replyingOptions(t, f, path, text, false)
	e := start(t, o)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "a long answer please"))
	waitHung(t, f, "Part 3:")
	e.stop()

	e = run(t, o)
	e.idle()
	checkEachPartOnce(t, f.postsSnapshot(), parts)
	f.mu.Lock()
	attempts := f.attempts
	f.mu.Unlock()
	if attempts != 6 {
		t.Errorf("%d message POSTs, want 6 (part 3 twice, the second answered from its nonce)", attempts)
	}
}

// A streamed answer whose preview was posted when the process died (the
// edit of the preview into the first part never reached Discord) is
// finished after the restart by editing that preview, not left stale
// beside a second copy of the answer.
func TestStreamedPreviewFinishedAfterRestart(t *testing.T) {
	f := newFake(t)
	path := filepath.Join(t.TempDir(), "t.db")
	text, parts := fiveParts()
	f.postHang = "(end of part 1)"
	o := replyingOptions(t, f, path, text, true)
	e := start(t, o)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "stream a long answer"))
	waitHung(t, f, "(end of part 1)")
	e.stop()
	f.forgetNonces()
	before := f.postsSnapshot()
	if len(before) != 1 {
		t.Fatalf("%d posts before the restart, want the preview only", len(before))
	}
	preview := before[0].id

	e = run(t, o)
	e.idle()
	edits := f.editsSnapshot()
	if len(edits) == 0 {
		t.Fatalf("no edit: the preview was left as it was (posts %q)", f.writesSnapshot())
	}
	last := edits[len(edits)-1]
	if c, _ := last.body["content"].(string); last.id != preview || strings.TrimSpace(c) != parts[0] {
		t.Errorf("last edit: %s to %.20q…, want the preview %s made part 1", last.id, c, preview)
	}
	after := f.postsSnapshot()[1:]
	var got []string
	for _, p := range after {
		c, _ := p.body["content"].(string)
		got = append(got, strings.TrimSpace(c))
	}
	if !slices.Equal(got, parts[1:]) {
		t.Errorf("posts after the restart: %.7q…, want parts 2 to 5 once each", got)
	}
}
