package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/mcp"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
)

// newMCP builds the MCP client for the configured servers over broker,
// asking approvals with approver; nil when no server is configured.
func (a *app) newMCP(broker *egress.Broker, approver mcp.Approver) *mcp.Client {
	if len(a.cfg.MCP.Servers) == 0 {
		return nil
	}
	c := &mcp.Client{
		Servers:  a.cfg.MCP.MCPServers(),
		Egress:   broker,
		Approver: approver,
		Pins:     mcpPins{a.db},
		Logger:   a.log.With().Str("component", "mcp").Logger(),
		Version:  versionString(),
		// Sessions per (server, user) are reused, closed when idle, and
		// bounded in number.
		IdleTimeout: a.cfg.MCP.IdleTimeout.Std(),
		MaxSessions: a.cfg.MCP.MaxSessions,
	}
	// Links reach users privately through the runtime's channels.
	notifier, _ := approver.(mcp.Notifier)
	c.OAuth = a.newOAuth(broker, notifier)
	if c.OAuth != nil && a.rt != nil {
		a.rt.Connector = mcpConnector{c}
	}
	if rt := a.rt; rt != nil {
		// Progress notifications become the turn's working status; the
		// runtime bounds, defuses and throttles them, and never blocks.
		c.Status = func(call agent.ToolCall, text string) { rt.ToolStatus(call.Key, call.Turn, text) }
	}
	a.mcp = c
	a.closers = append(a.closers, func() { _ = c.Close() })
	return c
}

// toolSet offers the sandbox's tools and the MCP servers' tools as one
// runner: a name with a configured server's prefix goes to MCP.
type toolSet struct {
	sandbox agent.ToolRunner
	mcp     *mcp.Client
}

var (
	_ agent.ToolRunner         = toolSet{}
	_ agent.ToolMemoryReporter = toolSet{}
)

func (t toolSet) Tools(ctx context.Context, p agent.Principal) ([]llm.Tool, error) {
	out, err := t.sandbox.Tools(ctx, p)
	if err != nil {
		return nil, err
	}
	more, err := t.mcp.Tools(ctx, p)
	if err != nil {
		return nil, err
	}
	return append(out, more...), nil
}

func (t toolSet) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	if t.mcp.Owns(call.Name) {
		return t.mcp.Run(ctx, call)
	}
	return t.sandbox.Run(ctx, call)
}

func (t toolSet) ToolMemory() agent.ToolMemory {
	if mr, ok := t.sandbox.(agent.ToolMemoryReporter); ok {
		return mr.ToolMemory()
	}
	return agent.ToolMemory{}
}

// mcpPins keeps the MCP tools' hashes in the store.
type mcpPins struct{ db gatewayStore }

func (p mcpPins) SeeTool(ctx context.Context, server string, t mcp.ToolPin) (string, error) {
	return p.db.SeeMCPTool(ctx, store.MCPTool{Server: server, Tool: t.Tool, Hash: t.Hash, Description: t.Description, ReadOnly: t.ReadOnly, SeenAt: t.SeenAt})
}

func (p mcpPins) ApproveTools(ctx context.Context, server string) (int, error) {
	return p.db.ApproveMCPTools(ctx, server)
}

func (p mcpPins) ToolPins(ctx context.Context, server string) ([]mcp.ToolPin, error) {
	ts, err := p.db.MCPTools(ctx, server)
	if err != nil {
		return nil, err
	}
	out := make([]mcp.ToolPin, len(ts))
	for i, t := range ts {
		out[i] = mcp.ToolPin{Tool: t.Tool, Hash: t.Hash, Approved: t.Approved, Description: t.Description, ReadOnly: t.ReadOnly, SeenAt: t.SeenAt}
	}
	return out, nil
}

