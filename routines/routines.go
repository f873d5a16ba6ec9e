package routines

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// Store is what routines need from persistence: the SQLite store
// (store.DB) and the PostgreSQL store (store/postgres) implement it.
type Store interface {
	CreateRoutine(ctx context.Context, r store.Routine, max int) (store.Routine, error)
	Routines(ctx context.Context, owner *agent.Principal) ([]store.Routine, error)
	GetRoutine(ctx context.Context, id int64) (store.Routine, error)
	DueRoutines(ctx context.Context, now time.Time) ([]store.Routine, error)
	DeleteRoutine(ctx context.Context, id int64) error
	SetRoutineState(ctx context.Context, id int64, state, reason string, next *time.Time) error
	OweRoutineNotice(ctx context.Context, id int64, text string, at time.Time) error
	DueRoutineNotices(ctx context.Context, now time.Time) ([]store.RoutineNotice, error)
	ClaimRoutineNotice(ctx context.Context, id int64, at, next time.Time) (bool, error)
	ClearRoutineNotice(ctx context.Context, id int64, at time.Time) error
	AdvanceRoutine(ctx context.Context, id int64, from time.Time, missed []time.Time, run, next time.Time) (store.RoutineRun, bool, bool, error)
	StartRoutineRun(ctx context.Context, id int64, scheduled time.Time) (store.RoutineRun, bool, error)
	SetRunInbound(ctx context.Context, run int64, in agent.InboundID) error
	OpenRoutineRuns(ctx context.Context) ([]store.RoutineRun, error)
	FinishRoutineRun(ctx context.Context, run int64, state, reason string) (int, bool, error)
	TimeZone(ctx context.Context, p agent.Principal) (string, error)
	SetTimeZone(ctx context.Context, p agent.Principal, tz string) error
}

var _ Store = (*store.DB)(nil)

// Runtime takes a run as an inbound message. *agent.Runtime implements it.
type Runtime interface {
	Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error)
}

// Place is where a routine posts on its owner's platform: the
// conversation's channel and the channel's ReplyTo for it.
type Place struct {
	Channel string
	ReplyTo string
}

// Router knows the platforms: where a routine may post, how to tell its
// owner something, and what time zone the owner is in.
type Router interface {
	// Route returns where a routine of owner made in conv posts: conv's
	// channel, at its top level (dm false), or owner's direct messages
	// (dm true). It fails, saying why, when the owner may not post there
	// or the gateway's configuration does not serve it.
	Route(ctx context.Context, owner agent.Principal, conv agent.Conversation, dm bool) (Place, error)
	// Check says why a routine of owner may no longer post at p (the
	// conversation is gone, the bot was removed, the owner deactivated),
	// nil when it may.
	Check(ctx context.Context, owner agent.Principal, p Place) error
	// Notify tells owner text at p.
	Notify(ctx context.Context, owner agent.Principal, p Place, text string) error
	// Zone returns the IANA time zone the platform has for owner, "" when
	// it has none.
	Zone(ctx context.Context, owner agent.Principal) (string, error)
}

// Service creates, lists and changes routines and runs them on time. Fields
// are set before the first call and not changed after.
type Service struct {
	// Store persists routines and runs; required.
	Store Store
	// Runtime runs them; required by Run and RunNow.
	Runtime Runtime
	// Router knows the platforms; required.
	Router Router
	// Log receives operational events (never prompts or replies).
	Log zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxPerUser bounds the routines of one person (default 20).
	MaxPerUser int
	// MinInterval is the least time between two runs of a routine
	// (default 5 minutes).
	MinInterval time.Duration
	// CatchUp is how late a run may start: a run missed while the gateway
	// was down runs at start-up if it is younger, else is recorded missed
	// (default 1 hour).
	CatchUp time.Duration
	// MaxFailures is how many runs may fail in a row before the routine
	// pauses (default 3).
	MaxFailures int
	// Tick is the longest wait between two looks at the schedule (default
	// 30 s); a change of a routine wakes the loop at once.
	Tick time.Duration
	// DefaultZone is the time zone of people who set none and whose
	// platform has none ("" means UTC).
	DefaultZone string

	once sync.Once
	wake chan struct{}
}

