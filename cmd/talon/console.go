package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/talonhq/talon/adapters/slack"
	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/console"
	"github.com/talonhq/talon/mcp"
)

// channelStates tracks each platform channel's state, for the console's
// Overview: starting, what its adapter reports of its connection
// (connecting, connected, reconnecting), stopped.
type channelStates struct {
	mu sync.Mutex
	// state by channel name; guarded by mu.
	state map[string]string
}

func (c *channelStates) set(name, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		c.state = map[string]string{}
	}
	c.state[name] = state
}

func (c *channelStates) list() []console.Channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]console.Channel, 0, len(c.state))
	for name, st := range c.state {
		out = append(out, console.Channel{Name: name, State: st})
	}
	slices.SortFunc(out, func(a, b console.Channel) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// mountConsole serves the operator's console under /console/ on mux when
// console.enabled is set. The admin token comes from TALON_CONSOLE_TOKEN.
func (a *app) mountConsole(mux *http.ServeMux, states *channelStates) error {
	cc := a.cfg.Console
	if !cc.Enabled {
		return nil
	}
	prices := make(map[string]console.Price, len(a.cfg.LLM.Prices))
	for m, p := range a.cfg.LLM.Prices {
		prices[m] = console.Price{Input: p.Input, Output: p.Output}
	}
	s := &console.Server{
		Store:          a.db.gatewayStore,
		Token:          a.env.getenv("TALON_CONSOLE_TOKEN"),
		Secure:         strings.HasPrefix(a.cfg.HTTP.PublicURL, "https://"),
		SessionTTL:     cc.SessionTTL.Std(),
		Prices:         prices,
		Channels:       states.list,
		TrustedProxies: a.cfg.HTTP.TrustedPrefixes(),
		Log:            a.log,
	}
	s.Budgets = console.Budgets{UserDaily: a.cfg.Budgets.UserDailyTokens, UserMonthly: a.cfg.Budgets.UserMonthlyTokens, Admins: map[string]bool{}}
	for _, p := range a.cfg.Console.Admins {
		s.Budgets.Admins[p] = true
	}
	s.Tools = func() []console.Tool {
		out := make([]console.Tool, 0, len(a.sandboxTools))
		for _, t := range a.sandboxTools {
			m := t.Manifest
			ct := console.Tool{Name: m.Name, Description: m.Description, Enabled: m.Enabled, Credentials: m.Credentials, Approval: string(m.Approval)}
			for _, h := range m.HTTP {
				ct.Hosts = append(ct.Hosts, h.Host)
			}
			out = append(out, ct)
		}
		return out
	}
	s.MCP = func(ctx context.Context) ([]console.MCPServer, error) {
		var out []console.MCPServer
		for _, sv := range a.cfg.MCP.MCPServers() {
			ts, err := a.db.MCPTools(ctx, sv.Name)
			if err != nil {
				return nil, err
			}
			approval := string(sv.Approval)
			if approval == "" {
				approval = string(mcp.ApproveWrites)
			}
			out = append(out, console.MCPServer{Name: sv.Name, URL: sv.URL, Approval: approval, Tools: ts})
		}
		return out, nil
	}
	s.ApproveMCP = func(ctx context.Context, server string) (int, error) {
		for _, sv := range a.cfg.MCP.Servers {
			if sv.Name == server {
				return mcpPins{a.db}.ApproveTools(ctx, server)
			}
		}
		return 0, fmt.Errorf("console: approve MCP tools: no server %q in mcp.servers", server)
	}
	if o := cc.SlackOIDC; o.ClientID != "" {
		s.SlackOIDC = &console.SlackOIDC{
			ClientID:     o.ClientID,
			ClientSecret: o.ClientSecret.Reveal(),
			RedirectURL:  strings.TrimSuffix(a.cfg.HTTP.PublicURL, "/") + "/console/oidc/callback",
			Admins:       s.Budgets.Admins,
			Principal: func(team, enterprise, user string) string {
				return slack.Principal(team, enterprise, user).String()
			},
		}
	}
	if svc := a.vaultSvc(); svc != nil {
		s.Credentials = svc // the vault service the gateway uses; the CLI's rm and list do the same on the vault
	}
	h, err := s.Handler()
	if err != nil {
		return err // names TALON_CONSOLE_TOKEN and how to make one
	}
	mux.Handle(console.Prefix, h)
	a.console = s
	a.log.Info().Str("path", console.Prefix).Bool("secure_cookie", s.Secure).Msg("console enabled")
	return nil
}

// budgets are the runtime's token budgets; console.admins are exempt.
func budgets(cfg *config.Config) agent.Budgets {
	b := agent.Budgets{
		UserDaily:        cfg.Budgets.UserDailyTokens,
		UserMonthly:      cfg.Budgets.UserMonthlyTokens,
		WorkspaceMonthly: cfg.Budgets.WorkspaceMonthlyTokens,
		Exempt:           map[agent.Principal]bool{},
	}
	for _, s := range cfg.Console.Admins {
		if p, err := agent.ParsePrincipal(s); err == nil {
			b.Exempt[p] = true
		}
	}
	return b
}
