package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/cmd/talon/config"
)

// Every name in ownSettings is a setting or a section of the
// configuration: one renamed or removed fails here instead of leaving its
// successor shared by mistake, or the list with a name that means nothing.
func TestOwnSettingsExist(t *testing.T) {
	cfg := config.Default()
	all, err := flattenSettings(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, own := range append(append([]string(nil), ownSettings...), hashedSettings...) {
		found := false
		for name := range all {
			if name == own || strings.HasPrefix(name, own+".") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s is in ownSettings or hashedSettings but is no setting of config.Config", own)
		}
	}
}

// A change of a shared setting changes the shared settings; a change of a
// replica's own does not.
func TestSharedSettingsChangeWithSharedOnes(t *testing.T) {
	base := config.Default()
	want, err := sharedSettings(&base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*config.Config)
		shared map[string]string // the settings that change, and their new value; nil for none
	}{
		{"agent.rate_per_minute", func(c *config.Config) { c.Agent.RatePerMinute = 30 }, map[string]string{"agent.rate_per_minute": "30"}},
		{"llm.model", func(c *config.Config) { c.LLM.Model = "gpt-4o" }, map[string]string{"llm.model": `"gpt-4o"`}},
		{"an access list", func(c *config.Config) { c.Slack.AllowedUsers = []string{"U1", "U2"} },
			map[string]string{"slack.allowed_users": `["U1","U2"]`}},
		{"a price", func(c *config.Config) { c.LLM.Prices = map[string]config.Price{"m": {Input: 1, Output: 2.5}} },
			map[string]string{"llm.prices": `{"m":{"input":1,"output":2.5}}`}},
		{"a channel's writers", func(c *config.Config) { c.Memory.ChannelWriters = map[string][]string{"slack:C1": {"*"}} },
			map[string]string{"memory.channel_writers": `{"slack:C1":["*"]}`}},
		{"a duration", func(c *config.Config) { c.Sandbox.ApprovalTimeout = config.Duration(time.Minute) },
			map[string]string{"sandbox.approval_timeout": `"1m"`}},
		{"console.admins", func(c *config.Config) { c.Console.Admins = []string{"slack:T1:U1"} },
			map[string]string{"console.admins": `["slack:T1:U1"]`}},
		{"discord.shards", func(c *config.Config) { c.Discord.Shards = config.ShardsAuto }, map[string]string{"discord.shards": `"auto"`}},
		{"a credential set", func(c *config.Config) { c.LLM.APIKey = "sk-not-a-real-key" }, map[string]string{"llm.api_key": `"[redacted]"`}},
		{"a long system prompt", func(c *config.Config) { c.Agent.SystemPrompt = strings.Repeat("You are terse. ", 10) },
			map[string]string{"agent.system_prompt": hashedValue(`"` + strings.Repeat("You are terse. ", 10) + `"`)}},
		{"a short system prompt", func(c *config.Config) { c.Agent.SystemPrompt = "Be terse." },
			map[string]string{"agent.system_prompt": hashedValue(`"Be terse."`)}},
		// Each replica's own.
		{"log.level", func(c *config.Config) { c.Log.Level = "debug" }, nil},
		{"http.listen", func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:9090" }, nil},
		{"data_dir", func(c *config.Config) { c.DataDir = "/var/lib/talon" }, nil},
		{"store.url", func(c *config.Config) { c.Store.Driver, c.Store.URL = config.StorePostgres, "postgres://u:p@db/talon" }, nil},
		{"sandbox.pool_size", func(c *config.Config) { c.Sandbox.PoolSize = 8 }, nil},
		{"nats.replica", func(c *config.Config) { c.NATS.Replica = "b" }, nil},
		{"console.enabled", func(c *config.Config) { c.Console.Enabled = true }, nil},
		{"an empty list spelt out", func(c *config.Config) { c.Slack.Admins = []string{} }, nil},
	} {
		cfg := config.Default()
		tc.change(&cfg)
		got, err := sharedSettings(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		changed := map[string]string{}
		for name, v := range got {
			if want[name] != v {
				changed[name] = v
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d shared settings, want %d", tc.name, len(got), len(want))
		}
		if tc.shared == nil {
			tc.shared = map[string]string{}
		}
		if diff := cmp.Diff(tc.shared, changed); diff != "" {
			t.Errorf("%s: the shared settings that changed (-want +got):\n%s", tc.name, diff)
		}
	}
}

// No credential's value is among the shared settings: they go to NATS and
// into errors.
func TestSharedSettingsHoldNoSecret(t *testing.T) {
	cfg := config.Default()
	const secret = "s3cr3t-value-never-shown"
	cfg.LLM.APIKey = secret
	cfg.LLM.Headers = map[string]config.Secret{"X-Api-Key": secret}
	cfg.Slack.BotToken, cfg.Slack.AppToken, cfg.Slack.SigningSecret = secret, secret, secret
	cfg.Discord.Token = secret
	cfg.Console.SlackOIDC.ClientSecret = secret
	cfg.MCP.Servers = []config.MCPServer{{Name: "s", URL: "https://mcp.example.com/mcp", Auth: "oauth", OAuth: config.MCPOAuth{ClientSecret: secret}}}
	cfg.Store.URL, cfg.NATS.URL = secret, secret
	got, err := sharedSettings(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range got {
		if strings.Contains(v, secret) {
			t.Errorf("%s = %s shows a credential", name, v)
		}
	}
	if got["llm.headers"] != `{"X-Api-Key":"[redacted]"}` || got["discord.token"] != `"[redacted]"` {
		t.Errorf("llm.headers = %s, discord.token = %s: want them redacted, as set", got["llm.headers"], got["discord.token"])
	}
}
