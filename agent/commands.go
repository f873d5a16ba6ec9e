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