func (s *Service) init() {
	s.once.Do(func() {
		s.wake = make(chan struct{}, 1)
		if s.Now == nil {
			s.Now = time.Now
		}
		if s.MaxPerUser <= 0 {
			s.MaxPerUser = 20
		}
		if s.MinInterval <= 0 {
			s.MinInterval = 5 * time.Minute
		}
		if s.CatchUp <= 0 {
			s.CatchUp = time.Hour
		}
		if s.MaxFailures <= 0 {
			s.MaxFailures = 3
		}
		if s.Tick <= 0 {
			s.Tick = 30 * time.Second
		}
	})
}

// poke wakes the scheduler's loop: a routine changed.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// UserError is a request a person made that cannot be done as asked: its
// text says why and what to do, and is shown to them as it is.
type UserError struct{ Msg string }

func (e *UserError) Error() string { return e.Msg }

func userErr(format string, args ...any) error { return &UserError{Msg: fmt.Sprintf(format, args...)} }

// Limits of what a routine holds.
const (
	maxPrompt = 4000
	maxName   = 80
)

// routineThread prefixes the Thread of a routine's session key: each
// routine has a session of its own.
const routineThread = "routine-"

// IsRoutineSession reports whether k is the session of a routine's runs.
func IsRoutineSession(k agent.SessionKey) bool {
	return strings.HasPrefix(k.Conversation.Thread, routineThread)
}

// NewRoutine is what a person asks for: Schedule as ParseSchedule reads
// it, the Prompt each run starts with, a Name (optional) and whether runs
// post to the owner's direct messages rather than where it was asked.
type NewRoutine struct {
	Schedule string
	Prompt   string
	Name     string
	DM       bool
}

// Zone returns the time zone owner's schedules are read in: the one they
// set, else their platform's, else DefaultZone, else UTC.
func (s *Service) Zone(ctx context.Context, owner agent.Principal) *time.Location {
	s.init()
	tz, err := s.Store.TimeZone(ctx, owner)
	if err != nil {
		s.Log.Warn().Err(err).Msg("routines: time zone not read; using the default")
	}
	if tz == "" && s.Router != nil {
		if tz, err = s.Router.Zone(ctx, owner); err != nil {
			s.Log.Debug().Err(err).Str("platform", owner.Platform).Msg("routines: the platform's time zone of a user was not read")
		}
	}
	for _, name := range []string{tz, s.DefaultZone} {
		if name == "" {
			continue
		}
		if loc, err := time.LoadLocation(name); err == nil {
			return loc
		}
	}
	return time.UTC
}

// SetZone records owner's time zone, checked; "" forgets it.
func (s *Service) SetZone(ctx context.Context, owner agent.Principal, tz string) error {
	tz = strings.TrimSpace(tz)
	if tz != "" {
		if _, err := time.LoadLocation(tz); err != nil || strings.EqualFold(tz, "local") {
			return userErr("%q is not a time zone I know: use an IANA name such as Europe/Paris, America/New_York or UTC", tz)
		}
	}
	return s.Store.SetTimeZone(ctx, owner, tz)
}

