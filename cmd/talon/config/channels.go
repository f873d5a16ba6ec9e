package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Slack transport modes of Slack.Mode.
const (
	SlackModeSocket = "socket"
	SlackModeEvents = "events"
)

// DefaultSlackAPIURL is Slack's own Web API base URL.
const DefaultSlackAPIURL = "https://slack.com/api/"

// DefaultDiscordAPIURL is Discord's own REST API host.
const DefaultDiscordAPIURL = "https://discord.com"

// Slack configures the Slack channel (adapters/slack). Its tokens are
// Secrets and are meant to be references (${SLACK_BOT_TOKEN}), never
// literal values in the file.
type Slack struct {
	// Enabled serves Slack from talon run; false leaves the section unused.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Mode is socket (Socket Mode: an outbound WebSocket, no public URL) or
	// events (Slack POSTs to EventsPath on http.listen).
	Mode string `yaml:"mode" json:"mode"`
	// BotToken is the bot's xoxb- token.
	BotToken Secret `yaml:"bot_token" json:"bot_token"`
	// AppToken is the app-level xapp- token (scope connections:write); socket
	// mode only.
	AppToken Secret `yaml:"app_token" json:"app_token"`
	// SigningSecret verifies Slack's HTTP requests; events mode only.
	SigningSecret Secret `yaml:"signing_secret" json:"signing_secret"`
	// APIURL is the Web API base URL (GovSlack workspaces use another host).
	APIURL string `yaml:"api_url" json:"api_url"`
	// AllowedTeams are the workspace (T…) or Enterprise Grid (E…) ids
	// served; required when enabled.
	AllowedTeams []string `yaml:"allowed_teams" json:"allowed_teams"`
	// AllowedChannels, when not empty, limits the channels (not DMs)
	// answered in; DeniedChannels are never answered in.
	AllowedChannels []string `yaml:"allowed_channels" json:"allowed_channels"`
	DeniedChannels  []string `yaml:"denied_channels" json:"denied_channels"`
	// AllowedUsers, when not empty, limits who may talk to the bot;
	// DeniedUsers may never; Admins always may.
	AllowedUsers []string `yaml:"allowed_users" json:"allowed_users"`
	DeniedUsers  []string `yaml:"denied_users" json:"denied_users"`
	Admins       []string `yaml:"admins" json:"admins"`
	// AllowExternalUsers serves Slack Connect guests: people in a shared
	// channel whose own workspace is not in AllowedTeams.
	AllowExternalUsers bool `yaml:"allow_external_users" json:"allow_external_users"`
	// FollowThreads answers follow-ups in a thread where the sender already
	// talked to the bot, without a new mention.
	FollowThreads bool `yaml:"follow_threads" json:"follow_threads"`
	// StreamEdits shows answers while they are generated, by editing the
	// posted message about once a second.
	StreamEdits bool `yaml:"stream_edits" json:"stream_edits"`
	// MaxMessageChars bounds one posted message; longer replies are split.
	MaxMessageChars int `yaml:"max_message_chars" json:"max_message_chars"`
	// EventsPath is where events mode receives Slack's requests on
	// http.listen.
	EventsPath string `yaml:"events_path" json:"events_path"`
}

