package routines

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule is when a routine runs: a cron expression read in its owner's
// time zone, a fixed interval, or one moment (a reminder).
type Schedule struct {
	kind  kind
	cron  cron.Schedule // of wall-clock times, in UTC (see after)
	every time.Duration
	at    time.Time
	loc   *time.Location
	text  string
}

type kind int

const (
	kindCron kind = iota + 1
	kindEvery
	kindAt
)

// cronParser reads five-field cron expressions and the descriptors
// (@daily, @weekly, …) except @every, which is written "every 2h" here.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule reads a schedule as people and models write it:
//
//   - a cron expression, "0 9 * * 1-5" (minute hour day-of-month month
//     day-of-week) or "@daily", read in loc;
//   - "every 2h", "every 90m", "every 3 hours", "every day": a fixed
//     interval from now;
//   - "in 2h", "in 20 minutes": once, that long from now;
//   - "at 2026-03-29 09:00" (in loc), "at 2026-03-29T09:00:00Z" (RFC
//     3339), or "at 17:30" (the next 17:30 in loc): once.
//
// now is the moment "in" and "at HH:MM" count from. The error says what
// is wrong and what would be right.
func ParseSchedule(s string, loc *time.Location, now time.Time) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s = strings.Join(strings.Fields(s), " ")
	low := strings.ToLower(s)
	switch {
	case s == "":
		return Schedule{}, errors.New(`the schedule is empty: give a cron expression ("0 9 * * 1-5"), "every 2h", "in 30m" or "at 2026-03-29 09:00"`)
	case strings.HasPrefix(low, "every "):
		d, err := parseDuration(s[len("every "):])
		if err != nil {
			return Schedule{}, fmt.Errorf(`schedule %q: %w; for a time of day use a cron expression ("0 9 * * *" is every day at 9:00)`, s, err)
		}
		return Schedule{kind: kindEvery, every: d, loc: loc, text: "every " + fmtDuration(d)}, nil
	case strings.HasPrefix(low, "in "):
		d, err := parseDuration(s[len("in "):])
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule %q: %w", s, err)
		}
		return atSchedule(now.Add(d), loc), nil
	case strings.HasPrefix(low, "at "):
		t, err := parseAt(strings.TrimSpace(s[len("at "):]), loc, now)
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule %q: %w", s, err)
		}
		return atSchedule(t, loc), nil
	}
	expr := strings.TrimSpace(strings.TrimPrefix(s, "cron "))
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return Schedule{}, fmt.Errorf("schedule %q: a schedule is read in its owner's time zone; set yours instead of naming one here", s)
	}
	if strings.HasPrefix(expr, "@every") {
		return Schedule{}, fmt.Errorf(`schedule %q: write an interval as "every 2h"`, s)
	}
	spec, err := cronParser.Parse(expr)
	if err != nil {
		return Schedule{}, fmt.Errorf(`schedule %q is not a cron expression (%v): want five fields, minute hour day-of-month month day-of-week, e.g. "0 9 * * 1-5" for weekdays at 9:00; or "every 2h", "in 30m", "at 2026-03-29 09:00"`, s, err)
	}
	if ss, ok := spec.(*cron.SpecSchedule); ok {
		ss.Location = time.UTC
	}
	return Schedule{kind: kindCron, cron: spec, loc: loc, text: "cron " + expr}, nil
}

func atSchedule(t time.Time, loc *time.Location) Schedule {
	t = t.UTC().Truncate(time.Second)
	return Schedule{kind: kindAt, at: t, loc: loc, text: "at " + t.Format(time.RFC3339)}
}

// parseAt reads the moment of an "at" schedule.
func parseAt(s string, loc *time.Location, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	if c, err := time.Parse("15:04", s); err == nil {
		n := now.In(loc)
		t := time.Date(n.Year(), n.Month(), n.Day(), c.Hour(), c.Minute(), 0, 0, loc)
		if !t.After(now) {
			t = time.Date(n.Year(), n.Month(), n.Day()+1, c.Hour(), c.Minute(), 0, 0, loc)
		}
		return t, nil
	}
	return time.Time{}, errors.New(`want a date and time, "2026-03-29 09:00" (in your time zone) or "2026-03-29T09:00:00Z", or a time of day, "17:30"`)
}

