package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/talonhq/talon/adapters/discord"
	"github.com/talonhq/talon/adapters/slack"
	"github.com/talonhq/talon/adapters/terminal"
	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/routines"
	"github.com/talonhq/talon/store"
)

// routineRouter tells routines where they may post on each platform,
// through the channels registered with the runtime.
type routineRouter struct {
	mu       sync.Mutex
	channels map[string]agent.Channel // by platform; guarded by mu
}

var _ routines.Router = (*routineRouter)(nil)

func (r *routineRouter) add(ch agent.Channel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.channels == nil {
		r.channels = map[string]agent.Channel{}
	}
	r.channels[ch.Platform()] = ch
}

func (r *routineRouter) channel(platform string) agent.Channel {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.channels[platform]
}

// errNoChannel: the owner's platform is not served by this gateway now.
var errNoChannel = errors.New("this gateway does not serve that platform now")

func (r *routineRouter) Route(ctx context.Context, owner agent.Principal, conv agent.Conversation, dm bool) (routines.Place, error) {
	switch ch := r.channel(owner.Platform).(type) {
	case *slack.Adapter:
		c, rt, err := ch.RoutineTarget(ctx, owner.User, conv.Channel, dm)
		return routines.Place{Channel: c, ReplyTo: rt}, err
	case *discord.Adapter:
		c, rt, err := ch.RoutineTarget(ctx, owner.User, conv.Channel, dm)
		return routines.Place{Channel: c, ReplyTo: rt}, err
	case *terminal.Adapter:
		// The terminal is one conversation, which is its user's own.
		return routines.Place{}, nil
	case nil:
		return routines.Place{}, errNoChannel
	default:
		return routines.Place{Channel: conv.Channel}, nil
	}
}

func (r *routineRouter) Check(ctx context.Context, owner agent.Principal, p routines.Place) error {
	switch ch := r.channel(owner.Platform).(type) {
	case *slack.Adapter:
		return ch.RoutineCheck(ctx, owner.User, p.Channel)
	case *discord.Adapter:
		return ch.RoutineCheck(ctx, owner.User, p.Channel)
	case nil:
		return errNoChannel
	}
	return nil
}

// Notify tells the owner in their direct messages, where the platform has
// them, else at p.
func (r *routineRouter) Notify(ctx context.Context, owner agent.Principal, p routines.Place, text string) error {
	ch := r.channel(owner.Platform)
	if ch == nil {
		return errNoChannel
	}
	if dm, err := r.Route(ctx, owner, agent.Conversation{Channel: p.Channel}, true); err == nil {
		p = dm
	}
	_, err := ch.Deliver(ctx, agent.Reply{Key: agent.SessionKey{Principal: owner, Conversation: agent.Conversation{Channel: p.Channel}},
		ReplyTo: p.ReplyTo, Kind: agent.ReplyNotice, Text: text, CreatedAt: time.Now()})
	return err
}

func (r *routineRouter) Zone(ctx context.Context, owner agent.Principal) (string, error) {
	if ch, ok := r.channel(owner.Platform).(*slack.Adapter); ok {
		return ch.UserZone(ctx, owner.User)
	}
	return "", nil // Discord and the terminal have no time zone of a user
}

// hint is how the user of platform types cmd: the channel's CommandSyntax,
// else the terminal's form.
func (r *routineRouter) hint(platform string, cmd agent.Command) string {
	if cs, ok := r.channel(platform).(agent.CommandSyntax); ok {
		if h := cs.CommandHint(cmd); h != "" {
			return h
		}
	}
	return "/" + string(cmd)
}

// openRoutines builds the routines service over the runtime, when
// routines are enabled: its tools join the runtime's, its commands the
// runtime's. The scheduler runs in cmdRun.
func (a *app) openRoutines() {
	rc := a.cfg.Routines
	if !rc.Enabled {
		return
	}
	a.router = &routineRouter{}
	a.routines = &routines.Service{
		Store:       a.db,
		Runtime:     a.rt,
		Router:      a.router,
		Log:         a.log.With().Str("component", "routines").Logger(),
		Now:         a.env.now,
		MaxPerUser:  rc.MaxPerUser,
		MinInterval: rc.MinInterval.Std(),
		CatchUp:     rc.CatchUp.Std(),
		MaxFailures: rc.MaxFailures,
		DefaultZone: rc.DefaultTimezone,
		Tick:        a.env.routineTick,
	}
	a.rt.Commands = append(a.rt.Commands, routines.Commands{Service: a.routines, Hint: a.router.hint})
	a.rt.Tools = withRoutineTools(a.rt.Tools, routines.Tools{Service: a.routines})
}

