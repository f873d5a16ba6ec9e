package discord

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

var noPing = map[string]any{"parse": []any{}, "replied_user": false}

// checkNoPings fails unless every message written (posted or edited) lets
// nobody be pinged.
func checkNoPings(t *testing.T, f *fakeDiscord) {
	t.Helper()
	f.mu.Lock()
	writes := append(append([]post(nil), f.posts...), f.edits...)
	f.mu.Unlock()
	for _, p := range writes {
		if diff := cmp.Diff(noPing, p.body["allowed_mentions"]); diff != "" {
			t.Errorf("%s allowed_mentions (-want +got):\n%s", p.path, diff)
		}
	}
}

// The real runtime streams the fake model's deltas: one message is posted
// with the first words, and (with an interval longer than the turn) the
// only edit is the final answer.
func TestStreamedAnswerThroughRuntime(t *testing.T) {
	const answer = "Streaming shows the answer word by word, @everyone included."
	e := start(t, options{
		handler: llmtest.Text(answer),
		config:  func(c *Config) { c.StreamEdits, c.StreamInterval = true, time.Minute },
	})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "stream please"))
	waitFor(t, "the final edit", func() bool { return len(e.f.editsSnapshot()) >= 1 })
	if err := e.rt.WaitIdle(e.ctx); err != nil {
		t.Fatal(err)
	}
	if reqs := e.llm.Requests(); len(reqs) != 1 || !reqs[0].Stream {
		t.Fatalf("model requests = %d (stream %v), want 1 streamed", len(reqs), len(reqs) == 1 && reqs[0].Stream)
	}
	posts, edits := e.f.postsSnapshot(), e.f.editsSnapshot()
	if len(posts) != 1 || len(edits) != 1 {
		t.Fatalf("%d posts and %d edits, want 1 and 1 (writes %q)", len(posts), len(edits), e.f.writesSnapshot())
	}
	first, _ := posts[0].body["content"].(string)
	if first == "" || len(first) >= len(answer) || !strings.HasPrefix(answer, first) {
		t.Errorf("streamed post = %q, want the first words of the answer", first)
	}
	if ref, _ := posts[0].body["message_reference"].(map[string]any); ref["message_id"] != "41" {
		t.Errorf("streamed post replies to %v, want message 41", posts[0].body["message_reference"])
	}
	if n, _ := posts[0].body["nonce"].(string); !strings.HasPrefix(n, "s") || posts[0].body["enforce_nonce"] != true {
		t.Errorf("streamed post nonce = %v, want an enforced stream nonce", posts[0].body["nonce"])
	}
	if got := edits[0].body["content"]; edits[0].id != posts[0].id || got != answer {
		t.Errorf("final edit of %s = %q, want %s = %q", edits[0].id, got, posts[0].id, answer)
	}
	checkNoPings(t, e.f)
}

// deliverTwice delivers r, then again as the runtime does after a failure
// it cannot see past (a crash before the reply was marked delivered): with
// the parts the first call recorded, resumed. The second call writes
// nothing. It returns what each call returned.
func deliverTwice(t *testing.T, e *env, r agent.Reply) []string {
	t.Helper()
	var (
		mu     sync.Mutex
		posted []agent.PostedPart
	)
	r.Record = func(_ context.Context, p agent.PostedPart) {
		mu.Lock()
		defer mu.Unlock()
		posted = append(posted, p)
	}
	first, err := e.a.Deliver(e.ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	writes := len(e.f.writesSnapshot())
	mu.Lock()
	r.Posted, r.Resumed = append([]agent.PostedPart(nil), posted...), true
	mu.Unlock()
	again, err := e.a.Deliver(e.ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if w := e.f.writesSnapshot(); len(w) != writes {
		t.Errorf("the second delivery wrote %q", w[writes:])
	}
	return []string{first, again}
}

// clock is a settable clock for the adapter.
type clock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = time.Unix(1700000000, 0).Add(d)
}

// Edits of a streamed answer are at most one per StreamInterval, by the
// adapter's clock; the final Deliver replaces the preview, and a second
// Deliver of the same reply (a crash before it was marked delivered)
// writes nothing new.
func TestStreamEditsAtMostOncePerInterval(t *testing.T) {
	clk := &clock{}
	clk.set(0)
	e := start(t, options{runtime: &fakeRuntime{}, now: clk.Now,
		config: func(c *Config) { c.StreamEdits, c.StreamInterval = true, 1500*time.Millisecond }})
	key := agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}}
	steps := []struct {
		at    time.Duration
		delta string
	}{
		{0, "Hello "},
		{500 * time.Millisecond, "big "},
		{time.Second, "wide "},
		{1600 * time.Millisecond, "world, "}, // 1.6 s after the post: edit
		{2 * time.Second, "once "},
		{3 * time.Second, "more "}, // 1.4 s after the edit: not yet
		{3200 * time.Millisecond, "\n```go\nx := 1\n"},
	}
	for _, s := range steps {
		clk.set(s.at)
		e.a.Stream(e.ctx, 5, key, "m:400:41", s.delta)
	}
	final := agent.Reply{ID: 9, Inbound: 5, Key: key, ReplyTo: "m:400:41", Kind: agent.ReplyAnswer,
		Text: "Hello big wide world, once more:\n\n```go\nx := 1\n```"}
	for _, id := range deliverTwice(t, e, final) {
		if want := e.f.postsSnapshot()[0].id; id != want {
			t.Errorf("Deliver = %s, want the streamed message %s", id, want)
		}
	}
	want := []string{
		"POST 400 Hello ",
		"PATCH 400 Hello big wide world, ",
		"PATCH 400 Hello big wide world, once more \n```go\nx := 1\n```", // the open fence closed
		"PATCH 400 " + final.Text,
	}
	if diff := cmp.Diff(want, e.f.writesSnapshot()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	checkNoPings(t, e.f)
}

