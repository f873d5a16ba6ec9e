package discord

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent/llm"
)

// guildWithChannel tells the adapter (GUILD_CREATE) that channelID is a
// text channel.
func (e *env) guildWithChannel() {
	e.f.dispatch("GUILD_CREATE", map[string]any{
		"id": guildID, "name": "g",
		"channels": []any{map[string]any{"id": channelID, "type": 0, "guild_id": guildID}},
	})
	waitFor(e.t, "the channel in the gateway state", func() bool {
		ch, err := e.a.sess.State.Channel(channelID)
		return err == nil && ch != nil
	})
}

// A mention in a text channel starts a thread on it, the answer goes in the
// thread, and a follow-up there without a mention continues the same
// session.
func TestMentionStartsThreadAndFollowUpSharesSession(t *testing.T) {
	e := start(t, options{config: func(c *Config) { c.MessageContent = true }})
	e.guildWithChannel()
	e.f.dispatch("MESSAGE_CREATE", inGuild("41", channelID, "7", "<@100> plan a trip to Lisbon in May, with trains only and no flights please", true))
	e.replies(1)
	threads := e.f.threadsSnapshot()
	if len(threads) != 1 {
		t.Fatalf("%d threads started, want 1", len(threads))
	}
	if got, want := threads[0].path, "channels/500/messages/41/threads"; got != want {
		t.Errorf("thread started with %s, want %s", got, want)
	}
	if got, want := threads[0].body["name"], "plan a trip to Lisbon in May, with trains only and no…"; got != want {
		t.Errorf("thread name = %q, want %q", got, want)
	}

	// The follow-up: in the thread (whose id is the message's), no mention.
	e.f.dispatch("MESSAGE_CREATE", inGuild("42", "41", "7", "and back in June", false))
	got := e.replies(2)
	if diff := cmp.Diff([]string{
		"echo: plan a trip to Lisbon in May, with trains only and no flights please",
		"echo: and back in June",
	}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
	for i, p := range e.f.postsSnapshot() {
		if p.channel != "41" {
			t.Errorf("reply %d posted in %s, want the thread 41", i+1, p.channel)
		}
	}
	if n := len(e.f.threadsSnapshot()); n != 1 {
		t.Errorf("%d threads started, want still 1", n)
	}
	// The second turn saw the first exchange: one session.
	reqs := e.llm.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests, want 2", len(reqs))
	}
	var history []string
	for _, m := range reqs[1].Messages {
		history = append(history, string(m.Role)+": "+m.Content)
	}
	want := []string{
		string(llm.RoleUser) + ": plan a trip to Lisbon in May, with trains only and no flights please",
		string(llm.RoleAssistant) + ": echo: plan a trip to Lisbon in May, with trains only and no flights please",
		string(llm.RoleUser) + ": and back in June",
	}
	if diff := cmp.Diff(want, history); diff != "" {
		t.Errorf("second turn's history (-want +got):\n%s", diff)
	}
	checkNoPings(t, e.f)
}

// Without the Create Public Threads permission (or with threads off) the
// mention is answered in the channel, replying to it.
func TestMentionAnsweredInChannelWithoutThread(t *testing.T) {
	cases := []struct {
		name    string
		threads bool
		status  int
	}{
		{"permission missing", true, 403},
		{"threads off", false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, options{
				config: func(cfg *Config) { cfg.Threads = c.threads },
				fake:   func(f *fakeDiscord) { f.threadErr = c.status },
			})
			e.guildWithChannel()
			e.f.dispatch("MESSAGE_CREATE", inGuild("41", channelID, "7", "<@100> hi", true))
			if diff := cmp.Diff([]string{"echo: hi"}, e.replies(1)); diff != "" {
				t.Fatalf("replies (-want +got):\n%s", diff)
			}
			p := e.f.postsSnapshot()[0]
			ref, _ := p.body["message_reference"].(map[string]any)
			if p.channel != channelID || ref["message_id"] != "41" {
				t.Errorf("reply in %s replying to %v, want in %s replying to 41", p.channel, p.body["message_reference"], channelID)
			}
		})
	}
}

func TestThreadName(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"short", "what is up", "what is up"},
		{"mentions and emoji removed", "<@200> look at <#300> <:party:123> now", "look at now"},
		{"whitespace collapsed", "a\n\nb\tc", "a b c"},
		{"nothing left", "<@200>", "Talon"},
		{"one long word", strings.Repeat("abcdefghij", 7), strings.Repeat("abcdefghij", 5) + "abcdefghi…"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := threadName(c.text); got != c.want {
				t.Errorf("threadName(%q) = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

// Past maxThreadStarts the oldest planned threads are forgotten, never the
// recent ones whose answers are being written (the map used to be cleared
// whole, and a follow-up in a thread just started looked unknown).
func TestThreadStartsForgetOldestFirst(t *testing.T) {
	defer func(n int) { maxThreadStarts = n }(maxThreadStarts)
	maxThreadStarts = 3
	a := &Adapter{}
	a.init()
	for _, m := range []string{"m1", "m2", "m3"} {
		a.planThread("c", m, "hello")
	}
	a.threads["m3"].done.Store(true) // m3's thread exists
	a.planThread("c", "m4", "hello")
	a.planThread("c", "m5", "hello")
	if got := a.startedThread("m3"); got != "c" {
		t.Errorf("startedThread(m3) = %q after two newer mentions, want its parent c", got)
	}
	if got := a.ParentChannel("m3"); got != "c" {
		t.Errorf("ParentChannel(m3) = %q, want its parent c", got)
	}
	if got := a.ParentChannel("c"); got != "c" {
		t.Errorf("ParentChannel(c) = %q, want c itself", got)
	}
	for _, m := range []string{"m1", "m2"} {
		if _, ok := a.threads[m]; ok {
			t.Errorf("%s still remembered; the oldest should go first", m)
		}
	}
	if len(a.threads) != 3 {
		t.Errorf("%d threads remembered, want the bound, 3", len(a.threads))
	}
	for i := range 100 {
		a.planThread("c", "x"+strings.Repeat("y", i), "hello")
	}
	if len(a.threads) != 3 || len(a.threadOrder) != 3 {
		t.Errorf("after 100 more: %d threads, %d in order, want 3 and 3", len(a.threads), len(a.threadOrder))
	}
}
