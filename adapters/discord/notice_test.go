package discord

import (
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
)

// A private notice (a connect link) for a turn started by a plain message
// in a server channel goes to the user's DM with the bot, embeds
// suppressed; the channel is told only the notice's public line, without
// the link. In the DM itself nothing else is said; a command whose token
// expired falls back to the DM too.
func TestNoticePrivatelyByDM(t *testing.T) {
	clock := newTestClock()
	e := start(t, options{now: clock.Now, runtime: &fakeRuntime{}})
	const link = "https://talon.example/oauth/start?state=s3cr3t-one-time"
	n := agent.Notice{Text: "Connect linear here: " + link, Public: "I've sent you a private link to connect linear."}
	key := agent.SessionKey{Principal: principal("7"), Conversation: agent.Conversation{Channel: channelID}}

	// A plain message in a server channel.
	if err := e.a.NoticePrivately(e.ctx, key, replyTo{channel: channelID, message: "801"}.String(), n); err != nil {
		t.Fatalf("NoticePrivately: %v", err)
	}
	posts := e.f.postsSnapshot()
	if len(posts) != 2 {
		t.Fatalf("posts = %+v, want the DM and the channel's note", posts)
	}
	dm, note := posts[0], posts[1]
	if dm.channel != "97" || dm.body["content"] != n.Text {
		t.Errorf("private post in %s: %v; want the text in user 7's DM (97)", dm.channel, dm.body["content"])
	}
	if flags, _ := dm.body["flags"].(float64); int(flags)&4 == 0 {
		t.Errorf("the DM's flags = %v, want SUPPRESS_EMBEDS (4): no preview may open a one-time link", dm.body["flags"])
	}
	if note.channel != channelID || note.body["content"] != n.Public {
		t.Errorf("channel post in %s: %v; want only the public line in %s", note.channel, note.body["content"], channelID)
	}
	for _, p := range posts[1:] {
		if c, _ := p.body["content"].(string); strings.Contains(c, "oauth/start") {
			t.Errorf("the link reached channel %s: %q", p.channel, c)
		}
	}

	// In the user's DM: the text there, and no note.
	dmKey := agent.SessionKey{Principal: principal("7"), Conversation: agent.Conversation{Channel: "97"}}
	if err := e.a.NoticePrivately(e.ctx, dmKey, replyTo{channel: "97", message: "802"}.String(), n); err != nil {
		t.Fatalf("NoticePrivately in the DM: %v", err)
	}
	if posts := e.f.postsSnapshot(); len(posts) != 3 || posts[2].channel != "97" || posts[2].body["content"] != n.Text {
		t.Errorf("posts after a notice in the DM = %+v, want one more, the text in 97", posts)
	}

	// A command whose interaction token is gone: the DM as well, not the
	// channel.
	clock.advance(20 * time.Minute)
	if err := e.a.NoticePrivately(e.ctx, key, replyTo{channel: channelID, interaction: "903"}.String(), n); err != nil {
		t.Fatalf("NoticePrivately after the token expired: %v", err)
	}
	posts = e.f.postsSnapshot()
	if len(posts) != 5 || posts[3].channel != "97" || posts[3].body["content"] != n.Text || posts[4].channel != channelID || posts[4].body["content"] != n.Public {
		t.Errorf("posts after an expired command = %+v, want the text in 97 and the note in %s", posts[3:], channelID)
	}
	if hooks := e.f.hooksSnapshot(); len(hooks) != 0 {
		t.Errorf("webhook follow-ups = %+v, want none without a token", hooks)
	}
}