// Create makes a routine for owner, made in conv. Runs post there (at its
// top level) or in the owner's direct messages.
func (s *Service) Create(ctx context.Context, owner agent.Principal, conv agent.Conversation, n NewRoutine) (store.Routine, error) {
	s.init()
	prompt := strings.TrimSpace(n.Prompt)
	switch {
	case prompt == "":
		return store.Routine{}, userErr("a routine needs a prompt: what should be done at each run")
	case len(prompt) > maxPrompt:
		return store.Routine{}, userErr("the prompt is %d bytes; a routine's prompt may have at most %d", len(prompt), maxPrompt)
	}
	if IsRoutineSession(agent.SessionKey{Conversation: conv}) {
		return store.Routine{}, userErr("a routine's run cannot create routines")
	}
	loc := s.Zone(ctx, owner)
	now := s.Now()
	sch, err := ParseSchedule(n.Schedule, loc, now)
	if err != nil {
		return store.Routine{}, &UserError{Msg: err.Error()}
	}
	if gap := sch.MinGap(now); !sch.Once() && gap < s.MinInterval {
		return store.Routine{}, userErr("runs of %q would be %s apart; routines run at most every %s", n.Schedule, gap, s.MinInterval)
	}
	first := sch.First(now)
	if first.IsZero() || !first.After(now) {
		return store.Routine{}, userErr("%q never runs after now (%s)", n.Schedule, now.In(loc).Format("2006-01-02 15:04 MST"))
	}
	place, err := s.Router.Route(ctx, owner, conv, n.DM)
	if err != nil {
		return store.Routine{}, &UserError{Msg: "I cannot post there for you: " + err.Error()}
	}
	notify := place
	if !n.DM {
		if dm, err := s.Router.Route(ctx, owner, conv, true); err == nil {
			notify = dm
		}
	}
	name := strings.TrimSpace(n.Name)
	if name == "" {
		name = prompt
	}
	name = clip(strings.Join(strings.Fields(name), " "), maxName)
	dest := "here"
	if n.DM {
		dest = "dm"
	}
	r, err := s.Store.CreateRoutine(ctx, store.Routine{
		Owner: owner, Name: name, Schedule: sch.String(), TZ: loc.String(), Prompt: prompt,
		Dest: dest, Channel: place.Channel, ReplyTo: place.ReplyTo, NotifyTo: notify.ReplyTo,
		NextAt: first,
	}, s.MaxPerUser)
	if errors.Is(err, store.ErrRoutineLimit) {
		return store.Routine{}, userErr("you have %d routines, the most one person may have; delete one first", s.MaxPerUser)
	}
	if err != nil {
		return store.Routine{}, err
	}
	s.Log.Info().Int64("routine", r.ID).Str("principal", owner.String()).Str("schedule", r.Schedule).Msg("routine created")
	s.poke()
	return r, nil
}

// List returns owner's routines (every routine when owner is nil).
func (s *Service) List(ctx context.Context, owner *agent.Principal) ([]store.Routine, error) {
	return s.Store.Routines(ctx, owner)
}

// get returns routine id when owner (nil: the operator) may change it.
func (s *Service) get(ctx context.Context, owner *agent.Principal, id int64) (store.Routine, error) {
	r, err := s.Store.GetRoutine(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && owner != nil && r.Owner != *owner) {
		// Another person's routine is as unknown as a missing one.
		return store.Routine{}, userErr("there is no routine %d of yours; list yours to see their numbers", id)
	}
	return r, err
}

// Delete removes routine id of owner (any routine when owner is nil).
func (s *Service) Delete(ctx context.Context, owner *agent.Principal, id int64) (store.Routine, error) {
	r, err := s.get(ctx, owner, id)
	if err != nil {
		return r, err
	}
	if err := s.Store.DeleteRoutine(ctx, id); err != nil {
		return r, err
	}
	s.Log.Info().Int64("routine", id).Msg("routine deleted")
	return r, nil
}

// Pause stops routine id of owner (any when owner is nil) from running
// until it is resumed.
func (s *Service) Pause(ctx context.Context, owner *agent.Principal, id int64) (store.Routine, error) {
	r, err := s.get(ctx, owner, id)
	if err != nil {
		return r, err
	}
	if r.State != "active" {
		return r, userErr("routine %d is %s already", id, r.State)
	}
	r.State, r.Reason = "paused", "paused by request"
	return r, s.Store.SetRoutineState(ctx, id, r.State, r.Reason, nil)
}

