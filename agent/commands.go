package agent

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// command is a message answered by the runtime itself, never by the model.
type command struct {
	name string
	args string
	// handler answers it when it is a CommandHandler's.
	handler CommandHandler
}

// Command names a command the runtime answers without the model. Channels
// say how their users type it (CommandSyntax).
type Command string

// The commands the runtime answers. CommandSecrets lists a user's
// credentials; CommandSecretAdd and CommandSecretRemove change them.
const (
	CommandNew          Command = "new"
	CommandStatus       Command = "status"
	CommandTools        Command = "tools"
	CommandUsage        Command = "usage"
	CommandSecrets      Command = "secrets"
	CommandSecretAdd    Command = "secret add"
	CommandSecretRemove Command = "secret rm"
	CommandMemory       Command = "memory"
	CommandMemoryRemove Command = "memory rm"
	CommandConnect      Command = "connect"
	CommandDisconnect   Command = "disconnect"
	CommandConnections  Command = "connections"
	CommandHelp         Command = "help"
)

// CommandSyntax is a Channel whose users type the runtime's commands their
// own way: Slack and Discord take them as subcommands of /talon. The
// runtime writes every help text, usage line and hint with it, so that a
// user is never told to type what their platform does not take. A channel
// without it takes the forms DefaultCommandHint gives.
type CommandSyntax interface {
	// CommandHint returns what a user of this channel types for cmd,
	// including the arguments it needs ("/talon secret add").
	CommandHint(cmd Command) string
}

// DefaultCommandHint is how cmd is typed on a channel without CommandSyntax
// (the terminal): "/new", "/secret add NAME --host HOST", ….
func DefaultCommandHint(cmd Command) string {
	switch cmd {
	case CommandSecrets:
		return "/secret"
	case CommandSecretAdd:
		return "/secret add NAME --host HOST [--host HOST2] [--bearer | --header NAME [--prefix P] | --query NAME | --basic USER]"
	case CommandSecretRemove:
		return "/secret rm NAME"
	case CommandMemoryRemove:
		return "/memory rm ID"
	case CommandConnect, CommandDisconnect:
		return "/" + string(cmd) + " NAME"
	}
	return "/" + string(cmd)
}

// commandHelp lists the commands every channel understands, in the order
// /help shows them.
var commandHelp = []struct {
	cmd  Command
	help string
}{
	{CommandNew, "start a fresh conversation (the model forgets this one)"},
	{CommandStatus, "show this conversation's session, model and queue"},
	{CommandTools, "list the tools the model may use for you"},
	{CommandUsage, "show the tokens you used today and this month, against your budgets"},
	{CommandSecrets, "list your stored credentials (names, never values)"},
	{CommandSecretAdd, "store a credential for tools to use; the value is asked for privately"},
	{CommandSecretRemove, "remove a stored credential"},
	{CommandMemory, "list what I remember for you and in this channel"},
	{CommandMemoryRemove, "make me forget an entry of your memory"},
	{CommandConnections, "list the accounts you connected (MCP servers that sign in with OAuth)"},
	{CommandConnect, "connect your own account of a server: you get a private sign-in link"},
	{CommandDisconnect, "revoke and forget your connection to a server"},
	{CommandHelp, "show this help"},
}

// commandNames are the words parseCommand takes after "/".
var commandNames = []string{"new", "status", "tools", "usage", "secret", "memory", "connect", "disconnect", "connections", "help"}

// CommandHandler answers commands of a part the runtime does not own
// (routines): the runtime hands it "/name args" for each name it lists,
// and shows its help lines in /help. Its answers are notices, like the
// runtime's own commands; a command never reaches the model.
type CommandHandler interface {
	// CommandInfo lists the commands it answers, in the order /help shows
	// them.
	CommandInfo() []CommandInfo
	// HandleCommand answers "/name args" for the sender of q. An error is
	// logged and the user told the command failed, with a reference.
	HandleCommand(ctx context.Context, q QueuedInbound, name, args string) (string, error)
}

