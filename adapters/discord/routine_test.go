package discord

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
)

// Before a routine's run the gateway asks whether it may still post: a
// channel Discord no longer shows the bot, an owner who left the server,
// and a channel the configuration now denies are each a reason, named;
// a channel and owner as they were, a thread of an allowed channel and a
// direct message are not.
func TestRoutineCheck(t *testing.T) {
	e := start(t, options{
		config: func(c *Config) { c.DeniedChannels = []string{"502"} },
		fake: func(f *fakeDiscord) {
			f.channels[channelID] = `{"id":"500","guild_id":"300","type":0}`
			f.channels["502"] = `{"id":"502","guild_id":"300","type":0}`
			f.channels["600"] = `{"id":"600","guild_id":"300","type":11,"parent_id":"500"}`
			f.channels["97"] = `{"id":"97","type":1}`
			f.members["7"] = nil
		},
	})
	ctx := context.Background()
	for _, c := range []struct {
		user, channel, want string
	}{
		{"7", channelID, ""},
		{"7", "600", ""},
		{"7", "97", ""},
		{"7", "501", "its channel is gone, or the bot was removed from it"},
		{"8", channelID, "its owner is no longer a member of the server"},
		{"7", "502", "the configuration no longer lets its owner use it there (this assistant does not answer in this channel)"},
	} {
		err := e.a.RoutineCheck(ctx, c.user, c.channel)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("user %s in %s: %v, want none", c.user, c.channel, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("user %s in %s: %v, want %q", c.user, c.channel, err, c.want)
		}
	}
}

// A routine that posts in a channel asks its owner for approvals in their
// DM with the bot, where the channel does not see the call's details, and
// the owner's click there decides; its answer is posted in the channel. A
// routine that posts in the DM keeps everything there.
func TestRoutineApprovalsGoToTheOwnersDM(t *testing.T) {
	owner := agent.Principal{Platform: Platform, User: "7"}
	frt := &fakeRuntime{owner: owner, state: map[agent.ApprovalID]agent.ApprovalState{12: agent.ApprovalPending}}
	e := start(t, options{runtime: frt, fake: func(f *fakeDiscord) {
		f.channels[channelID] = `{"id":"500","guild_id":"300","type":0}`
	}})
	channel, rt, err := e.a.RoutineTarget(e.ctx, "7", channelID, false)
	if err != nil || channel != channelID || rt != "m:500::97" {
		t.Fatalf("RoutineTarget = %q, %q, %v; want channel 500 with approvals in the DM 97", channel, rt, err)
	}
	key := agent.SessionKey{Principal: owner, Conversation: agent.Conversation{Channel: channelID, Thread: "routine-1"}}
	msg, err := e.a.AskApproval(e.ctx, agent.ApprovalPrompt{ID: 12, Key: key, ReplyTo: rt, Tool: "http_request",
		Description: "POST https://api.github.com/repos/o/r/issues", ExpiresAt: time.Unix(1700000000, 0)})
	if err != nil || !strings.HasPrefix(msg, "97/") {
		t.Fatalf("AskApproval = %q, %v; want a message in the DM 97", msg, err)
	}
	if _, err := e.a.Deliver(e.ctx, agent.Reply{ID: 1, Key: key, ReplyTo: rt, Kind: agent.ReplyAnswer, Text: "the run's answer"}); err != nil {
		t.Fatal(err)
	}
	posts := e.f.postsSnapshot()
	if len(posts) != 2 || posts[0].channel != "97" || posts[1].channel != channelID || posts[1].body["content"] != "the run's answer" {
		t.Errorf("posts: %+v; want the prompt in 97, then the answer in 500", posts)
	}
	if _, ok := posts[0].body["message_reference"]; ok {
		t.Errorf("the prompt in the DM refers to a message: %v", posts[0].body)
	}

	// A routine posting in the DM: no separate approvals channel.
	if _, rt, err := e.a.RoutineTarget(e.ctx, "7", "", true); err != nil || rt != "m:97:" {
		t.Errorf("RoutineTarget in the DM = %q, %v; want m:97:", rt, err)
	}
}
