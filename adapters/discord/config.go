package discord

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
)

// Config configures the adapter. The token is given as a value here; the
// YAML configuration references it (${DISCORD_BOT_TOKEN}) and never holds
// it. Start from DefaultConfig: the zero Config refuses DMs, does not
// follow threads and starts none.
type Config struct {
	// Token is the bot token (with or without the "Bot " prefix); required.
	Token string
	// ApplicationID is the application (client) id. "" means it is taken
	// from the gateway's READY event (or ApplicationID asks the API).
	ApplicationID string
	// MessageContent requests the privileged MESSAGE_CONTENT intent. It must
	// also be enabled in the Developer Portal, or the gateway closes with
	// 4014. Without it the bot still reads DMs and messages that mention
	// it, but cannot follow threads without a mention.
	MessageContent bool
	// TrustedLinks are the hosts (egress.trusted_hosts) whose links in
	// the bot's messages Discord may embed. A message with any other link
	// (or none) is sent and edited with SUPPRESS_EMBEDS, so that Discord's
	// servers fetch no URL a prompt injection put data in. The zero value
	// embeds nothing.
	TrustedLinks agent.TrustedHosts

	// AllowDMs lets people talk to the bot in direct messages (default true
	// in DefaultConfig and in YAML).
	AllowDMs bool
	// AllowedGuilds are the server ids served; messages from any other
	// server are refused. Empty means guild messages are never answered.
	AllowedGuilds []string
	// AllowedChannels, when not empty, limits the guild channels (a thread
	// counts as its parent too) the bot answers in. DeniedChannels are never
	// answered in.
	AllowedChannels []string
	DeniedChannels  []string
	// AllowedRoles, when not empty, limits guild members to those holding
	// one of these role ids (DMs carry no roles and are not limited by it).
	AllowedRoles []string
	// AllowedUsers, when not empty, limits who may talk to the bot.
	// DeniedUsers may never. Admins always may (in an allowed guild or DM).
	AllowedUsers []string
	DeniedUsers  []string
	Admins       []string

	// FollowThreads starts a turn for a follow-up in a thread where the
	// sender mentioned the bot before, without a new mention (default true
	// in DefaultConfig and in YAML). Needs MessageContent to see the text.
	// A thread stays followed for a user until none of their messages
	// there has reached the bot for a day; with Adapter.Follows (the
	// gateway's database) it is remembered across restarts.
	FollowThreads bool
	// Threads answers a mention in a server text channel in a new public
	// thread started on the mentioning message (named after its first
	// words), so the conversation continues there (default true in
	// DefaultConfig and in YAML). It needs the Create Public Threads
	// permission; without it the bot answers in the channel instead.
	// Mentions in threads, DMs and channels whose type is not known yet are
	// answered in place.
	Threads bool
	// StreamEdits shows an answer while it is generated: the first words
	// are posted, the message is edited at most once per StreamInterval,
	// and the final answer replaces it (default false: see README.md).
	StreamEdits bool
	// StreamInterval is the least time between two edits of a streamed
	// answer (default 1.5 s; 1 s to 60 s). Discord allows about five edits
	// per five seconds in a channel, shared with every other reply there.
	StreamInterval time.Duration
	// Commands registers the /talon application command at start when it
	// differs from what Discord has (default true in DefaultConfig).
	Commands bool
	// MaxMessageChars bounds one posted message (default 1,900; at most
	// 2,000, Discord's limit).
	MaxMessageChars int
	// TypingInterval is how often the typing indicator (which lasts 10 s)
	// is refreshed while a turn runs (default 8 s).
	TypingInterval time.Duration
	// BackfillWindow: at start-up and after a reconnect, the channels
	// active within this window before the gap began are read back, and
	// the messages missed there that are younger than the window are
	// handled (default 1 h; negative disables backfill). With
	// Adapter.Cursors the channels are remembered across restarts.
	BackfillWindow time.Duration
	// BackfillLimit is how many messages per channel are read back (default
	// 50, at most 100).
	BackfillLimit int
	// Shards is how many shards the gateway is split into (default 1;
	// ShardsAuto: the count Discord recommends, from GET /gateway/bot).
	// Without Adapter.Shards this process connects every shard; with it,
	// the shards it holds.
	Shards int
}

// DefaultConfig returns the configuration defaults (token and guilds unset).
func DefaultConfig() Config {
	return Config{
		AllowDMs:        true,
		FollowThreads:   true,
		Threads:         true,
		Commands:        true,
		StreamInterval:  defaultStreamInterval,
		MaxMessageChars: defaultMessageChars,
		TypingInterval:  8 * time.Second,
		BackfillWindow:  time.Hour,
		BackfillLimit:   50,
	}
}