// register attaches ch to the runtime, and to the routines' router.
func (a *app) register(ch agent.Channel) {
	a.rt.Register(ch)
	if a.router != nil {
		a.router.add(ch)
	}
}

// runRoutines runs the scheduler from the runtime's start until ctx ends.
func (a *app) runRoutines(ctx context.Context) {
	if a.routines == nil {
		return
	}
	select {
	case <-a.rt.Ready():
	case <-ctx.Done():
		return
	}
	if err := a.routines.Run(ctx); err != nil {
		a.log.Error().Err(err).Msg("routines: the scheduler stopped")
	}
}

// routineToolSet offers the routine tools besides the other tools.
type routineToolSet struct {
	inner    agent.ToolRunner // nil: no other tools
	routines routines.Tools
}

var (
	_ agent.ToolRunner         = routineToolSet{}
	_ agent.ToolMemoryReporter = routineToolSet{}
)

func withRoutineTools(inner agent.ToolRunner, t routines.Tools) agent.ToolRunner {
	return routineToolSet{inner: inner, routines: t}
}

func (t routineToolSet) Tools(ctx context.Context, p agent.Principal) ([]llm.Tool, error) {
	var out []llm.Tool
	if t.inner != nil {
		var err error
		if out, err = t.inner.Tools(ctx, p); err != nil {
			return nil, err
		}
	}
	more, err := t.routines.Tools(ctx, p)
	if err != nil {
		return nil, err
	}
	return append(out, more...), nil
}

func (t routineToolSet) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	if t.routines.Owns(call.Name) || t.inner == nil {
		return t.routines.Run(ctx, call)
	}
	return t.inner.Run(ctx, call)
}

func (t routineToolSet) ToolMemory() agent.ToolMemory {
	if mr, ok := t.inner.(agent.ToolMemoryReporter); ok {
		return mr.ToolMemory()
	}
	return agent.ToolMemory{}
}

const routineUsage = `Usage:
  talon routine list   [--user PRINCIPAL] [--config FILE]
      list routines (every person's, or PRINCIPAL's): number, owner, state,
      schedule, next run, last run
  talon routine add    --user PRINCIPAL [--channel ID] [--name NAME] "SCHEDULE" PROMPT
      make a routine of PRINCIPAL (platform:workspace:user) that posts at the
      top level of channel ID (Slack or Discord; the terminal has one
      conversation). SCHEDULE is a cron expression in the user's time zone
      ("0 9 * * 1-5"), "every 2h", "in 30m" or "at 2026-03-29 09:00"
  talon routine rm     ID      delete routine ID
  talon routine pause  ID      pause routine ID
  talon routine resume ID      resume routine ID from its next time
  talon routine run-now ID     run routine ID now (the running gateway starts
                               it within routines' tick, 30 s)
`

