package discord

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// With the command registration and a backfill stalled, one channel's
// message route answering 429 for seconds and refusal notices piling up
// there, a slash command and a button click are still acknowledged at once
// (within 500 ms of their dispatch, by the fake's clock), and the refused
// channel gets one notice attempt, not one per refused person.
func TestInteractionsAnsweredWhileAChannelIsRateLimited(t *testing.T) {
	const limitedChannel = "501"
	release := make(chan struct{})
	e := start(t, options{
		config: func(c *Config) { c.DeniedChannels = []string{limitedChannel} },
		fake: func(f *fakeDiscord) {
			f.limited[limitedChannel] = "4"
			f.stall["GET applications"] = release // the command registration
		},
	})
	t.Cleanup(func() { close(release) }) // before the adapter stops
	stalled := func(key string) func() bool {
		return func() bool {
			e.f.mu.Lock()
			defer e.f.mu.Unlock()
			return e.f.stalled[key] >= 1
		}
	}
	waitFor(t, "the registration stalled", stalled("GET applications"))
	// A gap (op 7) reads back the DM channel: the read back stalls too.
	e.f.dispatch("MESSAGE_CREATE", dmFrom("40", "7", "hello"))
	e.replies(1)
	e.f.mu.Lock()
	e.f.stall["GET channels"] = release
	e.f.mu.Unlock()
	e.f.sendOp(7, nil)
	waitFor(t, "the read back stalled", stalled("GET channels"))
	// Six people are refused in the rate-limited channel: before, each
	// refusal notice held a worker for seconds, retrying its 429.
	for i := range 6 {
		id, user := strconv.Itoa(41+i), strconv.Itoa(71+i)
		e.f.dispatch("MESSAGE_CREATE", inGuild(id, limitedChannel, user, "<@100> hello", true))
	}
	waitFor(t, "the first refusal notice tried", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.limitHits[limitedChannel] >= 1
	})
	e.f.dispatch("INTERACTION_CREATE", command("901", "help"))
	e.f.dispatch("INTERACTION_CREATE", click("902", "7", "talon:approve:12"))
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range []string{"901", "902"} {
		var cb *callback
		for cb == nil && time.Now().Before(deadline) {
			for _, c := range e.f.callbacksSnapshot() {
				if c.interaction == id {
					cb = &c
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if cb == nil {
			t.Fatalf("interaction %s never acknowledged", id)
		}
		e.f.mu.Lock()
		sent := e.f.sent[id]
		e.f.mu.Unlock()
		if took := cb.at.Sub(sent); took > 500*time.Millisecond {
			t.Errorf("interaction %s acknowledged %v after its dispatch, want within 500 ms", id, took)
		}
	}
	// The /talon help answer is deferred (type 5); the click on an
	// approval the runtime does not know is answered privately (type 4).
	types := map[string]int{}
	for _, c := range e.f.callbacksSnapshot() {
		types[c.interaction] = c.Type
	}
	if diff := cmp.Diff(map[string]int{"901": 5, "902": 4}, types); diff != "" {
		t.Errorf("callback types (-want +got):\n%s", diff)
	}
	e.f.mu.Lock()
	hits := e.f.limitHits[limitedChannel]
	delete(e.f.limited, limitedChannel)
	e.f.mu.Unlock()
	if hits != 1 {
		t.Errorf("%d refusal notices tried in the rate-limited channel, want 1 (one per channel per %v, none retried)", hits, refusalEvery)
	}
}

var slashWords = regexp.MustCompile(`/[a-z][a-z-]*(?: [a-z][a-z-]*)?`)

// /help through Discord names only the /talon subcommands registered with
// Discord, and every command it lists has one; /talon secrets and
// /talon secret-rm hint and work the same way.
func TestHelpNamesOnlyRegisteredSubcommands(t *testing.T) {
	vault := &recordingSecrets{}
	e := start(t, options{secrets: vault})
	waitFor(t, "command registration", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.puts == 1
	})
	e.f.mu.Lock()
	var registered []*discordgo.ApplicationCommand
	err := json.Unmarshal(e.f.commands, &registered)
	e.f.mu.Unlock()
	if err != nil || len(registered) != 1 {
		t.Fatalf("registered commands %v (%v), want /talon", registered, err)
	}
	subs := map[string]bool{}
	for _, o := range registered[0].Options {
		subs[o.Name] = true
	}

	answer := func(id, sub string, opts ...any) string {
		t.Helper()
		cmd := command(id, sub)
		if len(opts) > 0 {
			cmd["data"].(map[string]any)["options"].([]any)[0].(map[string]any)["options"] = opts
		}
		n := len(e.f.hooksSnapshot())
		e.f.dispatch("INTERACTION_CREATE", cmd)
		waitFor(t, sub+" answer", func() bool { return len(e.f.hooksSnapshot()) > n })
		return e.f.hooksSnapshot()[n].body["content"].(string)
	}
	help := answer("901", "help")
	hints := slashWords.FindAllString(help, -1)
	// Help names every subcommand but itself, and memory's two only when
	// the runtime has a memory (this one has none).
	if len(hints) < len(subs)-3 {
		t.Fatalf("help names %d commands, want about %d:\n%s", len(hints), len(subs), help)
	}
	for _, h := range hints {
		sub, ok := strings.CutPrefix(h, "/talon ")
		if !ok || !subs[sub] {
			t.Errorf("help names %q, which is not a registered /talon subcommand:\n%s", h, help)
		}
	}
	for _, c := range []agent.Command{agent.CommandNew, agent.CommandStatus, agent.CommandTools, agent.CommandSecrets,
		agent.CommandSecretAdd, agent.CommandSecretRemove, agent.CommandHelp} {
		if !strings.Contains(help, e.a.CommandHint(c)+":") {
			t.Errorf("help does not list %s as %q:\n%s", c, e.a.CommandHint(c), help)
		}
	}

	if got := answer("902", "secrets"); !strings.Contains(got, "/talon secret-add") {
		t.Errorf("/talon secrets with no secret = %q, want a hint naming /talon secret-add", got)
	}
	vault.mu.Lock()
	vault.added = append(vault.added, agent.NewSecret{Name: "github", Hosts: []string{"api.github.com"}})
	vault.mu.Unlock()
	if got := answer("903", "secret-rm", map[string]any{"name": "name", "type": 3, "value": "github"}); !strings.Contains(got, "Removed github") {
		t.Errorf("/talon secret-rm name:github = %q", got)
	}
	vault.mu.Lock()
	removed := vault.removed
	vault.mu.Unlock()
	if diff := cmp.Diff([]string{"github"}, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
}

// The signature that decides whether /talon is registered again covers
// the subcommands' options.
func TestCommandSignatureCoversOptions(t *testing.T) {
	t.Parallel()
	want := commandSignature([]*discordgo.ApplicationCommand{talonCommand()})
	changes := map[string]func(c *discordgo.ApplicationCommand){
		"an option removed": func(c *discordgo.ApplicationCommand) {
			for _, o := range c.Options {
				o.Options = nil
			}
		},
		"an option not required": func(c *discordgo.ApplicationCommand) {
			for _, o := range c.Options {
				for _, oo := range o.Options {
					oo.Required = false
				}
			}
		},
		"a subcommand removed": func(c *discordgo.ApplicationCommand) { c.Options = c.Options[:len(c.Options)-1] },
		"a description changed": func(c *discordgo.ApplicationCommand) {
			c.Options[0].Description += "!"
		},
	}
	for name, change := range changes {
		c := talonCommand()
		change(c)
		if commandSignature([]*discordgo.ApplicationCommand{c}) == want {
			t.Errorf("%s: same signature", name)
		}
	}
	// What Discord answers (a JSON round trip) has the same signature.
	b, err := json.Marshal([]any{talonCommand()})
	if err != nil {
		t.Fatal(err)
	}
	var back []*discordgo.ApplicationCommand
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := commandSignature(back); got != want {
		t.Errorf("signature after a round trip:\n%s\nwant\n%s", got, want)
	}
	// Every subcommand has a hint, and every hint names a subcommand.
	a := &Adapter{}
	for _, sc := range subcommands {
		if h := a.CommandHint(sc.cmd); !strings.HasPrefix(h, "/talon "+sc.name) {
			t.Errorf("hint for %s = %q", sc.cmd, h)
		}
	}
	names := []string{}
	for _, o := range talonCommand().Options {
		names = append(names, o.Name)
	}
	if !slices.Contains(names, "secret-rm") || !slices.Contains(names, "secret-add") {
		t.Errorf("subcommands = %v", names)
	}
	if got := a.CommandHint("no such command"); got != "" {
		t.Errorf("hint for an unknown command = %q, want \"\" (the runtime's default)", got)
	}
}

// Every log line of a conversation has one key per meaning: no "channel"
// (the platform or a channel id?) and one "message" (zerolog's text, never
// a message id); ids are channel_id and message_id. No line carries what a
// user wrote.
func TestLogKeysHaveOneMeaning(t *testing.T) {
	const secretText = "zebra quartz omega"
	e := start(t, options{config: func(c *Config) { c.DeniedUsers = []string{"66"} }})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", secretText))
	e.f.dispatch("MESSAGE_CREATE", inGuild("42", channelID, "7", "<@100> "+secretText+" in a channel", true))
	e.f.dispatch("MESSAGE_CREATE", dmFrom("43", "66", secretText+" from a refused user"))
	e.f.dispatch("MESSAGE_CREATE", dmFrom("44", "7", secretText+" twice"))
	e.f.dispatch("MESSAGE_CREATE", dmFrom("44", "7", secretText+" twice"))
	e.f.dispatch("INTERACTION_CREATE", command("901", "status"))
	e.replies(4)
	waitFor(t, "the status answer", func() bool { return len(e.f.hooksSnapshot()) == 1 })
	e.stop()

	logs := e.logs.String()
	if strings.Contains(logs, "zebra") {
		t.Errorf("a message body reached the log:\n%s", logs)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		keys, err := jsonKeys(line)
		if err != nil {
			t.Errorf("log line %q: %v", line, err)
			continue
		}
		count := map[string]int{}
		for _, k := range keys {
			count[k]++
			seen[k] = true
		}
		for k, n := range count {
			if n > 1 {
				t.Errorf("key %q %d times in %s", k, n, line)
			}
		}
		if count["channel"] > 0 {
			t.Errorf("key \"channel\" in %s: use platform or channel_id", line)
		}
	}
	for _, k := range []string{"channel_id", "message_id"} {
		if !seen[k] {
			t.Errorf("no line has %q: the conversation did not log what it should", k)
		}
	}
}

// jsonKeys returns the top-level keys of a JSON object, duplicates
// included (encoding/json keeps only the last).
func jsonKeys(line string) ([]string, error) {
	d := json.NewDecoder(strings.NewReader(line))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	var keys []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// A global rate limit (a 429 with X-RateLimit-Global) holds the bot's
// other REST calls until it resets, but Discord does not apply it to
// interaction endpoints: a slash command and a button click are still
// answered at once (within 500 ms of their dispatch), not after the
// reset, when Discord has long shown "This interaction failed".
func TestInteractionsAnsweredUnderAGlobalRateLimit(t *testing.T) {
	e := start(t, options{fake: func(f *fakeDiscord) {
		f.limited[dmChannel] = "3"
		f.global = true
	}})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hello"))
	waitFor(t, "the reply hit the global rate limit", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.limitHits[dmChannel] >= 1
	})
	e.f.dispatch("INTERACTION_CREATE", command("901", "help"))
	e.f.dispatch("INTERACTION_CREATE", click("902", "7", "talon:approve:12"))
	waitFor(t, "both interactions answered", func() bool { return len(e.f.callbacksSnapshot()) == 2 })
	for _, cb := range e.f.callbacksSnapshot() {
		e.f.mu.Lock()
		sent := e.f.sent[cb.interaction]
		e.f.mu.Unlock()
		if took := cb.at.Sub(sent); took > 500*time.Millisecond {
			t.Errorf("interaction %s answered %v after its dispatch, want within 500 ms", cb.interaction, took)
		}
	}
	e.f.mu.Lock()
	delete(e.f.limited, dmChannel)
	e.f.mu.Unlock()
	if got := e.replies(1); len(got) != 1 || got[0] != "echo: hello" {
		t.Errorf("reply after the rate limit = %q, want one \"echo: hello\"", got)
	}
}

// An interaction's token lets anyone holding it answer as the bot for 15
// minutes: it never reaches a log line, even when the request that
// carries it in its URL fails (here: cut short by a stop).
func TestInteractionTokenNeverLogged(t *testing.T) {
	release := make(chan struct{})
	e := start(t, options{fake: func(f *fakeDiscord) { f.stall["POST interactions"] = release }})
	defer close(release)
	e.f.dispatch("INTERACTION_CREATE", command("901", "help"))
	e.f.dispatch("INTERACTION_CREATE", click("902", "7", "talon:approve:12"))
	waitFor(t, "both answers stalled", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.stalled["POST interactions"] == 2
	})
	e.stop()
	logs := e.logs.String()
	for _, tok := range []string{"tok-901", "tok-902"} {
		if strings.Contains(logs, tok) {
			t.Errorf("interaction token %s in the log:\n%s", tok, logs)
		}
	}
	if !strings.Contains(logs, "901") || !strings.Contains(logs, "902") {
		t.Errorf("the failed answers are not logged by interaction id:\n%s", logs)
	}
}

// A /talon answer is private (ephemeral). When its interaction token is
// gone (Discord's 15 minutes passed, or Talon restarted in between), the
// answer goes to the user's DM with the bot, never into the server
// channel where everyone would read it.
func TestCommandAnswerWithoutTokenStaysPrivate(t *testing.T) {
	clock := newTestClock()
	frt := &fakeRuntime{}
	e := start(t, options{now: clock.Now, runtime: frt})
	answer := func(interaction, text string) {
		t.Helper()
		r := agentReply()
		n, _ := strconv.ParseInt(interaction, 10, 64)
		r.ID = agent.ReplyID(n)
		r.Key = agent.SessionKey{Principal: principal("7"), Conversation: agent.Conversation{Channel: channelID}}
		r.ReplyTo = replyTo{channel: channelID, interaction: interaction}.String()
		r.Text = text
		if _, err := e.a.Deliver(e.ctx, r); err != nil {
			t.Fatalf("deliver: %v", err)
		}
	}
	// Talon restarted since the command: no token at all.
	answer("901", "Your secrets: prod_db_password")
	// The token expired while the turn ran.
	g := command("902", "secrets")
	g["guild_id"], g["channel_id"] = guildID, channelID
	delete(g, "user")
	g["member"] = map[string]any{"user": map[string]any{"id": "7", "username": "u"}, "roles": []string{}}
	e.f.dispatch("INTERACTION_CREATE", g)
	waitFor(t, "the command accepted", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.accepted) == 1
	})
	clock.advance(15 * time.Minute)
	answer("902", "Your secrets: prod_db_password, again")

	var where []string
	for _, p := range e.f.postsSnapshot() {
		where = append(where, p.channel)
	}
	if diff := cmp.Diff([]string{"97", "97"}, where); diff != "" {
		t.Errorf("channels the answers went to (-want +got; 97 is user 7's DM):\n%s", diff)
	}
}
