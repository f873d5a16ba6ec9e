package discord

import (
	"context"
	"strings"
	"testing"
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