// parseDuration reads "2h", "1h30m", "90 minutes", "3 hours", "day",
// "2 days", "week".
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return 0, errors.New("the interval must be positive")
		}
		return d, nil
	}
	num, unit, ok := strings.Cut(s, " ")
	n := 1
	if ok {
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return 0, fmt.Errorf(`%q is not a duration: want "2h", "90m", "3 hours" or "2 days"`, s)
		}
		n = v
	} else {
		unit = num
	}
	units := map[string]time.Duration{
		"minute": time.Minute, "min": time.Minute, "hour": time.Hour, "day": 24 * time.Hour, "week": 7 * 24 * time.Hour,
	}
	u, found := units[strings.TrimSuffix(unit, "s")]
	if !found {
		return 0, fmt.Errorf(`%q is not a duration: want "2h", "90m", "3 hours" or "2 days"`, s)
	}
	if n > 10000 {
		return 0, fmt.Errorf("%q is too long an interval", s)
	}
	return time.Duration(n) * u, nil
}

// fmtDuration writes d as ParseDuration reads it back, without the zero
// units time.Duration.String adds ("2h", not "2h0m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// String is the schedule as it is stored, and parsed back by
// ParseSchedule: "cron 0 9 * * 1-5", "every 2h", "at 2026-03-29T07:00:00Z".
func (s Schedule) String() string { return s.text }

// Once reports whether the schedule runs only once (a reminder).
func (s Schedule) Once() bool { return s.kind == kindAt }

// First returns the schedule's first run after now: for an interval, one
// interval from now.
func (s Schedule) First(now time.Time) time.Time {
	switch s.kind {
	case kindEvery:
		return now.Add(s.every).Truncate(time.Second)
	case kindAt:
		return s.at
	}
	return s.After(now, now)
}

// After returns the first run after t of the schedule whose run at prev
// is known (an interval counts from prev), or the zero time when there is
// none.
//
// A cron schedule is read in wall-clock time of its zone: the next
// matching local time after t's is found, then placed in the zone. So a
// daily 9:00 stays at 9:00 local across a change of daylight saving time;
// a local time that occurs twice (the hour the clocks go back) runs once;
// a local time that does not exist that day (the hour skipped when they go
// forward) runs at the same distance past the change, e.g. 2:30 as 3:30.
func (s Schedule) After(prev, t time.Time) time.Time {
	switch s.kind {
	case kindAt:
		if s.at.After(t) {
			return s.at
		}
		return time.Time{}
	case kindEvery:
		if !t.Before(prev) {
			k := t.Sub(prev)/s.every + 1
			return prev.Add(k * s.every)
		}
		return prev.Add(s.every)
	}
	w := wall(t, s.loc)
	for range 1000 {
		w = s.cron.Next(w)
		if w.IsZero() {
			return time.Time{}
		}
		if r := unwall(w, s.loc); r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// wall is t's local time in loc, written as a UTC time.
func wall(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), 0, time.UTC)
}

// unwall places the local time w (written as UTC) in loc.
func unwall(w time.Time, loc *time.Location) time.Time {
	return time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, loc)
}

// MinGap returns the shortest time between two of the schedule's next
// runs after now (looking a few dozen runs ahead), 0 for a one-off.
func (s Schedule) MinGap(now time.Time) time.Duration {
	switch s.kind {
	case kindAt:
		return 0
	case kindEvery:
		return s.every
	}
	gap := time.Duration(0)
	prev := s.After(now, now)
	for i := 0; i < 48 && !prev.IsZero(); i++ {
		next := s.After(prev, prev)
		if next.IsZero() {
			break
		}
		if d := next.Sub(prev); gap == 0 || d < gap {
			gap = d
		}
		prev = next
	}
	return gap
}