// Discord configures the Discord channel (adapters/discord). Its token is a
// Secret and is meant to be a reference (${DISCORD_BOT_TOKEN}).
type Discord struct {
	// Enabled serves Discord from talon run; false leaves the section unused.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Token is the bot token from the Developer Portal (Bot → Reset Token).
	Token Secret `yaml:"token" json:"token"`
	// APIURL is where the REST API is reached (scheme and host: a proxy,
	// or a test server); the gateway's address is what its GET /gateway
	// answers.
	APIURL string `yaml:"api_url" json:"api_url"`
	// ApplicationID is the application (client) id; "" means it is learnt
	// from the token.
	ApplicationID string `yaml:"application_id" json:"application_id"`
	// MessageContent requests the privileged Message Content intent, which
	// must also be enabled in the Developer Portal.
	MessageContent bool `yaml:"message_content" json:"message_content"`
	// AllowDMs answers direct messages.
	AllowDMs bool `yaml:"allow_dms" json:"allow_dms"`
	// AllowedGuilds are the server ids answered in; empty means no server.
	AllowedGuilds []string `yaml:"allowed_guilds" json:"allowed_guilds"`
	// AllowedChannels, when not empty, limits the server channels answered
	// in (a thread counts as its parent); DeniedChannels never are.
	AllowedChannels []string `yaml:"allowed_channels" json:"allowed_channels"`
	DeniedChannels  []string `yaml:"denied_channels" json:"denied_channels"`
	// AllowedRoles, when not empty, limits server members to these roles.
	AllowedRoles []string `yaml:"allowed_roles" json:"allowed_roles"`
	// AllowedUsers, when not empty, limits who may talk to the bot;
	// DeniedUsers may never; Admins always may.
	AllowedUsers []string `yaml:"allowed_users" json:"allowed_users"`
	DeniedUsers  []string `yaml:"denied_users" json:"denied_users"`
	Admins       []string `yaml:"admins" json:"admins"`
	// FollowThreads answers follow-ups in a thread where the sender
	// mentioned the bot, without a new mention (needs MessageContent).
	FollowThreads bool `yaml:"follow_threads" json:"follow_threads"`
	// Commands registers the /talon application command at start.
	Commands bool `yaml:"commands" json:"commands"`
	// MaxMessageChars bounds one posted message; longer replies are split.
	MaxMessageChars int `yaml:"max_message_chars" json:"max_message_chars"`
	// TypingInterval is how often the typing indicator is refreshed while a
	// turn runs.
	TypingInterval Duration `yaml:"typing_interval" json:"typing_interval"`
	// BackfillWindow: at start-up and after a reconnect, channels active
	// within this window before the gap are read back, and missed messages
	// younger than it answered; 0 disables backfill.
	BackfillWindow Duration `yaml:"backfill_window" json:"backfill_window"`
	// BackfillLimit is how many messages per channel are read back.
	BackfillLimit int `yaml:"backfill_limit" json:"backfill_limit"`
	// Threads answers a mention in a server channel in a thread started on
	// it (needs the Create Public Threads permission).
	Threads bool `yaml:"threads" json:"threads"`
	// StreamEdits shows an answer while it is generated, editing the
	// message at most once per StreamInterval.
	StreamEdits    bool     `yaml:"stream_edits" json:"stream_edits"`
	StreamInterval Duration `yaml:"stream_interval" json:"stream_interval"`
	// Shards splits the gateway into this many shards (1 to 4096), or
	// "auto" for the count Discord recommends. With nats.url the replicas
	// share the shards through leases; without, this process connects
	// them all.
	Shards DiscordShards `yaml:"shards" json:"shards"`
}

func defaultSlack() Slack {
	return Slack{
		Mode:            SlackModeSocket,
		APIURL:          DefaultSlackAPIURL,
		FollowThreads:   true,
		MaxMessageChars: 3900,
		EventsPath:      "/slack/events",
	}
}

func defaultDiscord() Discord {
	return Discord{
		APIURL:          DefaultDiscordAPIURL,
		AllowDMs:        true,
		FollowThreads:   true,
		Commands:        true,
		MaxMessageChars: 1900,
		TypingInterval:  Duration(8 * time.Second),
		BackfillWindow:  Duration(time.Hour),
		BackfillLimit:   50,
		Threads:         true,
		StreamInterval:  Duration(1500 * time.Millisecond),
		Shards:          1,
	}
}

// normalize turns the empty lists a file may spell out ([]) into nil, as
// they are in Default.
func (s *Slack) normalize() {
	for _, l := range []*[]string{&s.AllowedTeams, &s.AllowedChannels, &s.DeniedChannels, &s.AllowedUsers, &s.DeniedUsers, &s.Admins} {
		if len(*l) == 0 {
			*l = nil
		}
	}
}

func (d *Discord) normalize() {
	for _, l := range []*[]string{&d.AllowedGuilds, &d.AllowedChannels, &d.DeniedChannels, &d.AllowedRoles, &d.AllowedUsers, &d.DeniedUsers, &d.Admins} {
		if len(*l) == 0 {
			*l = nil
		}
	}
}

