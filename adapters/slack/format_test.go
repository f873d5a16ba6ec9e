package slack

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

func TestToMrkdwn(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"here", "ping <!here> now", "ping &lt;!here&gt; now"},
		{"channel and everyone", "<!channel> <!everyone>", "&lt;!channel&gt; &lt;!everyone&gt;"},
		{"user, channel, subteam", "<@U123> in <#C42|general> and <!subteam^S1|@ops>", "&lt;@U123&gt; in &lt;#C42|general&gt; and &lt;!subteam^S1|@ops&gt;"},
		{"ampersand", "a & b", "a &amp; b"},
		{"bold and italic", "**bold** and *it*", "*bold* and _it_"},
		{"strike", "~~gone~~", "~gone~"},
		{"heading", "## Title", "*Title*"},
		{"bullets", "- one\n* two", "• one\n• two"},
		{"link", "see [the docs](https://example.com/a?b=1&c=2)", "see <https://example.com/a?b=1&amp;c=2|the docs>"},
		{"link label cannot inject", "[<!here>](https://x.io)", "<https://x.io|&lt;!here&gt;>"},
		{"inline code kept", "use `**not bold** <x>`", "use `**not bold** &lt;x&gt;`"},
		{"fenced code kept", "```go\nif a && *b* {\n```", "```go\nif a &amp;&amp; *b* {\n```"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := toMrkdwn(c.in); got != c.want {
				t.Errorf("toMrkdwn(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

// longReply is about n characters of prose, code blocks in several
// languages (one longer than a message), and a line without spaces.
func longReply(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, "## Part %d\n\nSome **prose** with a [link](https://example.com/%d) & <!here> in it. %s\n\n", i, i, strings.Repeat("word ", 80))
		case 1:
			fmt.Fprintf(&b, "```go\n%s```\n\n", strings.Repeat(fmt.Sprintf("fmt.Println(%d) // a < b && c > d\n", i), 40))
		case 2:
			fmt.Fprintf(&b, "```python\n%s```\n\n", strings.Repeat("print('x' * 3)\n", 400)) // longer than one message
		case 3:
			fmt.Fprintf(&b, "%s\n\n", strings.Repeat("é&x", 1500)) // no spaces, multibyte, entities
		case 4:
			fmt.Fprintf(&b, "- item %d\n- item\n\n", i)
		}
	}
	return b.String()
}

// stripFences removes fence lines and newlines: what must survive a split.
func stripFences(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !isFenceLine(l) {
			b.WriteString(l)
		}
	}
	return b.String()
}

func checkParts(t *testing.T, rendered string, parts []string, limit int) {
	t.Helper()
	for i, p := range parts {
		if len(p) > limit {
			t.Errorf("part %d has %d bytes, limit %d", i, len(p), limit)
		}
		fences := 0
		for _, l := range strings.Split(p, "\n") {
			if isFenceLine(l) {
				fences++
			}
		}
		if fences%2 != 0 {
			t.Errorf("part %d has %d fence lines (unbalanced)", i, fences)
		}
		for _, bad := range []string{"&am\n", "&l\n", "&g\n"} {
			if strings.HasSuffix(p+"\n", bad) {
				t.Errorf("part %d ends inside an entity", i)
			}
		}
	}
	if got, want := stripFences(strings.Join(parts, "")), stripFences(rendered); got != want {
		t.Errorf("content changed by splitting: %d bytes, want %d", len(got), len(want))
	}
}

func newBareAdapter(t *testing.T, fs *fakeSlack) *Adapter {
	cfg := DefaultConfig()
	cfg.BotToken, cfg.AppToken, cfg.APIURL, cfg.AllowedTeams = "xoxb-t", "xapp-t", fs.apiURL(), []string{team}
	return &Adapter{Config: cfg, Log: zerolog.Nop()}
}

