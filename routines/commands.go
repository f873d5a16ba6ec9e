package routines

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/talonhq/talon/agent"
)

// Commands of routines, as agent.CommandSyntax is asked for them.
const (
	CommandRoutines   agent.Command = "routines"
	CommandRoutineAdd agent.Command = "routine add"
	CommandRoutine    agent.Command = "routine"
	CommandTZ         agent.Command = "tz"
)

// Commands answers /routines, /routine add|rm|pause|resume|run and /tz
// for the person who types them. It is an agent.CommandHandler.
type Commands struct {
	Service *Service
	// Hint is how the user of a platform types a command (the runtime's
	// CommandSyntax); nil means the terminal's "/name".
	Hint func(platform string, c agent.Command) string
}

var _ agent.CommandHandler = Commands{}

// CommandInfo implements agent.CommandHandler.
func (Commands) CommandInfo() []agent.CommandInfo {
	return []agent.CommandInfo{
		{Name: "routines", Cmd: CommandRoutines, Help: "list your routines (scheduled requests and reminders)"},
		{Name: "routine", Cmd: CommandRoutineAdd + ` "SCHEDULE" PROMPT`, Help: `schedule PROMPT ("0 9 * * 1-5", "every 2h", "in 30m", "at 2026-03-29 09:00"; --dm to get the answers in direct messages); also routine rm|pause|resume|run ID`},
		{Name: "tz", Cmd: CommandTZ + " ZONE", Help: "show or set the time zone your routines' times are read in (Europe/Paris)"},
	}
}

func (c Commands) hint(platform string, cmd agent.Command) string {
	if c.Hint != nil {
		return c.Hint(platform, cmd)
	}
	return "/" + string(cmd)
}

// HandleCommand implements agent.CommandHandler.
func (c Commands) HandleCommand(ctx context.Context, q agent.QueuedInbound, name, args string) (string, error) {
	text, err := c.handle(ctx, q, name, args)
	var ue *UserError
	if errors.As(err, &ue) {
		return ue.Msg, nil
	}
	return text, err
}

func (c Commands) handle(ctx context.Context, q agent.QueuedInbound, name, args string) (string, error) {
	s := c.Service
	owner := q.Key.Principal
	p := owner.Platform
	switch name {
	case "routines":
		rs, err := s.List(ctx, &owner)
		if err != nil {
			return "", err
		}
		return ListText(rs, s.Now(), "You have no routines. Make one with "+c.hint(p, CommandRoutineAdd)+` "0 9 * * 1-5" PROMPT, or ask me in plain words.`), nil
	case "tz":
		if args == "" {
			return fmt.Sprintf("Your routines' times are read in %s. Set another with %s ZONE, e.g. Europe/Paris.", s.Zone(ctx, owner), c.hint(p, CommandTZ)), nil
		}
		if err := s.SetZone(ctx, owner, args); err != nil {
			return "", err
		}
		return fmt.Sprintf("Your time zone is now %s; routines you make from now on read their times in it.", args), nil
	}
	verb, rest, _ := strings.Cut(args, " ")
	rest = strings.TrimSpace(rest)
	usage := fmt.Sprintf(`Usage: %s "SCHEDULE" PROMPT (SCHEDULE: "0 9 * * 1-5", "every 2h", "in 30m", "at 2026-03-29 09:00"; --dm before it to get the answers in direct messages), or %s rm|pause|resume|run ID.`,
		c.hint(p, CommandRoutineAdd), c.hint(p, CommandRoutine))
	switch strings.ToLower(verb) {
	case "add":
		dm := false
		if r, ok := strings.CutPrefix(rest, "--dm "); ok {
			dm, rest = true, strings.TrimSpace(r)
		}
		sched, prompt, ok := splitSchedule(rest)
		if !ok {
			return usage, nil
		}
		r, err := s.Create(ctx, owner, q.Key.Conversation, NewRoutine{Schedule: sched, Prompt: prompt, DM: dm})
		if err != nil {
			return "", err
		}
		return "Created. " + Describe(r, s.Now()), nil
	case "rm", "delete", "remove", "pause", "resume", "run":
		id, err := strconv.ParseInt(strings.TrimPrefix(rest, "#"), 10, 64)
		if err != nil {
			return usage, nil
		}
		switch strings.ToLower(verb) {
		case "pause":
			r, err := s.Pause(ctx, &owner, id)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("Paused routine %d (%q).", r.ID, r.Name), nil
		case "resume":
			r, err := s.Resume(ctx, &owner, id)
			if err != nil {
				return "", err
			}
			return "Resumed. " + Describe(r, s.Now()), nil
		case "run":
			r, err := s.RunNow(ctx, &owner, id)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("Running routine %d (%q) now.", r.ID, r.Name), nil
		}
		r, err := s.Delete(ctx, &owner, id)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Deleted routine %d (%q).", r.ID, r.Name), nil
	}
	return usage, nil
}

// splitSchedule cuts `"SCHEDULE" PROMPT` (or 'SCHEDULE', or the unquoted
// forms of one word after every/in/at, and @descriptors) into its parts.
func splitSchedule(s string) (sched, prompt string, ok bool) {
	if s == "" {
		return "", "", false
	}
	for _, q := range []string{`"`, `'`, "“"} {
		if rest, found := strings.CutPrefix(s, q); found {
			end := q
			if q == "“" {
				end = "”"
			}
			sched, prompt, ok = strings.Cut(rest, end)
			return strings.TrimSpace(sched), strings.TrimSpace(prompt), ok && strings.TrimSpace(prompt) != ""
		}
	}
	f := strings.Fields(s)
	switch {
	case strings.HasPrefix(f[0], "@") && len(f) > 1:
		return f[0], strings.Join(f[1:], " "), true
	case len(f) > 2 && (strings.EqualFold(f[0], "every") || strings.EqualFold(f[0], "in") || strings.EqualFold(f[0], "at")):
		return f[0] + " " + f[1], strings.Join(f[2:], " "), true
	}
	return "", "", false
}