const mcpUsage = `Usage:
  talon mcp list    [--config FILE]
      list the configured MCP servers and every tool seen of each: its hash,
      whether it is enabled or changed since it was approved, read-only, and
      its description as the model sees it
  talon mcp test    NAME [--user PRINCIPAL] [--config FILE]
      connect to server NAME as PRINCIPAL (platform:workspace:user, default
      terminal::<terminal.user>) through the egress broker, list its tools
      and say which are offered
  talon mcp login   NAME --user PRINCIPAL [--config FILE]
      connect PRINCIPAL's own account of server NAME (auth: oauth): print a
      one-time link and serve its callback on http.listen until they signed
      in; the gateway must be stopped (while it runs, /talon connect NAME in
      chat does the same)
  talon mcp approve NAME [--config FILE]
      approve the current description and schema of every tool of server
      NAME, enabling the tools disabled because they changed; a running
      gateway offers them within a few seconds
`

// cmdMCP runs the mcp subcommands.
func cmdMCP(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"mcp: list, test, login or approve?\n" + mcpUsage}
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "list":
		return cmdMCPList(ctx, e, rest)
	case "test":
		return cmdMCPTest(ctx, e, rest)
	case "approve":
		return cmdMCPApprove(ctx, e, rest)
	case "login":
		return cmdMCPLogin(ctx, e, rest)
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, mcpUsage)
		return nil
	default:
		return &usageError{fmt.Sprintf("mcp: unknown subcommand %q\n%s", sub, mcpUsage)}
	}
}

// mcpFlags parses [NAME] [--user P] [--config FILE] in any order.
func mcpFlags(e env, cmd string, args []string, withUser bool) (name, user, flagPath string, err error) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("mcp "+cmd, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgFlag := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	var userFlag *string
	if withUser {
		userFlag = fs.String("user", "", "the principal to connect as, platform:workspace:user (default terminal::<terminal.user>)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", "", "", err
		}
		return "", "", "", &usageError{err.Error()}
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return "", "", "", &usageError{err.Error()}
		}
	}
	if fs.NArg() > 0 {
		return "", "", "", &usageError{fmt.Sprintf("mcp %s: unexpected argument %q", cmd, fs.Arg(0))}
	}
	if userFlag != nil {
		user = *userFlag
	}
	return name, user, *cfgFlag, nil
}

// openMCPApp opens the store and vault (not the sandbox) for an mcp
// command.
func openMCPApp(ctx context.Context, e env, cfg *config.Config) (*app, error) {
	ae := e
	ae.tools = skipTools{}
	return openApp(ctx, ae, cfg, newLogger(cfg, e.stderr, zerolog.WarnLevel))
}

