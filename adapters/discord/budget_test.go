package discord

import (
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
)

// A server's monthly budget (budgets.workspace_monthly_tokens) bounds the
// turns run in that server: once one server has used it, everyone there
// is refused with the reset time, while another server and direct
// messages are answered; a DM is not counted to any server; /usage in a
// server shows the server's figure.
func TestServerBudgetPerGuild(t *testing.T) {
	const otherGuild, otherChannel = "301", "501"
	e := start(t, options{
		config: func(c *Config) { c.AllowedGuilds = []string{guildID, otherGuild} },
		setup: func(rt *agent.Runtime) {
			rt.Usage = rt.Store.(agent.UsageMeter)
			rt.Budgets = agent.Budgets{WorkspaceMonthly: 1}
		},
	})
	n := 0
	say := func(m msg) string {
		t.Helper()
		e.f.dispatch("MESSAGE_CREATE", m)
		n++
		got := e.replies(n)
		return got[n-1]
	}
	inOther := func(id, author, text string) msg {
		m := inGuild(id, otherChannel, author, text, true)
		m.GuildID = otherGuild
		return m
	}

	if got := say(inGuild("41", channelID, "7", "<@100> first", true)); got != "echo: first" {
		t.Fatalf("first message in the server: got %q", got)
	}
	used, err := e.db.ServerTokens(e.ctx, guildID, time.Now().AddDate(0, 0, -1))
	if err != nil || used < 1 {
		t.Fatalf("server %s used %d tokens (err %v), want the first turn's", guildID, used, err)
	}
	// Another person in the same server: the server's budget is spent.
	got := say(inGuild("42", channelID, "8", "<@100> second", true))
	now := time.Now().UTC()
	nextMonth := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0).Format("2006-01-02 15:04 MST")
	if !strings.Contains(got, "This server has used its token budget for this month") || !strings.Contains(got, "It resets on "+nextMonth) {
		t.Errorf("over-budget server: got %q, want the refusal with the reset time %s", got, nextMonth)
	}
	if got := say(inOther("43", "8", "<@100> elsewhere")); got != "echo: elsewhere" {
		t.Errorf("the other server: got %q, want an answer", got)
	}
	if got := say(dmFrom("44", "7", "in private")); got != "echo: in private" {
		t.Errorf("a DM: got %q, want an answer", got)
	}
	after, err := e.db.ServerTokens(e.ctx, guildID, time.Now().AddDate(0, 0, -1))
	if err != nil || after != used {
		t.Errorf("server %s after a refusal, another server and a DM: %d tokens (err %v), want %d", guildID, after, err, used)
	}
	other, err := e.db.ServerTokens(e.ctx, otherGuild, time.Now().AddDate(0, 0, -1))
	if err != nil || other < 1 {
		t.Errorf("server %s used %d tokens (err %v), want its turn's", otherGuild, other, err)
	}
	mine, err := e.db.PrincipalTokens(e.ctx, principal("7"), time.Now().AddDate(0, 0, -1))
	if err != nil || mine <= used {
		t.Errorf("user 7 used %d tokens (err %v), want the server turn's %d and the DM's", mine, err, used)
	}
	if got := say(inGuild("45", channelID, "7", "<@100> /usage", true)); !strings.Contains(got, "This server this month: ") || !strings.Contains(got, " of 1 tokens.") {
		t.Errorf("/usage in the server: got %q, want the server's figure", got)
	}
	if got := say(dmFrom("46", "7", "/usage")); strings.Contains(got, "This server") {
		t.Errorf("/usage in a DM: got %q, want no server figure", got)
	}
}