// CommandInfo is one command of a CommandHandler: Name is the word after
// "/", Cmd what CommandSyntax.CommandHint is asked for, Help its line in
// /help.
type CommandInfo struct {
	Name string
	Cmd  Command
	Help string
}

// parseCommand recognises the runtime's commands and its handlers'.
func (r *Runtime) parseCommand(text string) (command, bool) {
	if c, ok := parseCommand(text); ok {
		return c, true
	}
	t := strings.TrimSpace(text)
	if !strings.HasPrefix(t, "/") || len(r.Commands) == 0 {
		return command{}, false
	}
	name, args, _ := strings.Cut(t[1:], " ")
	name = strings.ToLower(name)
	for _, h := range r.Commands {
		for _, c := range h.CommandInfo() {
			if c.Name == name {
				return command{name: name, args: strings.TrimSpace(args), handler: h}, true
			}
		}
	}
	return command{}, false
}

// hint is how the user of platform types cmd.
func (r *Runtime) hint(platform string, cmd Command) string {
	r.mu.Lock()
	ch := r.channels[platform]
	r.mu.Unlock()
	if cs, ok := ch.(CommandSyntax); ok {
		if h := cs.CommandHint(cmd); h != "" {
			return h
		}
	}
	return DefaultCommandHint(cmd)
}

// parseCommand recognises "/name args" for the commands the runtime knows.
// Other text starting with "/" is an ordinary message.
func parseCommand(text string) (command, bool) {
	t := strings.TrimSpace(text)
	if !strings.HasPrefix(t, "/") {
		return command{}, false
	}
	name, args, _ := strings.Cut(t[1:], " ")
	name = strings.ToLower(name)
	for _, c := range commandNames {
		if c == name {
			return command{name: name, args: strings.TrimSpace(args)}, true
		}
	}
	return command{}, false
}

// command answers c for the sender of q.
func (r *Runtime) command(ctx context.Context, q QueuedInbound, c command) (string, error) {
	if c.handler != nil {
		return c.handler.HandleCommand(ctx, q, c.name, c.args)
	}
	switch c.name {
	case "new":
		s, err := r.Store.NewSession(ctx, q.Key)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Started a fresh conversation (session %d). I no longer remember what we said before.", s.ID), nil
	case "tools":
		if r.Tools == nil {
			return "No tools are configured.", nil
		}
		ts, err := r.Tools.Tools(ctx, q.Key.Principal)
		if err != nil {
			return "", err
		}
		if len(ts) == 0 {
			return "No tools are enabled.", nil
		}
		var b strings.Builder
		b.WriteString("Tools the model may use for you:\n")
		for _, t := range ts {
			fmt.Fprintf(&b, "  %s: %s\n", t.Name, t.Description)
		}
		return strings.TrimRight(b.String(), "\n"), nil
	case "secret":
		return r.secretCommand(ctx, q, c.args)
	case "connect", "disconnect", "connections":
		return r.connectCommand(ctx, q, c)
	case "usage":
		return r.usageCommand(ctx, q)
	case "memory":
		return r.memoryCommand(ctx, q, c.args)
	case "status":
		s, err := r.Store.ActiveSession(ctx, q.Key)
		if err != nil {
			return "", err
		}
		msgs, turns, err := r.Store.SessionStats(ctx, s.ID)
		if err != nil {
			return "", err
		}
		tools := "none"
		if r.Tools != nil {
			ts, err := r.Tools.Tools(ctx, q.Key.Principal)
			if err != nil {
				return "", err
			}
			names := make([]string, len(ts))
			for i, t := range ts {
				names[i] = t.Name
			}
			if len(names) > 0 {
				tools = strings.Join(names, ", ")
			}
		}
		r.mu.Lock()
		waiting := 0
		if qu := r.queues[q.Key]; qu != nil {
			waiting = len(qu.items)
		}
		r.mu.Unlock()
		var b strings.Builder
		fmt.Fprintf(&b, "Session %d, started %s: %d messages in %d turns", s.ID, s.CreatedAt.UTC().Format("2006-01-02 15:04 MST"), msgs, turns)
		if s.Summary != "" {
			b.WriteString(" (older messages summarised)")
		}
		fmt.Fprintf(&b, ".\nModel: %s (%s).\nTools: %s.\nWaiting messages in this conversation: %d.", r.LLM.Model(), r.LLM.Name(), tools, waiting)
		if s.Taint != "" {
			fmt.Fprintf(&b, "\nUntrusted content: this conversation read some (%s), so a tool request that would send data "+
				"to a host the operator does not trust, or much data anywhere, asks you first. %s starts a clean one.",
				strings.TrimPrefix(s.Taint, TaintPrefixEarlier), r.hint(q.Key.Principal.Platform, CommandNew))
		} else {
			b.WriteString("\nUntrusted content: none read in this conversation.")
		}
		if mr, ok := r.Tools.(ToolMemoryReporter); ok {
			b.WriteString("\n" + toolMemoryStatus(mr.ToolMemory()))
		}
		return b.String(), nil
	default:
		var b strings.Builder
		b.WriteString("Talon answers with a language model that can use tools on your behalf. Commands:\n")
		for _, c := range commandHelp {
			if (c.cmd == CommandMemory || c.cmd == CommandMemoryRemove) && r.Memory == nil {
				continue // memory.enabled is false
			}
			fmt.Fprintf(&b, "  %s: %s\n", r.hint(q.Key.Principal.Platform, c.cmd), c.help)
		}
		for _, h := range r.Commands {
			for _, c := range h.CommandInfo() {
				fmt.Fprintf(&b, "  %s: %s\n", r.hint(q.Key.Principal.Platform, c.Cmd), c.Help)
			}
		}
		b.WriteString("Anything else is a message for the model.")
		return b.String(), nil
	}
}

