package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadChannels(t *testing.T) {
	const file = `http:
  listen: 127.0.0.1:9000
slack:
  enabled: true
  mode: events
  bot_token: ${SLACK_BOT_TOKEN}
  signing_secret: ${SLACK_SIGNING_SECRET}
  api_url: https://slack-gov.com/api/
  allowed_teams: [T012AB3C4, E0123]
  allowed_channels: [C1, G2]
  denied_channels: [D3]
  allowed_users: [U1]
  denied_users: [W2]
  admins: [U9]
  follow_threads: false
  stream_edits: true
  max_message_chars: 3000
  events_path: /hooks/slack
discord:
  enabled: true
  token: ${DISCORD_BOT_TOKEN}
  api_url: http://127.0.0.1:8080
  application_id: "123456789012345678"
  message_content: true
  allow_dms: false
  allowed_guilds: ["111"]
  allowed_channels: ["222"]
  denied_channels: ["333"]
  allowed_roles: ["444"]
  allowed_users: ["555"]
  denied_users: ["666"]
  admins: ["777"]
  follow_threads: false
  commands: false
  max_message_chars: 2000
  typing_interval: 5s
  backfill_window: 0s
  backfill_limit: 100
  shards: auto
`
	got, err := loadFile(t, file, map[string]string{
		"SLACK_BOT_TOKEN": "xoxb-1-abc", "SLACK_SIGNING_SECRET": "s3cr3t", "DISCORD_BOT_TOKEN": "MTA.token",
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	wantSlack := Slack{
		Enabled: true, Mode: "events", BotToken: "xoxb-1-abc", SigningSecret: "s3cr3t", APIURL: "https://slack-gov.com/api/",
		AllowedTeams: []string{"T012AB3C4", "E0123"}, AllowedChannels: []string{"C1", "G2"}, DeniedChannels: []string{"D3"},
		AllowedUsers: []string{"U1"}, DeniedUsers: []string{"W2"}, Admins: []string{"U9"},
		StreamEdits: true, MaxMessageChars: 3000, EventsPath: "/hooks/slack",
	}
	if diff := cmp.Diff(wantSlack, got.Slack); diff != "" {
		t.Errorf("slack (-want +got):\n%s", diff)
	}
	wantDiscord := Discord{
		Enabled: true, Token: "MTA.token", APIURL: "http://127.0.0.1:8080", ApplicationID: "123456789012345678", MessageContent: true,
		AllowedGuilds: []string{"111"}, AllowedChannels: []string{"222"}, DeniedChannels: []string{"333"},
		AllowedRoles: []string{"444"}, AllowedUsers: []string{"555"}, DeniedUsers: []string{"666"}, Admins: []string{"777"},
		MaxMessageChars: 2000, TypingInterval: Duration(5 * time.Second), BackfillLimit: 100, Threads: true, StreamInterval: Duration(1500 * time.Millisecond),
		Shards: ShardsAuto,
	}
	if diff := cmp.Diff(wantDiscord, got.Discord); diff != "" {
		t.Errorf("discord (-want +got):\n%s", diff)
	}
}

func TestChannelSectionsDisabledByDefault(t *testing.T) {
	// A section that only changes a default, without enabled, needs no
	// credentials.
	got, err := loadFile(t, "slack:\n  mode: events\ndiscord:\n  allow_dms: false\n", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Slack.Enabled || got.Discord.Enabled {
		t.Errorf("enabled = %v, %v; want both false", got.Slack.Enabled, got.Discord.Enabled)
	}
}

func TestChannelErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		vars map[string]string
		want []string
	}{
		{
			name: "unknown key in the slack section",
			file: "slack:\n  tokn: x\n",
			want: []string{"slack.tokn: unknown key (line 2)"},
		},
		{
			name: "unknown key in the discord section",
			file: "discord:\n  bot_token: x\n",
			want: []string{"discord.bot_token: unknown key (line 2)"},
		},
		{
			name: "enabled slack without tokens or teams",
			file: "slack:\n  enabled: true\n",
			want: []string{
				"slack.bot_token: required when slack.enabled is true: the Bot User OAuth Token (xoxb-…), referenced as ${SLACK_BOT_TOKEN}",
				"slack.allowed_teams: required when slack.enabled is true: list the workspace ids (T…) to serve; talon doctor shows the bot's",
				"slack.app_token: required in socket mode: an app-level token (xapp-…) with connections:write, referenced as ${SLACK_APP_TOKEN}",
			},
		},
		{
			name: "enabled slack in events mode without a signing secret or listener",
			file: "http:\n  listen: \"\"\nslack:\n  enabled: true\n  mode: events\n  bot_token: ${B}\n  allowed_teams: [T1]\n",
			vars: map[string]string{"B": "xoxb-1"},
			want: []string{
				"slack.signing_secret: required in events mode: the Signing Secret from Basic Information, referenced as ${SLACK_SIGNING_SECRET}",
				`http.listen: must not be "" when slack.mode is events: Slack delivers its requests to slack.events_path on it (line 2)`,
			},
		},
		{
			name: "swapped slack tokens are named, not shown",
			file: "slack:\n  bot_token: ${A}\n  app_token: ${B}\n",
			vars: map[string]string{"A": "xapp-1-SECRETVALUE", "B": "xoxb-SECRETVALUE"},
			want: []string{
				"slack.bot_token: is an app-level token (xapp-…), which belongs in slack.app_token; use the Bot User OAuth Token (xoxb-…) from OAuth & Permissions (line 2)",
				"slack.app_token: is a bot token (xoxb-…), which belongs in slack.bot_token; use an app-level token (xapp-…) from Basic Information → App-Level Tokens (line 3)",
			},
		},
		{
			name: "slack shapes",
			file: `slack:
  mode: webhook
  api_url: http://slack.example.com/api/
  allowed_teams: [C1, t2]
  admins: [T1]
  max_message_chars: 4000
  events_path: /metrics
`,
			want: []string{
				`slack.mode: must be one of socket, events, got "webhook" (line 2)`,
				"slack.api_url: must be https: slack.bot_token is sent to it (plain http is accepted for 127.0.0.1 and localhost only) (line 3)",
				`slack.allowed_teams[0]: must be a workspace id (T…) or Enterprise Grid id (E…), got "C1" (line 4)`,
				`slack.allowed_teams[1]: must be a workspace id (T…) or Enterprise Grid id (E…), got "t2" (line 4)`,
				`slack.admins[0]: must be a user id (U… or W…), got "T1" (line 5)`,
				"slack.max_message_chars: must be between 200 and 3900, got 4000 (line 6)",
				"slack.events_path: /metrics is taken by the operational endpoints; use e.g. /slack/events (line 7)",
			},
		},
		{
			name: "unclean events path",
			file: "slack:\n  events_path: /slack/../x\n",
			want: []string{`slack.events_path: must be a clean absolute URL path of letters, digits and / . _ ~ - (e.g. /slack/events), got "/slack/../x" (line 2)`},
		},
		{
			name: "enabled discord without a token",
			file: "discord:\n  enabled: true\n",
			want: []string{"discord.token: required when discord.enabled is true: the bot token (Developer Portal → Bot → Reset Token), referenced as ${DISCORD_BOT_TOKEN}"},
		},
		{
			name: "discord shapes",
			file: `discord:
  api_url: http://discord.example.com
  application_id: abc
  allowed_guilds: ["12", "my-server"]
  max_message_chars: 2001
  typing_interval: 10s
  backfill_window: 48h
  backfill_limit: 0
  shards: 0
`,
			want: []string{
				"discord.api_url: must be https: discord.token is sent to it (plain http is accepted for 127.0.0.1 and localhost only) (line 2)",
				`discord.application_id: must be a Discord id (digits only), got "abc" (line 3)`,
				`discord.allowed_guilds[1]: must be a Discord id (digits only; Developer Mode → Copy ID), got "my-server" (line 4)`,
				"discord.max_message_chars: must be between 200 and 2000, got 2001 (line 5)",
				"discord.typing_interval: must be between 1s and 9s, got 10s (line 6)",
				"discord.backfill_window: must be between 0s and 24h, got 48h (line 7)",
				"discord.backfill_limit: must be between 1 and 100, got 0 (line 8)",
				"discord.shards: must be between 1 and 4096, got 0 (line 9)",
			},
		},
		{
			name: "discord shards neither auto nor a number",
			file: "discord:\n  shards: many\n",
			want: []string{`discord.shards: invalid shard count "many": expected auto or a number (line 2)`},
		},
		{
			name: "discord api url with a path",
			file: "discord:\n  api_url: https://discord.example.com/api/v9\n",
			want: []string{"discord.api_url: must be a scheme and host only (like https://discord.com), without a path (line 2)"},
		},
		{
			name: "a token with a line break",
			file: "discord:\n  token: ${T}\n",
			vars: map[string]string{"T": "abc\ndef"},
			want: []string{"discord.token: must not contain spaces or line breaks (line 2)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadFile(t, tt.file, tt.vars)
			if diff := cmp.Diff(tt.want, problems(err)); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
			if err != nil && strings.Contains(err.Error(), "SECRETVALUE") {
				t.Errorf("error shows a token: %v", err)
			}
		})
	}
}
