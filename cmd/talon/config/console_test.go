package config

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadConsoleAndPrices(t *testing.T) {
	const file = `http:
  listen: 127.0.0.1:9000
  public_url: https://talon.example.com
  trusted_proxies: [10.0.0.0/8, 192.0.2.1, "::ffff:192.0.2.9"]
llm:
  prices:
    gpt-4o-mini: {input: 0.15, output: 0.6}
console:
  enabled: true
  admins: [slack:T1:U1, discord::42]
  session_ttl: 1h
`
	got, err := loadFile(t, file, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Console{Enabled: true, Admins: []string{"slack:T1:U1", "discord::42"}, SessionTTL: Duration(time.Hour)}
	if diff := cmp.Diff(want, got.Console); diff != "" {
		t.Errorf("console mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]Price{"gpt-4o-mini": {Input: 0.15, Output: 0.6}}, got.LLM.Prices); diff != "" {
		t.Errorf("prices mismatch (-want +got):\n%s", diff)
	}
	if got, want := fmt.Sprint(got.HTTP.TrustedPrefixes()), "[10.0.0.0/8 192.0.2.1/32 192.0.2.9/32]"; got != want {
		t.Errorf("trusted prefixes = %s, want %s", got, want)
	}
	if got.HTTP.PublicURL != "https://talon.example.com" {
		t.Errorf("http.public_url = %q", got.HTTP.PublicURL)
	}
}

func TestLoadConsoleInvalid(t *testing.T) {
	const file = `http:
  listen: ""
  public_url: ftp://x
  trusted_proxies: [10.0.0.0/8, proxy.local]
llm:
  prices:
    m: {input: -1, output: 2}
console:
  enabled: true
  admins: [alice]
  session_ttl: 1s
`
	_, err := loadFile(t, file, nil)
	want := []string{
		`http.public_url: must be an http or https URL (e.g. https://talon.example.com), or "" (line 3)`,
		`http.trusted_proxies: "proxy.local" is not an IP address or CIDR range (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/8) (line 4)`,
		"console.enabled: needs http.listen: the console is served on it under /console/ (line 9)",
		`console.admins: "alice" is not a principal: want platform:workspace:user (e.g. slack:T012:U034, discord::123) (line 10)`,
		"console.session_ttl: must be between 5m and 720h, got 1s (line 11)",
		"llm.prices.m: input and output must be US dollars per million tokens, 0 to 10000 (line 7)",
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}
}

func TestLoadConsoleSlackOIDC(t *testing.T) {
	const file = `http:
  listen: 127.0.0.1:9000
  public_url: https://talon.example.com
console:
  enabled: true
  admins: [slack:T1:U1]
  slack_oidc: {client_id: "123.456", client_secret: "${SLACK_CLIENT_SECRET}"}
`
	got, err := loadFile(t, file, map[string]string{"SLACK_CLIENT_SECRET": "shh-client-secret"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if o := got.Console.SlackOIDC; o.ClientID != "123.456" || o.ClientSecret.Reveal() != "shh-client-secret" {
		t.Errorf("slack_oidc = %+v (secret %q)", o, o.ClientSecret.Reveal())
	}

	_, err = loadFile(t, "console:\n  slack_oidc: {client_id: \"123.456\"}\n", nil)
	want := []string{
		"console.slack_oidc.client_secret: is required with client_id: the Slack app's Client Secret, e.g. ${SLACK_CLIENT_SECRET}",
		"console.slack_oidc: needs http.public_url: Slack sends the browser back to <public_url>/console/oidc/callback (line 2)",
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}
}

func TestLoadBudgets(t *testing.T) {
	got, err := loadFile(t, "budgets:\n  user_daily_tokens: 1000\n  user_monthly_tokens: 20000\n  workspace_monthly_tokens: 500000\n", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := (Budgets{UserDailyTokens: 1000, UserMonthlyTokens: 20000, WorkspaceMonthlyTokens: 500000}); got.Budgets != want {
		t.Errorf("budgets = %+v, want %+v", got.Budgets, want)
	}
	_, err = loadFile(t, "budgets:\n  user_daily_tokens: -1\n", nil)
	want := []string{"budgets.user_daily_tokens: must be between 0 (no budget) and 1000000000000000 tokens (line 2)"}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}