func cmdMCPList(ctx context.Context, e env, args []string) error {
	name, _, flagPath, err := mcpFlags(e, "list", args, false)
	if err != nil {
		return err
	}
	if name != "" {
		return &usageError{fmt.Sprintf("mcp list: unexpected argument %q", name)}
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	if len(cfg.MCP.Servers) == 0 {
		fmt.Fprintln(e.stdout, "No MCP server is configured (mcp.servers; see docs/mcp.md).")
		return nil
	}
	a, err := openMCPApp(ctx, e, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	pins := mcpPins{a.db}
	for i, s := range cfg.MCP.MCPServers() {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		auth := string(s.Auth)
		if auth == "" {
			auth = string(mcp.AuthNone)
		}
		if s.Auth == mcp.AuthBearer {
			auth += " (vault entry " + s.Credential + ")"
		}
		if s.Auth == mcp.AuthOAuth {
			cs, err := a.db.OAuthConnections(ctx, s.Name, "")
			if err != nil {
				return err
			}
			users := make([]string, len(cs))
			for i, c := range cs {
				users[i] = c.Principal
			}
			if len(users) == 0 {
				users = []string{"none yet"}
			}
			auth += " (connected users: " + strings.Join(users, ", ") + ")"
		}
		approval := string(s.Approval)
		if approval == "" {
			approval = string(mcp.ApproveWrites)
		}
		ts, err := pins.ToolPins(ctx, s.Name)
		if err != nil {
			return err
		}
		changed := 0
		for _, t := range ts {
			if t.Hash != t.Approved {
				changed++
			}
		}
		status := fmt.Sprintf("%d tools seen", len(ts))
		if len(ts) == 0 {
			status = "no tools seen yet (talon mcp test " + s.Name + ")"
		}
		if changed > 0 {
			status += fmt.Sprintf(", %d changed since approved: disabled until talon mcp approve %s", changed, s.Name)
		}
		fmt.Fprintf(e.stdout, "%s  %s  auth: %s  approval: %s  %s\n", s.Name, s.URL, auth, approval, status)
		if len(ts) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TOOL\tHASH\tSTATE\tREAD-ONLY\tSEEN\tDESCRIPTION")
		for _, t := range ts {
			state := "enabled"
			if t.Hash != t.Approved {
				state = "CHANGED (approved " + t.Approved + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", t.Tool, t.Hash, state, yesNo(t.ReadOnly),
				t.SeenAt.UTC().Format(time.DateTime), oneLineClip(t.Description, 200))
		}
		tw.Flush()
	}
	return nil
}

func cmdMCPTest(ctx context.Context, e env, args []string) error {
	name, user, flagPath, err := mcpFlags(e, "test", args, true)
	if err != nil {
		return err
	}
	if name == "" {
		return &usageError{"mcp test: which server? talon mcp test NAME [--user PRINCIPAL]"}
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	principal := "terminal::" + cfg.Terminal.User
	if user != "" {
		principal = user
	}
	p, err := agent.ParsePrincipal(principal)
	if err != nil {
		return &usageError{"mcp test: --user: " + err.Error()}
	}
	a, err := openMCPApp(ctx, e, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	broker, err := a.newBroker()
	if err != nil {
		return err
	}
	defer broker.CloseIdleConnections()
	c := a.newMCP(broker, nil)
	if c == nil {
		return fmt.Errorf("mcp test: no MCP server is configured (mcp.servers)")
	}
	if _, ok := c.Server(name); !ok {
		return fmt.Errorf("mcp test: no server %q in mcp.servers", name)
	}
	ts, err := c.List(ctx, name, p)
	if errors.Is(err, mcp.ErrNotConnected) {
		return fmt.Errorf("mcp test %s as %s: that user has not connected their account; connect it with talon mcp login %s --user %s (or /talon connect %s in chat)", name, p, name, p, name)
	}
	if err != nil {
		var de *egress.DeniedError
		if errors.As(err, &de) {
			return fmt.Errorf("mcp test %s as %s: %s", name, p, de.Error())
		}
		return fmt.Errorf("mcp test %s as %s: %w", name, p, err)
	}
	offered := 0
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOOL\tHASH\tREAD-ONLY\tOFFERED")
	for _, t := range ts {
		state := "yes"
		if t.Disabled != "" {
			state = "no: " + t.Disabled
		} else {
			offered++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Spec.Name, t.Hash, yesNo(t.ReadOnly), state)
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "%s: connected as %s; %d tools, %d offered\n", name, p, len(ts), offered)
	return nil
}

func cmdMCPApprove(ctx context.Context, e env, args []string) error {
	name, _, flagPath, err := mcpFlags(e, "approve", args, false)
	if err != nil {
		return err
	}
	if name == "" {
		return &usageError{"mcp approve: which server? talon mcp approve NAME"}
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	found := false
	for _, s := range cfg.MCP.Servers {
		found = found || s.Name == name
	}
	if !found {
		return fmt.Errorf("mcp approve: no server %q in mcp.servers", name)
	}
	// The store only, without the data directory's lock: a running
	// gateway reads the approvals again within seconds (mcp.pinRecheck).
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.ApproveMCPTools(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: approved %d changed tools; a running gateway offers them within a few seconds\n", name, n)
	return nil
}

// oneLineClip is s on one line, cut to n bytes.
func oneLineClip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