// toolMemoryStatus is the /status line about the tools' memory budget.
func toolMemoryStatus(m ToolMemory) string {
	const mib = 1 << 20
	s := fmt.Sprintf("Tool memory: %.1f of %d MiB in use; %d tool calls waiting for memory now", float64(m.Used)/mib, m.Limit/mib, m.Waiting)
	if m.Waits > 0 {
		s += fmt.Sprintf(" (%d waited so far, %s on average)", m.Waits, (m.WaitTime / time.Duration(m.Waits)).Round(time.Millisecond))
	}
	return s + "."
}

// secretCommand lists, adds or removes the sender's vault entries. A value
// is only ever collected through the channel's secure prompt, never from
// the message.
func (r *Runtime) secretCommand(ctx context.Context, q QueuedInbound, args string) (string, error) {
	if r.Secrets == nil {
		return "The credential vault is not configured on this gateway.", nil
	}
	p := q.Key.Principal
	hint := func(c Command) string { return r.hint(p.Platform, c) }
	fields := strings.Fields(args)
	if len(fields) == 0 || fields[0] == "list" {
		infos, err := r.Secrets.ListSecrets(ctx, p)
		if err != nil {
			return "", err
		}
		if len(infos) == 0 {
			return "You have no stored credentials. Add one with " + hint(CommandSecretAdd) + ".", nil
		}
		var b strings.Builder
		b.WriteString("Your credentials (values are never shown):\n")
		for _, s := range infos {
			fmt.Fprintf(&b, "  %s: %s, sent to %s", s.Name, s.Injection, strings.Join(s.Hosts, ", "))
			if !s.LastUsed.IsZero() {
				fmt.Fprintf(&b, ", last used %s", s.LastUsed.UTC().Format("2006-01-02 15:04 MST"))
			}
			b.WriteString("\n")
		}
		return strings.TrimRight(b.String(), "\n"), nil
	}
	switch fields[0] {
	case "rm", "remove", "delete":
		if len(fields) != 2 {
			return "Usage: " + hint(CommandSecretRemove), nil
		}
		if err := r.Secrets.RemoveSecret(ctx, p, fields[1]); err != nil {
			return "", err
		}
		return fmt.Sprintf("Removed %s.", fields[1]), nil
	case "add":
		ns, ok := parseSecretAdd(fields[1:])
		if !ok {
			return "Usage: " + hint(CommandSecretAdd), nil
		}
		r.mu.Lock()
		ch := r.channels[p.Platform]
		r.mu.Unlock()
		sp, ok := ch.(SecretPrompter)
		if !ok {
			if h := hint(CommandSecretAdd); h != DefaultCommandHint(CommandSecretAdd) {
				// The channel has a form of its own (Slack, Discord).
				return "A secret cannot be stored from a message here; use " + h + ": it asks for the value privately.", nil
			}
			return "This channel cannot collect a secret safely; use the talon vault set command on the gateway host.", nil
		}
		val, err := sp.PromptSecret(ctx, q.Key, fmt.Sprintf("Value for %s (input hidden)", ns.Name))
		if err != nil {
			return "No value was entered, so nothing was stored.", nil
		}
		ns.Value = val
		if err := r.Secrets.AddSecret(ctx, p, ns); err != nil {
			return fmt.Sprintf("Not stored: %v", err), nil
		}
		return fmt.Sprintf("Stored %s. Tools granted %q may now use it on %s; the model never sees it.", ns.Name, ns.Name, strings.Join(ns.Hosts, ", ")), nil
	}
	return fmt.Sprintf("Usage: %s, %s, %s", hint(CommandSecrets), hint(CommandSecretAdd), hint(CommandSecretRemove)), nil
}