// Bounds of the channel sections.
const (
	maxIDList      = 10_000
	maxIDLen       = 32
	maxEventsPath  = 256
	slackMaxChars  = 3900
	discordMaxChar = 2000
)

func (s *Slack) validate(v *validator, listen string) {
	v.oneOf("slack.mode", s.Mode, SlackModeSocket, SlackModeEvents)
	validServiceURL(v, "slack.api_url", s.APIURL, "slack.bot_token")
	tokenShape(v, "slack.bot_token", s.BotToken, func(t string) string {
		switch {
		case strings.HasPrefix(t, "xoxb-"), strings.HasPrefix(t, "xoxe.xoxb-"):
			return ""
		case strings.HasPrefix(t, "xapp-"):
			return "is an app-level token (xapp-…), which belongs in slack.app_token; use the Bot User OAuth Token (xoxb-…) from OAuth & Permissions"
		case strings.HasPrefix(t, "xoxp-"):
			return "is a user token (xoxp-…); use the Bot User OAuth Token (xoxb-…) from OAuth & Permissions"
		default:
			return "must be a bot token (xoxb-…), the Bot User OAuth Token from OAuth & Permissions"
		}
	})
	tokenShape(v, "slack.app_token", s.AppToken, func(t string) string {
		switch {
		case strings.HasPrefix(t, "xapp-"):
			return ""
		case strings.HasPrefix(t, "xoxb-"):
			return "is a bot token (xoxb-…), which belongs in slack.bot_token; use an app-level token (xapp-…) from Basic Information → App-Level Tokens"
		default:
			return "must be an app-level token (xapp-…) with the connections:write scope, from Basic Information → App-Level Tokens"
		}
	})
	tokenShape(v, "slack.signing_secret", s.SigningSecret, func(string) string { return "" })
	slackIDs(v, "slack.allowed_teams", s.AllowedTeams, "a workspace id (T…) or Enterprise Grid id (E…)", "TE")
	slackIDs(v, "slack.allowed_channels", s.AllowedChannels, "a channel id (C…, G… or D…)", "CGD")
	slackIDs(v, "slack.denied_channels", s.DeniedChannels, "a channel id (C…, G… or D…)", "CGD")
	slackIDs(v, "slack.allowed_users", s.AllowedUsers, "a user id (U… or W…)", "UW")
	slackIDs(v, "slack.denied_users", s.DeniedUsers, "a user id (U… or W…)", "UW")
	slackIDs(v, "slack.admins", s.Admins, "a user id (U… or W…)", "UW")
	v.intRange("slack.max_message_chars", s.MaxMessageChars, 200, slackMaxChars)
	if p := s.EventsPath; !validEventsPath(p) {
		v.add("slack.events_path", fmt.Sprintf("must be a clean absolute URL path of letters, digits and / . _ ~ - (e.g. /slack/events), got %s", v.quote("slack.events_path", p)))
	} else if slices.Contains([]string{"/healthz", "/readyz", "/metrics"}, p) {
		v.add("slack.events_path", p+" is taken by the operational endpoints; use e.g. /slack/events")
	}

	if !s.Enabled {
		return
	}
	if s.BotToken == "" {
		v.add("slack.bot_token", "required when slack.enabled is true: the Bot User OAuth Token (xoxb-…), referenced as ${SLACK_BOT_TOKEN}")
	}
	if len(s.AllowedTeams) == 0 {
		v.add("slack.allowed_teams", "required when slack.enabled is true: list the workspace ids (T…) to serve; talon doctor shows the bot's")
	}
	switch s.Mode {
	case SlackModeSocket:
		if s.AppToken == "" {
			v.add("slack.app_token", "required in socket mode: an app-level token (xapp-…) with connections:write, referenced as ${SLACK_APP_TOKEN}")
		}
	case SlackModeEvents:
		if s.SigningSecret == "" {
			v.add("slack.signing_secret", "required in events mode: the Signing Secret from Basic Information, referenced as ${SLACK_SIGNING_SECRET}")
		}
		if listen == "" {
			v.add("http.listen", `must not be "" when slack.mode is events: Slack delivers its requests to slack.events_path on it`)
		}
	}
}