// Resume makes a paused routine run again, from its next time after now.
func (s *Service) Resume(ctx context.Context, owner *agent.Principal, id int64) (store.Routine, error) {
	s.init()
	r, err := s.get(ctx, owner, id)
	if err != nil {
		return r, err
	}
	if r.State != "paused" {
		return r, userErr("routine %d is %s, not paused", id, r.State)
	}
	loc, err := time.LoadLocation(r.TZ)
	if err != nil {
		loc = time.UTC
	}
	now := s.Now()
	sch, err := ParseSchedule(r.Schedule, loc, now)
	if err != nil {
		return r, err
	}
	next := sch.First(now)
	if sch.Once() && !next.After(now) {
		return r, userErr("routine %d was a reminder for %s, which has passed; make a new one", id, next.In(loc).Format("2006-01-02 15:04 MST"))
	}
	if err := s.Router.Check(ctx, r.Owner, Place{Channel: r.Channel, ReplyTo: r.ReplyTo}); err != nil {
		return r, &UserError{Msg: fmt.Sprintf("routine %d still cannot post where it did: %v", id, err)}
	}
	r.State, r.Reason, r.NextAt = "active", "", next
	if err := s.Store.SetRoutineState(ctx, id, "active", "", &next); err != nil {
		return r, err
	}
	s.poke()
	return r, nil
}

// RunNow starts a run of routine id of owner (any when owner is nil) now,
// besides its schedule.
func (s *Service) RunNow(ctx context.Context, owner *agent.Principal, id int64) (store.Routine, error) {
	s.init()
	r, err := s.get(ctx, owner, id)
	if err != nil {
		return r, err
	}
	if r.State == "paused" {
		return r, userErr("routine %d is paused (%s); resume it first", id, r.Reason)
	}
	run, started, err := s.Store.StartRoutineRun(ctx, id, s.Now().Truncate(time.Millisecond))
	if err != nil || !started {
		return r, err
	}
	return r, s.handIn(ctx, r, run)
}

// Get returns routine id.
func (s *Service) Get(ctx context.Context, id int64) (store.Routine, error) {
	return s.get(ctx, nil, id)
}

// RecordRunNow records a run of r now without starting it: the scheduler
// of the running gateway starts it (an operator's command runs in another
// process).
func (s *Service) RecordRunNow(ctx context.Context, r store.Routine) error {
	s.init()
	if r.State == "paused" {
		return userErr("routine %d is paused (%s); resume it first", r.ID, r.Reason)
	}
	_, _, err := s.Store.StartRoutineRun(ctx, r.ID, s.Now().Truncate(time.Millisecond))
	return err
}

// Run schedules the routines until ctx ends: first it hands the runtime
// the runs a previous process recorded but did not hand in, then it
// starts each run when it is due and follows runs to their end.
func (s *Service) Run(ctx context.Context) error {
	s.init()
	if s.Store == nil || s.Runtime == nil || s.Router == nil {
		return errors.New("routines: the scheduler needs a Store, a Runtime and a Router")
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
		if err := s.Step(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn().Err(err).Msg("routines: a look at the schedule failed; trying again")
		}
		t.Reset(s.Tick)
	}
}

// Step does once what Run does on each tick, at the clock's time: hand in
// runs recorded and not handed in, start the runs due, and finish the runs
// whose turn has ended.
func (s *Service) Step(ctx context.Context) error {
	s.init()
	var errs []error
	if err := s.follow(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.notices(ctx); err != nil {
		errs = append(errs, err)
	}
	due, err := s.Store.DueRoutines(ctx, s.Now())
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range due {
		if err := s.due(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("routine %d: %w", r.ID, err))
		}
	}
	return errors.Join(errs...)
}

// maxMissed bounds the missed runs recorded at once, the latest kept.
const maxMissed = 100