// A final answer longer than one message replaces the preview with its
// first part and posts the others after it; a streamed preview never
// exceeds one message.
func TestStreamedLongAnswerSplits(t *testing.T) {
	e := start(t, options{runtime: &fakeRuntime{},
		config: func(c *Config) { c.StreamEdits, c.MaxMessageChars = true, 200 }})
	key := agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}}
	text := strings.Repeat("word ", 100)
	e.a.Stream(e.ctx, 5, key, "m:400:41", text)
	r := agent.Reply{ID: 9, Inbound: 5, Key: key, ReplyTo: "m:400:41", Text: text}
	deliverTwice(t, e, r)
	parts := splitMessage(text, 200)
	posts, edits := e.f.postsSnapshot(), e.f.editsSnapshot()
	if len(parts) < 3 || len(posts) != len(parts) || len(edits) != 1 {
		t.Fatalf("%d parts: %d posts and %d edits, want the preview plus %d posts and one edit", len(parts), len(posts), len(edits), len(parts)-1)
	}
	if p, _ := posts[0].body["content"].(string); len(p) > 200 {
		t.Errorf("preview has %d characters, more than a message", len(p))
	}
	var got []string
	got = append(got, edits[0].body["content"].(string))
	for _, p := range posts[1:] {
		got = append(got, p.body["content"].(string))
	}
	if diff := cmp.Diff(parts, got); diff != "" {
		t.Errorf("answer as shown (-want +got):\n%s", diff)
	}
}

// Without StreamEdits nothing is shown before the answer.
func TestStreamOffByDefault(t *testing.T) {
	e := start(t, options{runtime: &fakeRuntime{}})
	key := agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}}
	e.a.Stream(e.ctx, 5, key, "m:400:41", "Hello ")
	if _, err := e.a.Deliver(e.ctx, agent.Reply{ID: 9, Inbound: 5, Key: key, ReplyTo: "m:400:41", Text: "Hello"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"POST 400 Hello"}, e.f.writesSnapshot()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}

// More answers streamed at once than the adapter keeps do not make it
// forget the live ones: the first answer's preview is still edited into
// its reply, not posted again beside it (past 1,000 live streams they used
// to be wiped all at once).
func TestManyLiveStreamsKeepTheFirst(t *testing.T) {
	e := start(t, options{runtime: &fakeRuntime{},
		config: func(c *Config) { c.StreamEdits, c.StreamInterval = true, time.Minute }})
	key := agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}}
	e.a.Stream(e.ctx, 1, key, "m:400:41", "The first answer begins")
	// A thousand more answers start streaming (nothing to show yet).
	for id := range agent.InboundID(1001) {
		e.a.Stream(e.ctx, id+2, key, "m:400:42", " ")
	}
	if _, err := e.a.Deliver(e.ctx, agent.Reply{ID: 9, Inbound: 1, Key: key, ReplyTo: "m:400:41", Text: "The first answer, complete."}); err != nil {
		t.Fatal(err)
	}
	want := []string{"POST 400 The first answer begins", "PATCH 400 The first answer, complete."}
	if diff := cmp.Diff(want, e.f.writesSnapshot()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}
