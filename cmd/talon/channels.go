package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/talonhq/talon/adapters/discord"
	"github.com/talonhq/talon/adapters/slack"
	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/store"
)

// The database remembers the threads the channels follow and the Discord
// channels to read back (store may not import the adapters, so the
// assertions are here).
var (
	_ slack.FollowStore   = (*store.DB)(nil)
	_ discord.FollowStore = (*store.DB)(nil)
	_ discord.CursorStore = (*store.DB)(nil)
)

// channel is a configured platform channel, started by cmdRun.
type channel struct {
	name string
	// run serves until ctx ends.
	run func(ctx context.Context) error
	// mount, when set, adds the channel's HTTP endpoints to the gateway's
	// listener (Slack's Events API).
	mount func(mux *http.ServeMux)
	// onState, when set, hands the adapter the function it tells its
	// connection's state to (the console's Overview shows it).
	onState func(report func(state string))
}

// channels builds the configured Slack and Discord channels and registers
// them with the runtime. None configured means the terminal channel runs.
func (a *app) channels() ([]channel, error) {
	var chans []channel
	if sc := a.cfg.Slack; sc.Enabled {
		ad := a.slackAdapter()
		a.register(ad)
		ch := channel{name: "slack", run: ad.Run, onState: func(f func(string)) { ad.OnState = f }}
		if sc.Mode == config.SlackModeEvents {
			path := sc.EventsPath
			ch.mount = func(mux *http.ServeMux) { mux.Handle(path, ad.EventsHandler()) }
		}
		chans = append(chans, ch)
	}
	if a.cfg.Discord.Enabled {
		ad := newDiscordAdapter(a.cfg.Discord)
		ad.Config.TrustedLinks = a.trustedLinks()
		ad.Runtime, ad.Secrets = a.rt, a.secrets
		if a.db.gatewayStore != nil {
			ad.Follows = a.db // threads followed survive a restart
			ad.Cursors = a.db // so do the channels to read back
		}
		ad.Log = a.log.With().Str("platform", discord.Platform).Logger()
		a.memoryParents(discord.Platform, ad.ParentChannel) // a thread shares its channel's memory
		if a.cfg.NATS.Enabled() {
			ad.Shards = &appShards{a: a} // the replicas share the shards (cluster.go)
		}
		a.register(ad)
		chans = append(chans, channel{name: "discord", run: ad.Run, onState: func(f func(string)) { ad.OnState = f }})
	}
	return chans, nil
}

// slackAdapter builds the Slack adapter from the configuration. Its Runtime
// is a.rt when the runtime exists (doctor builds one without), its Follows
// the database when it is open.
func (a *app) slackAdapter() *slack.Adapter {
	ad := &slack.Adapter{
		Config:  slackConfig(a.cfg.Slack),
		Secrets: a.secrets,
		Log:     a.log.With().Str("platform", slack.Platform).Logger(),
	}
	ad.Config.TrustedLinks = a.trustedLinks()
	if a.rt != nil {
		ad.Runtime = a.rt
	}
	if a.db.gatewayStore != nil {
		ad.Follows = a.db // threads followed survive a restart
	}
	return ad
}

// trustedLinks are the hosts whose links in replies the platforms may
// unfurl: egress.trusted_hosts (validated when the configuration loaded;
// nothing is trusted should it not parse).
func (a *app) trustedLinks() agent.TrustedHosts {
	th, err := agent.ParseTrustedHosts(a.cfg.Egress.TrustedHosts)
	if err != nil {
		return agent.TrustedHosts{}
	}
	return th
}

// slackConfig maps the slack: section onto the adapter's configuration.
func slackConfig(c config.Slack) slack.Config {
	sc := slack.DefaultConfig()
	sc.Mode = c.Mode
	sc.BotToken = c.BotToken.Reveal()
	sc.AppToken = c.AppToken.Reveal()
	sc.SigningSecret = c.SigningSecret.Reveal()
	sc.APIURL = c.APIURL
	sc.AllowedTeams = c.AllowedTeams
	sc.AllowedChannels = c.AllowedChannels
	sc.DeniedChannels = c.DeniedChannels
	sc.AllowedUsers = c.AllowedUsers
	sc.DeniedUsers = c.DeniedUsers
	sc.Admins = c.Admins
	sc.AllowExternalUsers = c.AllowExternalUsers
	sc.FollowThreads = c.FollowThreads
	sc.StreamEdits = c.StreamEdits
	sc.MaxMessageChars = c.MaxMessageChars
	return sc
}