// due starts the run of r that is due, if it is young enough, and
// records the older ones missed.
func (s *Service) due(ctx context.Context, r store.Routine) error {
	now := s.Now()
	loc, err := time.LoadLocation(r.TZ)
	if err != nil {
		loc = time.UTC
	}
	sch, err := ParseSchedule(r.Schedule, loc, now)
	if err != nil {
		// Written by Create, which parsed it: only a hand-edited row.
		return s.pause(ctx, r, "its schedule cannot be read: "+err.Error())
	}
	// The runs from r.NextAt to now, the last of them the one to start.
	times := []time.Time{r.NextAt}
	skipped := 0
	for {
		n := sch.After(times[len(times)-1], times[len(times)-1])
		if n.IsZero() || n.After(now) {
			break
		}
		times = append(times, n)
		if len(times) > maxMissed+1 {
			times = times[1:]
			skipped++
		}
	}
	last := times[len(times)-1]
	missed := times[:len(times)-1]
	run := time.Time{}
	if now.Sub(last) <= s.CatchUp {
		run = last
	} else {
		missed = times
	}
	next := sch.After(last, now)
	rr, moved, started, err := s.Store.AdvanceRoutine(ctx, r.ID, r.NextAt, missed, run, next)
	if err != nil || !moved {
		return err
	}
	if len(missed) > 0 {
		s.Log.Info().Int64("routine", r.ID).Int("missed", len(missed)+skipped).Dur("catch_up", s.CatchUp).
			Msg("routines: runs missed while the gateway was down were recorded missed")
	}
	if !started {
		return nil
	}
	return s.handIn(ctx, r, rr)
}

// handIn hands a recorded run to the runtime as an inbound of the
// routine's session. The dedupe key is the run's, so a run handed in
// twice (a crash between the two writes) is one turn.
func (s *Service) handIn(ctx context.Context, r store.Routine, run store.RoutineRun) error {
	if err := s.Router.Check(ctx, r.Owner, Place{Channel: r.Channel, ReplyTo: r.ReplyTo}); err != nil {
		if _, _, ferr := s.Store.FinishRoutineRun(ctx, run.ID, "failed", "cannot post: "+err.Error()); ferr != nil {
			return ferr
		}
		return s.pause(ctx, r, "it can no longer post where it did: "+err.Error())
	}
	in := agent.Inbound{
		DedupeKey: fmt.Sprintf("routine/%d/%d", r.ID, run.ScheduledAt.UnixMilli()),
		Key: agent.SessionKey{Principal: r.Owner,
			Conversation: agent.Conversation{Channel: r.Channel, Thread: fmt.Sprintf("%s%d", routineThread, r.ID)}},
		Text:       runText(r, run.ScheduledAt),
		ReplyTo:    r.ReplyTo,
		ReceivedAt: s.Now(),
	}
	q, err := s.Runtime.Accept(ctx, in)
	if err != nil && !errors.Is(err, agent.ErrDuplicate) {
		return fmt.Errorf("hand in run %d: %w", run.ID, err)
	}
	if err := s.Store.SetRunInbound(ctx, run.ID, q.ID); err != nil {
		return err
	}
	s.Log.Info().Int64("routine", r.ID).Int64("run", run.ID).Int64("inbound", int64(q.ID)).Msg("routine run started")
	return nil
}

// runText is the message a run's turn answers: the routine's prompt,
// introduced so that the model knows it is a scheduled run, and so that
// a prompt that looks like a command is never taken for one.
func runText(r store.Routine, at time.Time) string {
	loc, err := time.LoadLocation(r.TZ)
	if err != nil {
		loc = time.UTC
	}
	return fmt.Sprintf("[Scheduled run of routine %d %q, due %s. Its owner wrote the request below when they made it; "+
		"your answer is posted for them without a person waiting for it.]\n\n%s",
		r.ID, r.Name, at.In(loc).Format("Mon 2006-01-02 15:04 MST"), r.Prompt)
}