func TestDeliverLongReply(t *testing.T) {
	fs := newFakeSlack(t)
	ad := newBareAdapter(t, fs)
	clock := newFakeClock(0)
	ad.Now, ad.Sleep = clock.Now, clock.Sleep
	fs.setClock(clock)
	text := longReply(41000)
	id, err := ad.Deliver(context.Background(), agent.Reply{ID: 1, Kind: agent.ReplyAnswer, Text: text, ReplyTo: replyTo{Channel: "C1", Thread: "1.1"}.encode()})
	if err != nil {
		t.Fatal(err)
	}
	posts := fs.messages("chat.postMessage")
	if len(posts) < 11 || id != posts[0].TS {
		t.Fatalf("%d posts, id %q; want ≥ 11 and the first ts", len(posts), id)
	}
	var parts []string
	for _, p := range posts {
		if p.Channel != "C1" || p.Thread != "1.1" {
			t.Errorf("part posted to %s/%s", p.Channel, p.Thread)
		}
		parts = append(parts, p.Text)
	}
	checkParts(t, toMrkdwn(text), parts, maxMessageChars)
	if strings.Contains(strings.Join(parts, ""), "<!here>") {
		t.Error("a live <!here> was posted")
	}
	// Paced: a burst, then one part per PostInterval (on the fake clock).
	for i := 1; i < len(posts); i++ {
		gap := posts[i].At.Sub(posts[i-1].At)
		if i < postBurst && gap != 0 {
			t.Errorf("part %d waited %v within the burst", i+1, gap)
		}
		if i >= postBurst && gap < time.Second {
			t.Errorf("part %d came %v after the one before, want ≥ 1s", i+1, gap)
		}
	}
	if got, want := len(clock.slept()), len(posts)-postBurst; got != want {
		t.Errorf("%d waits for %d parts, want %d", got, len(posts), want)
	}
}

func TestDeliverHonoursRetryAfter(t *testing.T) {
	fs := newFakeSlack(t)
	fs.rateLimits = 1
	ad := newBareAdapter(t, fs)
	clock := newFakeClock(0)
	ad.Now, ad.Sleep = clock.Now, clock.Sleep
	_, err := ad.Deliver(context.Background(), agent.Reply{ID: 1, Kind: agent.ReplyAnswer, Text: "after the limit", ReplyTo: replyTo{Channel: "D1"}.encode()})
	if err != nil {
		t.Fatal(err)
	}
	if posts := fs.messages("chat.postMessage"); len(posts) != 1 || posts[0].Text != "after the limit" {
		t.Errorf("posts = %+v, want one", posts)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.rateLimits != 0 {
		t.Error("the 429 was never answered")
	}
	if diff := cmp.Diff([]time.Duration{time.Second}, clock.slept()); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
}

func TestCheck(t *testing.T) {
	fs := newFakeSlack(t)
	fs.scopes = "app_mentions:read,chat:write,im:history"
	ad := newBareAdapter(t, fs)
	rep, err := ad.Check(context.Background())
	if err == nil {
		t.Error("missing scopes were not an error")
	}
	want := []string{"assistant:write", "channels:history", "channels:read", "commands", "files:read", "files:write", "groups:history", "im:write", "mpim:history", "users:read"}
	if strings.Join(rep.Missing, ",") != strings.Join(want, ",") || !rep.SocketMode || rep.BotUserID != botUser {
		t.Errorf("report = %+v", rep)
	}
	// Each missing scope is named with what it breaks.
	for _, w := range []string{"channels:history (threads in public channels are not read before answering",
		"mpim:history (threads in group DMs are not read", "files:read (files people attach are not read)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q: %v", w, err)
		}
	}
	fs.mu.Lock()
	fs.scopes = "app_mentions:read,assistant:write,channels:history,channels:read,chat:write,commands,files:read,files:write,groups:history,im:history,im:write,mpim:history,users:read"
	fs.mu.Unlock()
	if rep, err := ad.Check(context.Background()); err != nil || len(rep.Missing) != 0 {
		t.Errorf("full scopes: %+v, %v", rep, err)
	}
}
