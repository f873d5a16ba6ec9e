package routines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// Names of the tools the model makes routines with.
const (
	ToolCreate = "routine_create"
	ToolList   = "routine_list"
	ToolDelete = "routine_delete"
)

// Tools offers the model routine_create, routine_list and routine_delete
// for the person it works for: every call acts on the caller's own
// routines (agent.ToolCall.Key), never another's. It is an agent.ToolRunner
// to combine with the sandbox's.
type Tools struct {
	Service *Service
}

var _ agent.ToolRunner = Tools{}

var toolDefs = []llm.Tool{
	{
		Name: ToolCreate,
		Description: "Schedule a routine: a request that runs on its own at the times given, as a message from the user, " +
			"its answer posted in this conversation (destination \"here\") or in the user's direct messages (\"dm\"). " +
			"Also for one-off reminders (\"in 2h\", \"at 2026-03-29 09:00\"). Times are in the user's time zone. " +
			"Only when the user asks for it.",
		Parameters: json.RawMessage(`{"type":"object","properties":{` +
			`"schedule":{"type":"string","description":"a cron expression of five fields in the user's time zone (minute hour day-of-month month day-of-week: \"0 9 * * 1-5\" is weekdays at 9:00, \"30 8 * * 1\" Mondays at 8:30), or \"every 2h\", or \"in 20m\" (once), or \"at 2026-03-29 09:00\" (once)"},` +
			`"prompt":{"type":"string","description":"what to do at each run, written as the user's request (\"Summarise the new Sentry issues\", \"Remind me to call Ana\")"},` +
			`"name":{"type":"string","description":"a short title"},` +
			`"destination":{"type":"string","enum":["here","dm"],"description":"where each run's answer is posted; default here"}},` +
			`"required":["schedule","prompt"]}`),
	},
	{
		Name:        ToolList,
		Description: "List the user's routines with their numbers, schedules, next runs and states.",
		Parameters:  json.RawMessage(`{"type":"object","properties":{}}`),
	},
	{
		Name:        ToolDelete,
		Description: "Delete one of the user's routines by its number (see routine_list). Only when the user asks for it.",
		Parameters:  json.RawMessage(`{"type":"object","properties":{"id":{"type":"integer","description":"the routine's number"}},"required":["id"]}`),
	},
}

// Owns reports whether name is one of these tools.
func (Tools) Owns(name string) bool {
	return name == ToolCreate || name == ToolList || name == ToolDelete
}

// Tools implements agent.ToolRunner: the routine tools, for anyone.
func (Tools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return toolDefs, nil
}

// Run implements agent.ToolRunner.
func (t Tools) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	s := t.Service
	owner := call.Key.Principal
	switch call.Name {
	case ToolCreate:
		var a struct {
			Schedule, Prompt, Name, Destination string
		}
		if err := json.Unmarshal(call.Args, &a); err != nil {
			return agent.ToolResult{IsError: true, Content: "the arguments do not match the schema: " + err.Error()}, nil
		}
		if call.Taint != "" {
			// Content the user did not write is in this turn: it must not
			// be able to plant work that runs as the user later.
			return agent.ToolResult{IsError: true, Content: "refused: this conversation has read content the user did not write (" +
				call.Taint + "), so a routine is not created from it. Ask the user to create it themselves with the routine add command, or in a fresh conversation."}, nil
		}
		dm := false
		switch strings.ToLower(strings.TrimSpace(a.Destination)) {
		case "", "here":
		case "dm":
			dm = true
		default:
			return agent.ToolResult{IsError: true, Content: `destination is "here" or "dm"`}, nil
		}
		r, err := s.Create(ctx, owner, call.Key.Conversation, NewRoutine{Schedule: a.Schedule, Prompt: a.Prompt, Name: a.Name, DM: dm})
		if res, ok := userResult(err); ok {
			return res, nil
		}
		if err != nil {
			return agent.ToolResult{}, err
		}
		return agent.ToolResult{Content: "Created. " + Describe(r, s.Now())}, nil
	case ToolList:
		rs, err := s.List(ctx, &owner)
		if err != nil {
			return agent.ToolResult{}, err
		}
		return agent.ToolResult{Content: ListText(rs, s.Now(), "The user has no routines.")}, nil
	case ToolDelete:
		var a struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(call.Args, &a); err != nil {
			return agent.ToolResult{IsError: true, Content: "the arguments do not match the schema: " + err.Error()}, nil
		}
		r, err := s.Delete(ctx, &owner, a.ID)
		if res, ok := userResult(err); ok {
			return res, nil
		}
		if err != nil {
			return agent.ToolResult{}, err
		}
		return agent.ToolResult{Content: fmt.Sprintf("Deleted routine %d (%q).", r.ID, r.Name)}, nil
	}
	return agent.ToolResult{IsError: true, Content: fmt.Sprintf("unknown tool %q", call.Name)}, nil
}

// userResult is a UserError as a failed tool's result.
func userResult(err error) (agent.ToolResult, bool) {
	var ue *UserError
	if errors.As(err, &ue) {
		return agent.ToolResult{IsError: true, Content: ue.Msg}, true
	}
	return agent.ToolResult{}, false
}

// Describe says in one line what r is and when it runs next.
func Describe(r store.Routine, now time.Time) string {
	loc, err := time.LoadLocation(r.TZ)
	if err != nil {
		loc = time.UTC
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Routine %d %q: %s", r.ID, r.Name, strings.TrimPrefix(r.Schedule, "cron "))
	if strings.HasPrefix(r.Schedule, "cron ") {
		fmt.Fprintf(&b, " (%s)", r.TZ)
	}
	if r.Dest == "dm" {
		b.WriteString(", posted in direct messages")
	} else {
		b.WriteString(", posted where it was made")
	}
	switch r.State {
	case "active":
		if !r.NextAt.IsZero() {
			fmt.Fprintf(&b, "; next run %s", r.NextAt.In(loc).Format("Mon 2006-01-02 15:04 MST"))
		}
	case "paused":
		fmt.Fprintf(&b, "; PAUSED: %s", r.Reason)
	case "done":
		b.WriteString("; done")
	}
	if !r.LastAt.IsZero() {
		fmt.Fprintf(&b, "; last run %s (%s)", r.LastAt.In(loc).Format("2006-01-02 15:04"), r.LastState)
	}
	return b.String() + "."
}

// ListText lists rs one a line, or says none.
func ListText(rs []store.Routine, now time.Time, none string) string {
	if len(rs) == 0 {
		return none
	}
	lines := make([]string, len(rs))
	for i, r := range rs {
		lines[i] = Describe(r, now)
	}
	return strings.Join(lines, "\n")
}