// follow hands in the runs recorded but not handed in, and finishes the
// runs whose turn and reply have ended.
func (s *Service) follow(ctx context.Context) error {
	runs, err := s.Store.OpenRoutineRuns(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, run := range runs {
		var state, reason string
		switch {
		case run.Inbound == 0:
			r, err := s.Store.GetRoutine(ctx, run.Routine)
			if errors.Is(err, store.ErrNotFound) {
				_, _, err = s.Store.FinishRoutineRun(ctx, run.ID, "failed", "the routine was deleted")
			} else if err == nil {
				err = s.handIn(ctx, r, run)
			}
			if err != nil {
				errs = append(errs, err)
			}
			continue
		case run.InboundState == "failed":
			state, reason = "failed", "its turn failed"
		case run.InboundState != "done":
			continue // queued or running
		case run.ReplyState == "failed":
			state, reason = "failed", "its reply could not be posted: "+run.ReplyReason
		case run.ReplyState == "delivered" || run.ReplyState == "":
			state = "done"
		default:
			continue // the reply is being delivered
		}
		failures, finished, err := s.Store.FinishRoutineRun(ctx, run.ID, state, reason)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !finished || state == "done" {
			continue
		}
		r, err := s.Store.GetRoutine(ctx, run.Routine)
		if err != nil {
			continue // deleted meanwhile
		}
		switch {
		case run.ReplyState == "failed":
			// The destination refuses the bot: running again would fail
			// the same way, and the owner should know now.
			err = s.pause(ctx, r, reason)
		case failures >= s.MaxFailures:
			err = s.pause(ctx, r, fmt.Sprintf("its last %d runs failed (the last: %s)", failures, reason))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pause pauses r for reason and tells its owner. The notice is recorded
// as owed before it is sent, and is tried again on later looks at the
// schedule, with backoff, until it is delivered or the routine is resumed
// or deleted.
func (s *Service) pause(ctx context.Context, r store.Routine, reason string) error {
	reason = strings.TrimRight(reason, ". ")
	text := fmt.Sprintf("Your reminder %d (%q) did not get through: %s.", r.ID, r.Name, reason)
	if r.State != "done" {
		if err := s.Store.SetRoutineState(ctx, r.ID, "paused", reason, nil); err != nil {
			return err
		}
		s.Log.Warn().Int64("routine", r.ID).Str("principal", r.Owner.String()).Str("reason", reason).Msg("routine paused")
		text = fmt.Sprintf("I paused your routine %d (%q): %s. Nothing of it is lost; resume it once that is fixed, or delete it.", r.ID, r.Name, reason)
	}
	now := s.Now()
	if err := s.Store.OweRoutineNotice(ctx, r.ID, text, now); errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile
	} else if err != nil {
		return err
	}
	return s.notice(ctx, r, store.RoutineNotice{Routine: r.ID, Text: text, At: now})
}

// Backoff between attempts at a notice: noticeRetry after the first,
// doubling up to noticeRetryMax.
const (
	noticeRetry    = 30 * time.Second
	noticeRetryMax = time.Hour
)

func noticeBackoff(tries int) time.Duration {
	d := noticeRetry
	for i := 0; i < tries && d < noticeRetryMax; i++ {
		d *= 2
	}
	return min(d, noticeRetryMax)
}

// notice makes one attempt at n, a notice owed to r's owner, unless
// another process took it.
func (s *Service) notice(ctx context.Context, r store.Routine, n store.RoutineNotice) error {
	next := s.Now().Add(noticeBackoff(n.Tries))
	ok, err := s.Store.ClaimRoutineNotice(ctx, n.Routine, n.At, next)
	if err != nil || !ok {
		return err
	}
	to := Place{Channel: r.Channel, ReplyTo: r.NotifyTo}
	if err := s.Router.Notify(ctx, r.Owner, to, n.Text); err != nil {
		s.Log.Warn().Err(err).Int64("routine", r.ID).Int("attempt", n.Tries+1).Time("retry_at", next).
			Msg("routines: the owner could not be told their routine paused; trying again later (it shows as paused in their list)")
		return nil
	}
	return s.Store.ClearRoutineNotice(ctx, n.Routine, next)
}

// notices tries again the notices owed whose time has come.
func (s *Service) notices(ctx context.Context) error {
	due, err := s.Store.DueRoutineNotices(ctx, s.Now())
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range due {
		r, err := s.Store.GetRoutine(ctx, n.Routine)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err == nil {
			err = s.notice(ctx, r, n)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("routine %d: notice: %w", n.Routine, err))
		}
	}
	return errors.Join(errs...)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