// newDiscordAdapter builds the Discord adapter from the configuration,
// without a runtime.
func newDiscordAdapter(c config.Discord) *discord.Adapter {
	ad := &discord.Adapter{Config: discordConfig(c)}
	if c.APIURL != config.DefaultDiscordAPIURL {
		ad.APIBase = c.APIURL
	}
	return ad
}

// discordConfig maps the discord: section onto the adapter's configuration.
func discordConfig(c config.Discord) discord.Config {
	dc := discord.DefaultConfig()
	dc.Token = c.Token.Reveal()
	dc.ApplicationID = c.ApplicationID
	dc.MessageContent = c.MessageContent
	dc.AllowDMs = c.AllowDMs
	dc.AllowedGuilds = c.AllowedGuilds
	dc.AllowedChannels = c.AllowedChannels
	dc.DeniedChannels = c.DeniedChannels
	dc.AllowedRoles = c.AllowedRoles
	dc.AllowedUsers = c.AllowedUsers
	dc.DeniedUsers = c.DeniedUsers
	dc.Admins = c.Admins
	dc.FollowThreads = c.FollowThreads
	dc.Commands = c.Commands
	dc.MaxMessageChars = c.MaxMessageChars
	dc.TypingInterval = c.TypingInterval.Std()
	dc.BackfillWindow = c.BackfillWindow.Std()
	if dc.BackfillWindow == 0 {
		dc.BackfillWindow = -1 // the adapter reads 0 as its default and a negative window as off
	}
	dc.BackfillLimit = c.BackfillLimit
	dc.Threads = c.Threads
	dc.StreamEdits = c.StreamEdits
	dc.StreamInterval = c.StreamInterval.Std()
	dc.Shards = int(c.Shards)
	if c.Shards == config.ShardsAuto {
		dc.Shards = discord.ShardsAuto
	}
	return dc
}

const discordUsage = `usage: talon discord invite-url [--client-id ID] [--config FILE]

invite-url prints the link that adds the bot to a server, with the scopes
bot and applications.commands and exactly the permissions Talon needs.
Without --client-id the id is discord.application_id, or is asked from
Discord with discord.token.`

// cmdDiscord runs the discord subcommands (invite-url).
func cmdDiscord(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"discord: missing subcommand\n\n" + discordUsage}
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "invite-url":
		return cmdDiscordInviteURL(ctx, e, rest)
	case "help", "-h", "--help":
		fmt.Fprintln(e.stdout, discordUsage)
		return nil
	default:
		return &usageError{fmt.Sprintf("discord: unknown subcommand %q\n\n%s", sub, discordUsage)}
	}
}