// parseSecretAdd reads "NAME --host H [--host H2] [--bearer | --header N
// [--prefix P] | --query N | --basic U]" with ParseSecretAdd. ok is false
// when f is not that.
func parseSecretAdd(f []string) (s NewSecret, ok bool) {
	s, err := ParseSecretAdd(f)
	return s, err == nil
}

// connectCommand connects, disconnects or lists the sender's accounts of
// MCP servers. A connect link goes only privately (Noticer), never as an
// ordinary reply, which others in the conversation could read and use.
func (r *Runtime) connectCommand(ctx context.Context, q QueuedInbound, c command) (string, error) {
	if r.Connector == nil {
		return "No server here signs in with your own account.", nil
	}
	p := q.Key.Principal
	hint := func(c Command) string { return r.hint(p.Platform, c) }
	name := strings.ToLower(strings.TrimSpace(c.args))
	if c.name != "connections" && (name == "" || strings.ContainsAny(name, " \t")) {
		return "Usage: " + hint(Command(c.name)) + ". " + hint(CommandConnections) + " lists the servers.", nil
	}
	switch c.name {
	case "connections":
		conns, avail, err := r.Connector.Connections(ctx, p)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		if len(conns) == 0 {
			b.WriteString("You have connected no account.")
		} else {
			b.WriteString("Your connected accounts:\n")
			for _, c := range conns {
				fmt.Fprintf(&b, "  %s: connected %s\n", c.Server, c.ConnectedAt.UTC().Format("2006-01-02 15:04 MST"))
			}
		}
		if len(avail) > 0 {
			fmt.Fprintf(&b, "\nServers you can connect: %s (%s).", strings.Join(avail, ", "), hint(CommandConnect))
		}
		return strings.TrimRight(b.String(), "\n"), nil
	case "disconnect":
		return r.Connector.Disconnect(ctx, p, name)
	}
	r.mu.Lock()
	ch := r.channels[p.Platform]
	r.mu.Unlock()
	n, ok := ch.(Noticer)
	if !ok {
		return "This channel cannot show you a private link, so none was made. Use " + hint(CommandConnect) + " where Talon answers only you (a direct message, or the slash command).", nil
	}
	link, err := r.Connector.ConnectLink(ctx, p, name)
	if err != nil {
		return fmt.Sprintf("Cannot connect %s: %v", name, err), nil
	}
	text := fmt.Sprintf("Connect your %s account here (this link is for you only, works once and lasts 10 minutes): %s", name, link)
	if err := n.NoticePrivately(ctx, q.Key, q.ReplyTo, Notice{Text: text}); err != nil {
		return "", fmt.Errorf("send the connect link privately: %w", err)
	}
	return fmt.Sprintf("I sent you a private link to connect %s.", name), nil
}