func (d *Discord) validate(v *validator) {
	tokenShape(v, "discord.token", d.Token, func(string) string { return "" })
	validServiceURL(v, "discord.api_url", d.APIURL, "discord.token")
	if u, err := url.Parse(d.APIURL); err == nil && u.Path != "" && u.Path != "/" {
		v.add("discord.api_url", "must be a scheme and host only (like https://discord.com), without a path")
	}
	if d.ApplicationID != "" && !isSnowflake(d.ApplicationID) {
		v.add("discord.application_id", fmt.Sprintf("must be a Discord id (digits only), got %s", v.quote("discord.application_id", d.ApplicationID)))
	}
	for _, l := range []struct {
		key string
		ids []string
	}{
		{"discord.allowed_guilds", d.AllowedGuilds},
		{"discord.allowed_channels", d.AllowedChannels},
		{"discord.denied_channels", d.DeniedChannels},
		{"discord.allowed_roles", d.AllowedRoles},
		{"discord.allowed_users", d.AllowedUsers},
		{"discord.denied_users", d.DeniedUsers},
		{"discord.admins", d.Admins},
	} {
		if len(l.ids) > maxIDList {
			v.add(l.key, fmt.Sprintf("at most %d ids", maxIDList))
			continue
		}
		for i, id := range l.ids {
			if key := l.key + "[" + strconv.Itoa(i) + "]"; !isSnowflake(id) {
				v.add(key, fmt.Sprintf("must be a Discord id (digits only; Developer Mode → Copy ID), got %s", v.quote(key, id)))
			}
		}
	}
	v.intRange("discord.max_message_chars", d.MaxMessageChars, 200, discordMaxChar)
	v.duration("discord.typing_interval", d.TypingInterval, time.Second, 9*time.Second)
	v.duration("discord.backfill_window", d.BackfillWindow, 0, 24*time.Hour)
	v.intRange("discord.backfill_limit", d.BackfillLimit, 1, 100)
	v.duration("discord.stream_interval", d.StreamInterval, time.Second, time.Minute)
	if d.Shards != ShardsAuto {
		v.intRange("discord.shards", int(d.Shards), 1, MaxDiscordShards)
	}
	if d.Enabled && d.Token == "" {
		v.add("discord.token", "required when discord.enabled is true: the bot token (Developer Portal → Bot → Reset Token), referenced as ${DISCORD_BOT_TOKEN}")
	}
}

// tokenShape checks a credential without ever quoting it: no line breaks or
// spaces, and problem(value) == "" when it is set.
func tokenShape(v *validator, key string, s Secret, problem func(string) string) {
	t := s.Reveal()
	if t == "" {
		return
	}
	if strings.ContainsAny(t, " \t\r\n\x00") {
		v.add(key, "must not contain spaces or line breaks")
		return
	}
	if p := problem(t); p != "" {
		v.add(key, p)
	}
}

// validServiceURL checks a platform API base URL. Plain http is accepted for
// loopback hosts only, since the credential named by tokenKey is sent to it.
func validServiceURL(v *validator, key, raw, tokenKey string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		v.add(key, "must be an absolute https URL")
	case u.User != nil:
		v.add(key, "must not contain credentials")
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		v.add(key, "must be https: "+tokenKey+" is sent to it (plain http is accepted for 127.0.0.1 and localhost only)")
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// slackIDs checks a list of Slack ids: upper-case letters and digits,
// starting with one of prefixes.
func slackIDs(v *validator, key string, ids []string, what, prefixes string) {
	if len(ids) > maxIDList {
		v.add(key, fmt.Sprintf("at most %d ids", maxIDList))
		return
	}
	for i, id := range ids {
		k := key + "[" + strconv.Itoa(i) + "]"
		ok := len(id) >= 2 && len(id) <= maxIDLen && strings.ContainsRune(prefixes, rune(id[0]))
		for _, r := range id {
			if (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
				ok = false
			}
		}
		if !ok {
			v.add(k, fmt.Sprintf("must be %s, got %s", what, v.quote(k, id)))
		}
	}
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

func validEventsPath(p string) bool {
	if p == "" || p[0] != '/' || len(p) > maxEventsPath || path.Clean(p) != p {
		return false
	}
	for _, r := range p {
		if !isAlnum(r) && !strings.ContainsRune("/._~-", r) {
			return false
		}
	}
	return true
}