// cmdRoutine runs the routine subcommands. It works beside a running
// gateway: both use the database, and the gateway's scheduler starts runs
// recorded here.
func cmdRoutine(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"routine: list, add, rm, pause, resume or run-now?\n" + routineUsage}
	}
	sub, rest := args[0], args[1:]
	if sub == "help" || sub == "-h" || sub == "--help" {
		fmt.Fprint(e.stdout, routineUsage)
		return nil
	}
	fs := flag.NewFlagSet("routine "+sub, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	configPath := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	user := fs.String("user", "", "the routine's owner, platform:workspace:user")
	channel := fs.String("channel", "", "the channel its runs post in")
	name := fs.String("name", "", "a short title")
	// Flags may come before or after the positional arguments.
	var pos []string
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	cfg, err := loadConfig(e, *configPath)
	if err != nil {
		return err
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	rc := cfg.Routines
	cr := cliRouter{}
	if cfg.Slack.Enabled {
		cr.slack = &slack.Adapter{Config: slackConfig(cfg.Slack), Log: newLogger(cfg, e.stderr, 0)}
	}
	if cfg.Discord.Enabled {
		cr.discord = newDiscordAdapter(cfg.Discord)
		cr.discord.Log = newLogger(cfg, e.stderr, 0)
	}
	svc := &routines.Service{Store: db, Router: cr, Log: newLogger(cfg, e.stderr, 0),
		Now: e.now, MaxPerUser: rc.MaxPerUser, MinInterval: rc.MinInterval.Std(), CatchUp: rc.CatchUp.Std(),
		MaxFailures: rc.MaxFailures, DefaultZone: rc.DefaultTimezone}
	now := time.Now
	if e.now != nil {
		now = e.now
	}
	show := func(r store.Routine, err error, what string) error {
		var ue *routines.UserError
		if errors.As(err, &ue) {
			return errors.New(ue.Msg)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s %s\n", what, routines.Describe(r, now()))
		return nil
	}
	switch sub {
	case "list":
		var owner *agent.Principal
		if *user != "" {
			p, err := agent.ParsePrincipal(*user)
			if err != nil {
				return &usageError{err.Error()}
			}
			owner = &p
		}
		rs, err := svc.List(ctx, owner)
		if err != nil {
			return err
		}
		if len(rs) == 0 {
			fmt.Fprintln(e.stdout, "No routines.")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tOWNER\tSTATE\tSCHEDULE\tZONE\tNEXT RUN (UTC)\tLAST RUN\tNAME")
		for _, r := range rs {
			state := r.State
			if r.State == "paused" {
				state += ": " + r.Reason
			}
			next, last := "-", "-"
			if !r.NextAt.IsZero() && r.State == "active" {
				next = r.NextAt.UTC().Format("2006-01-02 15:04")
			}
			if !r.LastAt.IsZero() {
				last = r.LastAt.UTC().Format("2006-01-02 15:04") + " " + r.LastState
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%q\n", r.ID, r.Owner, state, r.Schedule, r.TZ, next, last, r.Name)
		}
		return tw.Flush()
	case "add":
		if *user == "" || len(pos) < 2 {
			return &usageError{"routine add: --user and \"SCHEDULE\" PROMPT are required\n" + routineUsage}
		}
		p, err := agent.ParsePrincipal(*user)
		if err != nil {
			return &usageError{err.Error()}
		}
		r, err := svc.Create(ctx, p, agent.Conversation{Channel: *channel},
			routines.NewRoutine{Schedule: pos[0], Prompt: strings.Join(pos[1:], " "), Name: *name})
		return show(r, err, "Created.")
	case "rm", "pause", "resume", "run-now":
		if len(pos) != 1 {
			return &usageError{"routine " + sub + ": which routine? give its ID (see talon routine list)\n" + routineUsage}
		}
		id, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil {
			return &usageError{fmt.Sprintf("routine %s: %q is not a routine ID", sub, pos[0])}
		}
		switch sub {
		case "rm":
			r, err := svc.Delete(ctx, nil, id)
			return show(r, err, "Deleted.")
		case "pause":
			r, err := svc.Pause(ctx, nil, id)
			return show(r, err, "Paused.")
		case "resume":
			r, err := svc.Resume(ctx, nil, id)
			return show(r, err, "Resumed.")
		}
		r, err := svc.Get(ctx, id)
		if err == nil {
			err = svc.RecordRunNow(ctx, r)
		}
		return show(r, err, "A run is recorded; the running gateway starts it:")
	}
	return &usageError{fmt.Sprintf("routine: unknown subcommand %q\n%s", sub, routineUsage)}
}

// cliRouter places routines the operator makes: at the top level of a
// Slack or Discord channel, or the terminal's conversation. It checks a
// Slack channel against the configuration and asks Slack whether it is
// still there, and before a resume asks Discord whether a Discord
// routine's channel and owner are still there; the gateway checks every
// destination again before each run.
type cliRouter struct {
	slack   *slack.Adapter   // nil when Slack is not configured
	discord *discord.Adapter // nil when Discord is not configured
}

func (r cliRouter) Route(ctx context.Context, owner agent.Principal, conv agent.Conversation, dm bool) (routines.Place, error) {
	if dm {
		return routines.Place{}, errors.New("from the command line a routine posts in a channel (--channel)")
	}
	switch owner.Platform {
	case terminal.Platform:
		return routines.Place{}, nil
	case discord.Platform:
		rt, err := discord.ChannelReplyTo(conv.Channel)
		return routines.Place{Channel: conv.Channel, ReplyTo: rt}, err
	case slack.Platform:
		if conv.Channel == "" {
			return routines.Place{}, errors.New("--channel is required for a Slack routine")
		}
		if r.slack == nil {
			return routines.Place{}, errors.New("Slack is not configured (slack.enabled)")
		}
		c, rt, err := r.slack.RoutineTarget(ctx, owner.User, conv.Channel, false)
		return routines.Place{Channel: c, ReplyTo: rt}, err
	}
	return routines.Place{}, fmt.Errorf("platform %q has no channels here", owner.Platform)
}

func (r cliRouter) Check(ctx context.Context, owner agent.Principal, p routines.Place) error {
	if owner.Platform == slack.Platform && r.slack != nil {
		return r.slack.RoutineCheck(ctx, owner.User, p.Channel)
	}
	if owner.Platform == discord.Platform && r.discord != nil {
		return r.discord.RoutineCheckREST(ctx, owner.User, p.Channel)
	}
	return nil
}

func (cliRouter) Notify(context.Context, agent.Principal, routines.Place, string) error { return nil }

func (cliRouter) Zone(context.Context, agent.Principal) (string, error) { return "", nil }
