package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/mcp"
)

func TestLoadMCPServers(t *testing.T) {
	const file = `mcp:
  servers:
    - name: linear
      url: https://mcp.linear.app/mcp
      auth: bearer
      credential: linear
      approval: always
      tools:
        allow: ["list_*", "create_issue"]
        deny: [delete_issue]
      timeout: 30s
      max_result_bytes: 10000
    - name: docs
      url: https://docs.example.com/mcp
    - name: notion
      url: https://mcp.notion.com/mcp
      auth: oauth
    - name: github
      url: https://api.githubcopilot.com/mcp/
      auth: oauth
      oauth:
        client_id: Iv1.abc
        client_secret: ${GH_SECRET}
        scopes: [repo]
http:
  public_url: https://talon.example.com
`
	c, err := loadFile(t, file, map[string]string{"GH_SECRET": "gh-client-secret"})
	if err != nil {
		t.Fatal(err)
	}
	want := []mcp.Server{
		{Name: "linear", URL: "https://mcp.linear.app/mcp", Auth: mcp.AuthBearer, Credential: "linear", Approval: mcp.ApproveAlways,
			Allow: []string{"list_*", "create_issue"}, Deny: []string{"delete_issue"}, Timeout: 30 * time.Second, MaxResultBytes: 10000},
		{Name: "docs", URL: "https://docs.example.com/mcp"},
		{Name: "notion", URL: "https://mcp.notion.com/mcp", Auth: mcp.AuthOAuth},
		{Name: "github", URL: "https://api.githubcopilot.com/mcp/", Auth: mcp.AuthOAuth,
			OAuth: &mcp.OAuthClientConfig{ClientID: "Iv1.abc", ClientSecret: "gh-client-secret", Scopes: []string{"repo"}}},
	}
	if diff := cmp.Diff(want, c.MCP.MCPServers()); diff != "" {
		t.Errorf("servers mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadMCPErrors(t *testing.T) {
	const file = `mcp:
  servers:
    - name: Linear__x
      url: http://mcp.linear.app/mcp
      auth: bearer
      approval: sometimes
      tools:
        allow: ["[x"]
      timeout: 1h
      max_result_bytes: 5000000
      oauth:
        client_id: abc
    - name: docs
      url: https://docs.example.com/mcp
      auth: oauth
    - name: docs
      url: https://docs.example.com/mcp
      transport: stdio
  idle_timeout: 1s
  max_sessions: 0
`
	_, err := loadFile(t, file, nil)
	want := []string{
		"mcp.servers[2].transport: unknown key (line 18)",
		"mcp.idle_timeout: must be between 10s and 24h, got 1s (line 19)",
		"mcp.max_sessions: must be between 1 and 100000, got 0 (line 20)",
		`mcp.servers[0].name: "Linear__x" must be 1 to 24 of a-z, 0-9, _ and -, starting with a letter or digit, without __ (line 3)`,
		"mcp.servers[0].url: must be https (http only for a loopback address) (line 4)",
		"mcp.servers[0].credential: auth: bearer needs the name of the user's vault entry",
		`mcp.servers[0].approval: "sometimes" must be never, writes or always (line 6)`,
		`mcp.servers[0].tools: pattern "[x": syntax error in pattern (line 7)`,
		"mcp.servers[0].timeout: 1h0m0s must be between 0 and 10m0s (line 9)",
		"mcp.servers[0].max_result_bytes: 5000000 must be between 0 and 1048576 (line 10)",
		"mcp.servers[0].oauth: only used with auth: oauth (line 11)",
		`mcp.servers[2].name: "docs" is the name of another server (line 16)`,
		"http.public_url: is required by mcp.servers with auth: oauth: the address people's browsers reach Talon's http.listen at (e.g. https://talon.example.com); providers redirect to <public_url>/oauth/callback",
	}
	got := problems(err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}
}
