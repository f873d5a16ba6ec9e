package config

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/talonhq/talon/mcp"
)

// maxMCPServers bounds mcp.servers.
const maxMCPServers = 32

// MCP configures remote MCP servers whose tools the model may call, each
// on the calling user's own account.
type MCP struct {
	Servers []MCPServer `yaml:"servers" json:"servers"`
	// IdleTimeout closes a user's session with a server unused this long
	// (the next call opens a new one).
	IdleTimeout Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// MaxSessions bounds the sessions open at once (server × user); beyond
	// it the least recently used one not in use is closed.
	MaxSessions int `yaml:"max_sessions" json:"max_sessions"`
}

// MCPServer is one remote MCP server (see mcp.Server).
type MCPServer struct {
	// Name prefixes its tools' names: <name>__<tool>.
	Name string `yaml:"name" json:"name"`
	// URL is the server's streamable HTTP (or SSE) endpoint.
	URL string `yaml:"url" json:"url"`
	// Auth is none (default), bearer or oauth.
	Auth string `yaml:"auth" json:"auth"`
	// Credential names the user's vault entry for auth: bearer.
	Credential string `yaml:"credential" json:"credential"`
	// OAuth is for auth: oauth.
	OAuth MCPOAuth `yaml:"oauth" json:"oauth"`
	// Approval is writes (default), never or always.
	Approval string `yaml:"approval" json:"approval"`
	// Tools filters the server's tools by name.
	Tools MCPToolFilter `yaml:"tools" json:"tools"`
	// Timeout bounds one call; 0 means 60s.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// MaxResultBytes caps a result's text; 0 means 64 KiB.
	MaxResultBytes int `yaml:"max_result_bytes" json:"max_result_bytes"`
}

// MCPOAuth is the operator's pre-registered OAuth client, for servers
// without dynamic client registration.
type MCPOAuth struct {
	ClientID     string   `yaml:"client_id" json:"client_id"`
	ClientSecret Secret   `yaml:"client_secret" json:"client_secret"`
	Scopes       []string `yaml:"scopes" json:"scopes"`
}

// MCPToolFilter lists tool name patterns (path.Match) to allow and deny;
// an empty allow list allows every tool not denied.
type MCPToolFilter struct {
	Allow []string `yaml:"allow" json:"allow"`
	Deny  []string `yaml:"deny" json:"deny"`
}

// Server is s as the mcp package takes it.
func (s MCPServer) Server() mcp.Server {
	srv := mcp.Server{
		Name: s.Name, URL: s.URL, Auth: mcp.Auth(s.Auth), Credential: s.Credential,
		Approval: mcp.Approval(s.Approval), Allow: s.Tools.Allow, Deny: s.Tools.Deny,
		Timeout: s.Timeout.Std(), MaxResultBytes: s.MaxResultBytes,
	}
	if srv.Auth == mcp.AuthOAuth && (s.OAuth.ClientID != "" || s.OAuth.ClientSecret != "" || len(s.OAuth.Scopes) > 0) {
		srv.OAuth = &mcp.OAuthClientConfig{ClientID: s.OAuth.ClientID, ClientSecret: s.OAuth.ClientSecret.Reveal(), Scopes: s.OAuth.Scopes}
	}
	return srv
}

// UsesOAuth reports whether a server signs users in with OAuth.
func (m *MCP) UsesOAuth() bool {
	for _, s := range m.Servers {
		if s.Auth == string(mcp.AuthOAuth) {
			return true
		}
	}
	return false
}

// MCPServers are the configured servers as the mcp package takes them.
func (m *MCP) MCPServers() []mcp.Server {
	out := make([]mcp.Server, len(m.Servers))
	for i, s := range m.Servers {
		out[i] = s.Server()
	}
	return out
}

func (m *MCP) validate(v *validator) {
	v.duration("mcp.idle_timeout", m.IdleTimeout, 10*time.Second, 24*time.Hour)
	v.intRange("mcp.max_sessions", m.MaxSessions, 1, 100000)
	if len(m.Servers) > maxMCPServers {
		v.add("mcp.servers", fmt.Sprintf("at most %d servers", maxMCPServers))
	}
	seen := map[string]bool{}
	for i, s := range m.Servers {
		prefix := "mcp.servers[" + strconv.Itoa(i) + "]."
		if seen[s.Name] {
			v.add(prefix+"name", fmt.Sprintf("%s is the name of another server", strconv.Quote(s.Name)))
		}
		seen[s.Name] = true
		srv := s.Server()
		if err := srv.Validate(); err != nil {
			var list []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				list = j.Unwrap()
			} else {
				list = []error{err}
			}
			for _, e := range list {
				var fe *mcp.FieldError
				if errors.As(e, &fe) {
					v.add(prefix+fe.Key, fe.Problem)
				} else {
					v.add(prefix+"url", e.Error())
				}
			}
		}
		if s.Auth != string(mcp.AuthOAuth) && (s.OAuth.ClientID != "" || s.OAuth.ClientSecret != "" || len(s.OAuth.Scopes) > 0) {
			v.add(prefix+"oauth", "only used with auth: oauth")
		}
	}
}