const (
	// discordMaxChars is Discord's limit on a message's content.
	discordMaxChars = 2000
	// defaultMessageChars leaves room below the limit.
	defaultMessageChars = 1900
	// defaultStreamInterval keeps streamed edits well inside Discord's
	// per-channel limit of about five edits in five seconds.
	defaultStreamInterval = 1500 * time.Millisecond
)

// withDefaults fills zero fields (except the bools) and validates, listing
// every problem at once.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	c.Token = strings.TrimSpace(c.Token)
	if c.Token == "" || c.Token == "Bot" {
		errs = append(errs, errors.New("discord.token: required"))
	}
	if c.MaxMessageChars <= 0 {
		c.MaxMessageChars = defaultMessageChars
	}
	if c.MaxMessageChars > discordMaxChars {
		errs = append(errs, fmt.Errorf("discord.max_message_chars %d: at most %d", c.MaxMessageChars, discordMaxChars))
	}
	if c.MaxMessageChars < 200 {
		errs = append(errs, errors.New("discord.max_message_chars: at least 200"))
	}
	if c.TypingInterval <= 0 {
		c.TypingInterval = 8 * time.Second
	}
	if c.TypingInterval > 9*time.Second {
		errs = append(errs, errors.New("discord.typing_interval: at most 9s (the indicator lasts 10s)"))
	}
	if c.StreamInterval == 0 {
		c.StreamInterval = defaultStreamInterval
	}
	if c.StreamInterval < time.Second || c.StreamInterval > time.Minute {
		errs = append(errs, fmt.Errorf("discord.stream_interval %s: between 1s and 1m", c.StreamInterval))
	}
	if c.BackfillWindow == 0 {
		c.BackfillWindow = time.Hour
	}
	if c.BackfillLimit <= 0 {
		c.BackfillLimit = 50
	}
	if c.BackfillLimit > 100 {
		errs = append(errs, errors.New("discord.backfill_limit: at most 100"))
	}
	for key, ids := range map[string][]string{
		"allowed_guilds": c.AllowedGuilds, "allowed_channels": c.AllowedChannels,
		"denied_channels": c.DeniedChannels, "allowed_roles": c.AllowedRoles,
		"allowed_users": c.AllowedUsers, "denied_users": c.DeniedUsers, "admins": c.Admins,
	} {
		for _, id := range ids {
			if !isSnowflake(id) {
				errs = append(errs, fmt.Errorf("discord.%s: %q is not a Discord id (digits only)", key, id))
			}
		}
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.Shards < ShardsAuto || c.Shards > maxShards {
		errs = append(errs, fmt.Errorf("discord.shards %d: auto, or 1 to %d", c.Shards, maxShards))
	}
	if c.ApplicationID != "" && !isSnowflake(c.ApplicationID) {
		errs = append(errs, fmt.Errorf("discord.application_id: %q is not a Discord id", c.ApplicationID))
	}
	return c, errors.Join(errs...)
}

// botToken returns the token as the Authorization header wants it.
func (c Config) botToken() string {
	if strings.HasPrefix(c.Token, "Bot ") {
		return c.Token
	}
	return "Bot " + c.Token
}

func isSnowflake(s string) bool {
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

// place is where a message or interaction came from, for the policy.
type place struct {
	guild   string // "" for DMs
	channel string
	parent  string // the parent channel when channel is a thread
	user    string
	roles   []string
}

// refusal returns "" when the sender may talk to the bot at p, else the
// reason told to them.
func (c Config) refusal(p place) string {
	if p.guild == "" {
		if !c.AllowDMs {
			return "this assistant does not answer direct messages. Mention it in a server channel instead."
		}
	} else if !slices.Contains(c.AllowedGuilds, p.guild) {
		return "this assistant is not enabled on this server. Ask an admin of this Talon gateway to add it."
	}
	if slices.Contains(c.Admins, p.user) {
		return ""
	}
	if slices.Contains(c.DeniedUsers, p.user) || (len(c.AllowedUsers) > 0 && !slices.Contains(c.AllowedUsers, p.user)) {
		return "you are not on the list of people this assistant serves. Ask an admin of this Talon gateway to add you."
	}
	if slices.Contains(c.DeniedChannels, p.channel) || (p.parent != "" && slices.Contains(c.DeniedChannels, p.parent)) {
		return "this assistant does not answer in this channel."
	}
	if p.guild != "" && len(c.AllowedChannels) > 0 &&
		!slices.Contains(c.AllowedChannels, p.channel) && (p.parent == "" || !slices.Contains(c.AllowedChannels, p.parent)) {
		return "this assistant does not answer in this channel. Try a DM or an allowed channel."
	}
	if p.guild != "" && len(c.AllowedRoles) > 0 && !slices.ContainsFunc(p.roles, func(r string) bool { return slices.Contains(c.AllowedRoles, r) }) {
		return "you do not hold a role this assistant serves. Ask an admin of this Talon gateway."
	}
	return ""
}
