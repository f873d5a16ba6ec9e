package agent

import (
	"context"
	"fmt"
	"strings"
)

// command is a message answered by the runtime itself, never by the model.
type command struct {
	name string
	args string
}

// commandHelp lists the commands every channel understands.
var commandHelp = []struct{ name, help string }{
	{"new", "start a fresh conversation (the model forgets this one)"},
	{"status", "show this conversation's session, model and queue"},
	{"tools", "list the tools the model may use for you"},
	{"secret", "your stored credentials: /secret (list), /secret add NAME --host HOST [--header NAME [--prefix P] | --query NAME | --basic USER], /secret rm NAME"},
	{"help", "show this help"},
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
	for _, c := range commandHelp {
		if c.name == name {
			return command{name: name, args: strings.TrimSpace(args)}, true
		}
	}
	return command{}, false
}

// command answers c for the sender of q.
func (r *Runtime) command(ctx context.Context, q QueuedInbound, c command) (string, error) {
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
		return b.String(), nil
	default:
		var b strings.Builder
		b.WriteString("Talon answers with a language model that can use tools on your behalf. Commands:\n")
		for _, c := range commandHelp {
			fmt.Fprintf(&b, "  /%s: %s\n", c.name, c.help)
		}
		b.WriteString("Anything else is a message for the model.")
		return b.String(), nil
	}
}

// secretCommand lists, adds or removes the sender's vault entries. A value
// is only ever collected through the channel's secure prompt, never from
// the message.
func (r *Runtime) secretCommand(ctx context.Context, q QueuedInbound, args string) (string, error) {
	if r.Secrets == nil {
		return "The credential vault is not configured on this gateway.", nil
	}
	p := q.Key.Principal
	fields := strings.Fields(args)
	if len(fields) == 0 || fields[0] == "list" {
		infos, err := r.Secrets.ListSecrets(ctx, p)
		if err != nil {
			return "", err
		}
		if len(infos) == 0 {
			return "You have no stored credentials. Add one with /secret add NAME --host HOST.", nil
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
			return "Usage: /secret rm NAME", nil
		}
		if err := r.Secrets.RemoveSecret(ctx, p, fields[1]); err != nil {
			return "", err
		}
		return fmt.Sprintf("Removed %s.", fields[1]), nil
	case "add":
		ns, usage := parseSecretAdd(fields[1:])
		if usage != "" {
			return usage, nil
		}
		r.mu.Lock()
		ch := r.channels[p.Platform]
		r.mu.Unlock()
		sp, ok := ch.(SecretPrompter)
		if !ok {
			return "This channel cannot collect a secret safely here; use the /talon secret add form, or the talon vault set command on the gateway host.", nil
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
	return "Usage: /secret, /secret add NAME --host HOST, /secret rm NAME", nil
}

// parseSecretAdd reads "NAME --host H [--host H2] [--bearer | --header N
// [--prefix P] | --query N | --basic U]". It returns a usage text on error.
func parseSecretAdd(f []string) (NewSecret, string) {
	const usage = "Usage: /secret add NAME --host HOST [--host HOST2] [--bearer | --header NAME [--prefix P] | --query NAME | --basic USER]"
	var s NewSecret
	var header, prefix string
	for i := 0; i < len(f); i++ {
		arg := f[i]
		next := func() (string, bool) {
			if i+1 >= len(f) {
				return "", false
			}
			i++
			return f[i], true
		}
		var ok bool
		switch arg {
		case "--host":
			var h string
			if h, ok = next(); !ok {
				return s, usage
			}
			s.Hosts = append(s.Hosts, h)
		case "--bearer":
			s.Injection = "bearer"
		case "--header":
			if header, ok = next(); !ok {
				return s, usage
			}
		case "--prefix":
			if prefix, ok = next(); !ok {
				return s, usage
			}
		case "--query":
			var n string
			if n, ok = next(); !ok {
				return s, usage
			}
			s.Injection = "query:" + n
		case "--basic":
			var u string
			if u, ok = next(); !ok {
				return s, usage
			}
			s.Injection = "basic:" + u
		default:
			if strings.HasPrefix(arg, "--") || s.Name != "" {
				return s, usage
			}
			s.Name = arg
		}
	}
	if header != "" {
		s.Injection = "header:" + header
		if prefix != "" {
			s.Injection += ":" + prefix
		}
	}
	if s.Name == "" || len(s.Hosts) == 0 {
		return s, usage
	}
	return s, ""
}
