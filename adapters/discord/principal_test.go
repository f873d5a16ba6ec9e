package discord

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// TestOnePrincipalEverywhere: Discord user ids are global, so a person is
// the same principal in two servers and in a DM, and a secret they store
// from a server's form is theirs in the DM too.
func TestOnePrincipalEverywhere(t *testing.T) {
	const other = "301"
	frt := &fakeRuntime{}
	secrets := &recordingSecrets{}
	e := start(t, options{runtime: frt, secrets: secrets, config: func(c *Config) { c.AllowedGuilds = []string{guildID, other} }})

	inOther := inGuild("43", "501", "7", "hello from the other server", true)
	inOther.GuildID = other
	e.f.dispatch("MESSAGE_CREATE", inGuild("42", channelID, "7", "hello from a server", true))
	e.f.dispatch("MESSAGE_CREATE", inOther)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hello in a DM"))
	row := func(id, v string) map[string]any {
		return map[string]any{"type": 1, "components": []any{map[string]any{"type": 4, "custom_id": id, "value": v}}}
	}
	e.f.dispatch("INTERACTION_CREATE", map[string]any{
		"id": "903", "application_id": "200", "type": 5, "token": "tok-903", "guild_id": guildID, "channel_id": channelID,
		"member": map[string]any{"user": map[string]any{"id": "7", "username": "u"}, "roles": []string{}},
		"data": map[string]any{"custom_id": "talon:secret-add", "components": []any{
			row("name", "github"), row("value", "a-long-enough-value"), row("hosts", "api.github.com"), row("injection", ""),
		}},
	})
	waitFor(t, "three messages and the form", func() bool {
		frt.mu.Lock()
		n := len(frt.accepted)
		frt.mu.Unlock()
		secrets.mu.Lock()
		defer secrets.mu.Unlock()
		return n == 3 && len(secrets.owner) == 1
	})
	want := agent.Principal{Platform: Platform, User: "7"}
	frt.mu.Lock()
	var got []agent.Principal
	for _, in := range frt.accepted {
		got = append(got, in.Key.Principal)
	}
	frt.mu.Unlock()
	secrets.mu.Lock()
	got = append(got, secrets.owner...)
	secrets.mu.Unlock()
	if diff := cmp.Diff([]agent.Principal{want, want, want, want}, got); diff != "" {
		t.Errorf("principals of two servers, a DM and the form (-want +got):\n%s", diff)
	}
}