func cmdDiscordInviteURL(ctx context.Context, e env, args []string) error {
	var clientID string
	flagPath, err := parseFlags("discord invite-url", e, args, func(fs *flag.FlagSet) {
		fs.StringVar(&clientID, "client-id", "", "the application (client) id; default: discord.application_id, or the token's application")
	})
	if err != nil {
		return err
	}
	if clientID != "" {
		if !isDiscordID(clientID) {
			return &usageError{"discord invite-url: --client-id must be a Discord application id (digits only; Developer Portal → General Information → Application ID)"}
		}
		fmt.Fprintln(e.stdout, discord.InviteURL(clientID))
		return nil
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	id, err := discordClientID(ctx, cfg.Discord, newDiscordAdapter(cfg.Discord))
	if err != nil {
		return fmt.Errorf("discord invite-url: %w", err)
	}
	fmt.Fprintln(e.stdout, discord.InviteURL(id))
	return nil
}

// discordClientID is discord.application_id, or else the application of
// the token, asked through ad.
func discordClientID(ctx context.Context, dc config.Discord, ad *discord.Adapter) (string, error) {
	if dc.ApplicationID != "" {
		return dc.ApplicationID, nil
	}
	if dc.Token == "" {
		return "", errors.New("no --client-id given and discord.token is not configured; " +
			"pass --client-id (Developer Portal → General Information → Application ID) or set discord.token to ${DISCORD_BOT_TOKEN}")
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := ad.ApplicationID(cctx)
	if err != nil {
		return "", fmt.Errorf("could not learn the application id from discord.token (%w); pass --client-id instead", err)
	}
	return id, nil
}

func isDiscordID(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// checkFunc prints one doctor line: FAIL with err, or ok with detail.
type checkFunc func(name string, err error, detail string)

// doctorChannels runs the checks of every enabled channel.
func doctorChannels(ctx context.Context, cfg *config.Config, check checkFunc) {
	if cfg.Slack.Enabled {
		doctorSlack(ctx, cfg, check)
	}
	if cfg.Discord.Enabled {
		doctorDiscord(ctx, cfg.Discord, newDiscordAdapter(cfg.Discord), cfg.NATS.Enabled(), check)
	}
}

// doctorSlack checks the bot token (auth.test), its scopes against the
// manifest, the workspace allowlist and, in socket mode, the app token.
func doctorSlack(ctx context.Context, cfg *config.Config, check checkFunc) {
	c := cfg.Slack
	ad := &slack.Adapter{Config: slackConfig(c)}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rep, err := ad.Check(cctx)
	if rep.TeamID != "" {
		check("slack bot token", nil, fmt.Sprintf(": workspace %s (%s), bot user %s", rep.Team, rep.TeamID, rep.BotUserID))
		if len(rep.Missing) == 0 {
			check("slack scopes", nil, fmt.Sprintf(": the manifest's scopes are granted (%d in all)", len(rep.Granted)))
		}
		if rep.TeamAllowed {
			check("slack workspace", nil, ": "+rep.TeamID+" is in slack.allowed_teams")
		}
	}
	if rep.SocketMode {
		check("slack app token", nil, ": Socket Mode connections allowed")
	}
	for _, p := range rep.Problems {
		check("slack", errors.New(strings.TrimPrefix(p, "slack: ")), "")
	}
	if err != nil && len(rep.Problems) == 0 {
		check("slack", err, "")
	}
	if c.Mode == config.SlackModeEvents && cfg.HTTP.Listen != "" {
		check("slack events endpoint", nil, fmt.Sprintf(": POST %s on %s; make https://YOUR-HOST%s the Request URL of Event Subscriptions, Interactivity and /talon",
			c.EventsPath, cfg.HTTP.Listen, c.EventsPath))
	}
}

// doctorDiscord checks, through ad, the token, the Message Content intent
// when it is configured, and prints the invite link and the shards
// (shared: nats.url is set, so the replicas share them).
func doctorDiscord(ctx context.Context, c config.Discord, ad *discord.Adapter, shared bool, check checkFunc) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rep, err := ad.Check(cctx)
	if err != nil {
		check("discord", fmt.Errorf("could not ask Discord about the token: %w", err), "")
		return
	}
	if rep.TokenValid {
		check("discord token", nil, fmt.Sprintf(": bot %s (%s), application %s", rep.BotName, rep.BotID, rep.ApplicationID))
	}
	if c.MessageContent && rep.MessageContentIntent {
		check("discord message content intent", nil, ": enabled in the Developer Portal")
	}
	for _, p := range rep.Problems {
		check("discord", errors.New(p), "")
	}
	if rep.TokenValid && rep.ApplicationID != "" {
		check("discord invite link", nil, ": "+discord.InviteURL(rep.ApplicationID))
	}
	if rep.TokenValid {
		doctorShards(cctx, c, ad, shared, check)
	}
}

// doctorShards prints discord.shards, what Discord recommends, and who
// connects the shards.
func doctorShards(ctx context.Context, c config.Discord, ad *discord.Adapter, shared bool, check checkFunc) {
	rec, conc, err := ad.ShardAdvice(ctx)
	if err != nil {
		check("discord shards", err, "")
		return
	}
	who := "this process connects every shard"
	if shared {
		who = "the replicas share them through leases in NATS (nats.url); each connects its fair share, shard 0 first"
	}
	n := int(c.Shards)
	if c.Shards == config.ShardsAuto {
		n = rec
	}
	detail := fmt.Sprintf(": %s, so %d (Discord recommends %d; %d may identify at once); %s", c.Shards, n, rec, conc, who)
	if c.Shards != config.ShardsAuto && n < rec {
		detail += fmt.Sprintf("; below the recommendation Discord may close shards with 4011: set discord.shards: auto or %d", rec)
	}
	check("discord shards", nil, detail)
}
