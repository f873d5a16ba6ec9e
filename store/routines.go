package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
)

// Routine is work a person scheduled: a prompt run as a turn of theirs on
// a schedule, whose reply goes to a destination.
type Routine struct {
	ID    int64
	Owner agent.Principal
	// Name is a short title ("standup summary").
	Name string
	// Schedule is the schedule as the routines package writes it ("cron
	// 0 9 * * 1-5", "every 2h", "at 2026-03-29T09:00:00Z"); TZ the IANA
	// zone a cron schedule is read in.
	Schedule string
	TZ       string
	Prompt   string
	// Dest is "here" (the conversation it was made in) or "dm" (the
	// owner's direct messages); Channel and ReplyTo say where that is on
	// the owner's platform, NotifyTo where notices to the owner go.
	Dest     string
	Channel  string
	ReplyTo  string
	NotifyTo string
	// State is "active", "paused" (Reason says why) or "done" (a one-off
	// that ran).
	State  string
	Reason string
	// Failures counts the runs that failed in a row.
	Failures int
	// NextAt is when it runs next; zero when it does not.
	NextAt    time.Time
	CreatedAt time.Time
	// LastAt and LastState are of its latest run, zero and "" when none.
	LastAt    time.Time
	LastState string
}

// RoutineRun is one run of a routine as the scheduler tracks it, with the
// state of its turn and reply.
type RoutineRun struct {
	ID          int64
	Routine     int64
	ScheduledAt time.Time
	// State is "started", "done", "failed" or "missed".
	State   string
	Inbound agent.InboundID
	// InboundState is the state of its inbound ("queued", "running",
	// "done", "failed"), "" when none was accepted yet; ReplyState and
	// ReplyReason are of its reply ("pending", "delivered", "failed"),
	// "" when there is none yet.
	InboundState string
	ReplyState   string
	ReplyReason  string
}

// Errors about routines.
var (
	// ErrRoutineLimit: the owner has as many routines as they may.
	ErrRoutineLimit = errors.New("store: routine limit reached")
)

const routineCols = `r.id, p.platform, p.workspace, p.user, r.name, r.schedule, r.tz, r.prompt, r.dest, r.channel,
	r.reply_to, r.notify_to, r.state, r.reason, r.failures, r.next_at, r.created_at,
	COALESCE((SELECT scheduled_at FROM routine_runs WHERE routine_id = r.id AND state != 'missed' ORDER BY scheduled_at DESC LIMIT 1), 0),
	COALESCE((SELECT state FROM routine_runs WHERE routine_id = r.id AND state != 'missed' ORDER BY scheduled_at DESC LIMIT 1), '')
	FROM routines r JOIN principals p ON p.id = r.principal_id`

func scanRoutine(s rowScanner) (Routine, error) {
	var (
		r                      Routine
		next, created, lastRun int64
	)
	err := s.Scan(&r.ID, &r.Owner.Platform, &r.Owner.Workspace, &r.Owner.User, &r.Name, &r.Schedule, &r.TZ, &r.Prompt,
		&r.Dest, &r.Channel, &r.ReplyTo, &r.NotifyTo, &r.State, &r.Reason, &r.Failures, &next, &created, &lastRun, &r.LastState)
	r.NextAt, r.CreatedAt, r.LastAt = fromMS(next), fromMS(created), fromMS(lastRun)
	return r, err
}

func (db *DB) queryRoutines(ctx context.Context, where string, args ...any) ([]Routine, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+routineCols+` `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Routine
	for rows.Next() {
		r, err := scanRoutine(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CreateRoutine adds r for r.Owner, unless the owner has max routines
// that are not done already (ErrRoutineLimit; max ≤ 0 means no limit).
// It returns r with its id and creation time.
func (db *DB) CreateRoutine(ctx context.Context, r Routine, max int) (Routine, error) {
	if r.State == "" {
		r.State = "active"
	}
	r.CreatedAt = fromMS(db.now())
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		pid, err := db.principalID(ctx, tx, r.Owner)
		if err != nil {
			return err
		}
		if max > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM routines WHERE principal_id = ? AND state != 'done'`, pid).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return ErrRoutineLimit
			}
		}
		return tx.QueryRowContext(ctx, `INSERT INTO routines (principal_id, name, schedule, tz, prompt, dest, channel, reply_to,
			notify_to, state, reason, next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			pid, r.Name, r.Schedule, r.TZ, r.Prompt, r.Dest, r.Channel, r.ReplyTo, r.NotifyTo, r.State, r.Reason,
			toMS(r.NextAt), toMS(r.CreatedAt)).Scan(&r.ID)
	})
	if err != nil {
		return Routine{}, fmt.Errorf("store: create routine: %w", err)
	}
	return r, nil
}

// Routines lists the routines of owner, or every routine when owner is
// nil, oldest first.
func (db *DB) Routines(ctx context.Context, owner *agent.Principal) ([]Routine, error) {
	var (
		out []Routine
		err error
	)
	if owner == nil {
		out, err = db.queryRoutines(ctx, `ORDER BY r.id`)
	} else {
		out, err = db.queryRoutines(ctx, `WHERE p.platform = ? AND p.workspace = ? AND p.user = ? ORDER BY r.id`,
			owner.Platform, owner.Workspace, owner.User)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list routines: %w", err)
	}
	return out, nil
}

// GetRoutine returns routine id; an unknown id is ErrNotFound.
func (db *DB) GetRoutine(ctx context.Context, id int64) (Routine, error) {
	r, err := scanRoutine(db.r.QueryRowContext(ctx, `SELECT `+routineCols+` WHERE r.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Routine{}, fmt.Errorf("store: routine %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Routine{}, fmt.Errorf("store: routine %d: %w", id, err)
	}
	return r, nil
}

// DueRoutines lists the active routines whose next run is at or before
// now, the earliest first.
func (db *DB) DueRoutines(ctx context.Context, now time.Time) ([]Routine, error) {
	out, err := db.queryRoutines(ctx, `WHERE r.state = 'active' AND r.next_at > 0 AND r.next_at <= ? ORDER BY r.next_at, r.id`, toMS(now))
	if err != nil {
		return nil, fmt.Errorf("store: due routines: %w", err)
	}
	return out, nil
}

// DeleteRoutine removes routine id and its runs' records. An unknown id is
// ErrNotFound.
func (db *DB) DeleteRoutine(ctx context.Context, id int64) error {
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM routine_runs WHERE routine_id = ?`, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM routines WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete routine %d: %w", id, err)
	}
	return nil
}

// SetRoutineState sets routine id's state and reason; next, when not nil,
// becomes its next run (the zero time: none), and a routine made active
// again starts counting failures afresh and owes no notice. An unknown id is ErrNotFound.
func (db *DB) SetRoutineState(ctx context.Context, id int64, state, reason string, next *time.Time) error {
	q := `UPDATE routines SET state = ?, reason = ?, failures = CASE WHEN ? = 'active' THEN 0 ELSE failures END,
		notice = CASE WHEN ? = 'active' THEN '' ELSE notice END`
	args := []any{state, reason, state, state}
	if next != nil {
		q += `, next_at = ?`
		args = append(args, toMS(*next))
	}
	args = append(args, id)
	res, err := db.execSQL(ctx, q+` WHERE id = ?`, args...)
	if err != nil {
		return fmt.Errorf("store: set routine %d %s: %w", id, state, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: set routine %d %s: %w", id, state, ErrNotFound)
	}
	return nil
}

// RoutineNotice is a notice owed to a routine's owner and not delivered
// yet: Text, due to be tried at At, after Tries attempts.
type RoutineNotice struct {
	Routine int64
	Text    string
	At      time.Time
	Tries   int
}

// OweRoutineNotice records that routine id's owner is owed text, to be
// tried at at; it replaces a notice owed before. An unknown id is
// ErrNotFound.
func (db *DB) OweRoutineNotice(ctx context.Context, id int64, text string, at time.Time) error {
	res, err := db.execSQL(ctx, `UPDATE routines SET notice = ?, notice_at = ?, notice_tries = 0 WHERE id = ?`, text, toMS(at), id)
	if err != nil {
		return fmt.Errorf("store: owe routine %d a notice: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: owe routine %d a notice: %w", id, ErrNotFound)
	}
	return nil
}

// DueRoutineNotices lists the notices owed whose time is at or before
// now, the earliest first.
func (db *DB) DueRoutineNotices(ctx context.Context, now time.Time) ([]RoutineNotice, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, notice, notice_at, notice_tries FROM routines
		WHERE notice != '' AND notice_at <= ? ORDER BY notice_at, id`, toMS(now))
	if err != nil {
		return nil, fmt.Errorf("store: due routine notices: %w", err)
	}
	defer rows.Close()
	var out []RoutineNotice
	for rows.Next() {
		var (
			n  RoutineNotice
			at int64
		)
		if err := rows.Scan(&n.Routine, &n.Text, &at, &n.Tries); err != nil {
			return nil, fmt.Errorf("store: due routine notices: %w", err)
		}
		n.At = fromMS(at)
		out = append(out, n)
	}
	return out, rows.Err()
}

// ClaimRoutineNotice takes the attempt at routine id's notice due at at:
// it counts the attempt and moves the notice's time to next, the time of
// the attempt after it should this one fail. It returns false when the
// notice is no longer due at at (another process took the attempt, it
// was delivered, replaced or cleared).
func (db *DB) ClaimRoutineNotice(ctx context.Context, id int64, at, next time.Time) (bool, error) {
	res, err := db.execSQL(ctx, `UPDATE routines SET notice_at = ?, notice_tries = notice_tries + 1
		WHERE id = ? AND notice != '' AND notice_at = ?`, toMS(next), id, toMS(at))
	if err != nil {
		return false, fmt.Errorf("store: claim routine %d's notice: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ClearRoutineNotice records routine id's notice delivered, unless it is
// no longer the one claimed with next at (it was replaced since).
func (db *DB) ClearRoutineNotice(ctx context.Context, id int64, at time.Time) error {
	if _, err := db.execSQL(ctx, `UPDATE routines SET notice = '', notice_at = 0, notice_tries = 0
		WHERE id = ? AND notice_at = ?`, id, toMS(at)); err != nil {
		return fmt.Errorf("store: clear routine %d's notice: %w", id, err)
	}
	return nil
}

// AdvanceRoutine moves routine id on from its next run, from, in one
// transaction: each time of missed is recorded as a missed run; run, when
// not zero, is recorded as a run started (the record that keeps it from
// ever starting twice); and next becomes the routine's next run (zero:
// none; the routine is then done). It does nothing, and returns moved
// false, when the routine's next run is no longer from (another process
// moved it on, or it was changed). started is false when the run was
// recorded before.
func (db *DB) AdvanceRoutine(ctx context.Context, id int64, from time.Time, missed []time.Time, run, next time.Time) (r RoutineRun, moved, started bool, err error) {
	now := db.now()
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		state := "active"
		if next.IsZero() {
			state = "done"
		}
		res, err := tx.ExecContext(ctx, `UPDATE routines SET next_at = ?, state = ? WHERE id = ? AND next_at = ? AND state = 'active'`,
			toMS(next), state, id, toMS(from))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		moved = true
		for _, m := range missed {
			if _, err := tx.ExecContext(ctx, `INSERT INTO routine_runs (routine_id, scheduled_at, state, created_at, finished_at)
				VALUES (?, ?, 'missed', ?, ?) ON CONFLICT DO NOTHING`, id, toMS(m), now, now); err != nil {
				return err
			}
		}
		if run.IsZero() {
			return nil
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO routine_runs (routine_id, scheduled_at, state, created_at)
			VALUES (?, ?, 'started', ?) ON CONFLICT DO NOTHING RETURNING id`, id, toMS(run), now).Scan(&r.ID)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		started = true
		r.Routine, r.ScheduledAt, r.State = id, fromMS(toMS(run)), "started"
		return nil
	})
	if err != nil {
		return RoutineRun{}, false, false, fmt.Errorf("store: advance routine %d: %w", id, err)
	}
	return r, moved, started, nil
}

// StartRoutineRun records a run of routine id at scheduled that an
// operator asked for, unless one is recorded for that time; started is
// false then.
func (db *DB) StartRoutineRun(ctx context.Context, id int64, scheduled time.Time) (r RoutineRun, started bool, err error) {
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO routine_runs (routine_id, scheduled_at, state, created_at)
			VALUES (?, ?, 'started', ?) ON CONFLICT DO NOTHING RETURNING id`, id, toMS(scheduled), db.now()).Scan(&r.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		started = err == nil
		return err
	})
	if err != nil {
		return RoutineRun{}, false, fmt.Errorf("store: start a run of routine %d: %w", id, err)
	}
	r.Routine, r.ScheduledAt, r.State = id, fromMS(toMS(scheduled)), "started"
	return r, started, nil
}

// SetRunInbound records the inbound a run was handed to the runtime as.
func (db *DB) SetRunInbound(ctx context.Context, run int64, in agent.InboundID) error {
	if _, err := db.execSQL(ctx, `UPDATE routine_runs SET inbound_id = ? WHERE id = ?`, int64(in), run); err != nil {
		return fmt.Errorf("store: routine run %d: %w", run, err)
	}
	return nil
}

// OpenRoutineRuns lists the runs started and not yet finished, oldest
// first, with the state of their turn and reply.
func (db *DB) OpenRoutineRuns(ctx context.Context) ([]RoutineRun, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT rr.id, rr.routine_id, rr.scheduled_at, rr.state, COALESCE(rr.inbound_id, 0),
		COALESCE(i.state, ''),
		COALESCE((SELECT o.state FROM outbound o WHERE o.inbound_id = rr.inbound_id ORDER BY o.id DESC LIMIT 1), ''),
		COALESCE((SELECT o.reason FROM outbound o WHERE o.inbound_id = rr.inbound_id ORDER BY o.id DESC LIMIT 1), '')
		FROM routine_runs rr LEFT JOIN inbound i ON i.id = rr.inbound_id
		WHERE rr.state = 'started' ORDER BY rr.id`)
	if err != nil {
		return nil, fmt.Errorf("store: open routine runs: %w", err)
	}
	defer rows.Close()
	var out []RoutineRun
	for rows.Next() {
		var (
			r     RoutineRun
			sched int64
			in    int64
		)
		if err := rows.Scan(&r.ID, &r.Routine, &sched, &r.State, &in, &r.InboundState, &r.ReplyState, &r.ReplyReason); err != nil {
			return nil, fmt.Errorf("store: open routine runs: %w", err)
		}
		r.ScheduledAt, r.Inbound = fromMS(sched), agent.InboundID(in)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: open routine runs: %w", err)
	}
	return out, nil
}

// FinishRoutineRun ends a started run as "done" or "failed" with reason,
// and counts it on its routine: a failure adds one to its failures in a
// row, a success resets them. It returns the routine's failures in a row
// afterwards; finished is false when the run was not open (finished
// before).
func (db *DB) FinishRoutineRun(ctx context.Context, run int64, state, reason string) (failures int, finished bool, err error) {
	if state != "done" && state != "failed" {
		return 0, false, fmt.Errorf("store: finish routine run %d: state %q", run, state)
	}
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var routine int64
		err := tx.QueryRowContext(ctx, `UPDATE routine_runs SET state = ?, reason = ?, finished_at = ?
			WHERE id = ? AND state = 'started' RETURNING routine_id`, state, reason, db.now(), run).Scan(&routine)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		finished = true
		q := `UPDATE routines SET failures = 0 WHERE id = ? RETURNING failures`
		if state == "failed" {
			q = `UPDATE routines SET failures = failures + 1 WHERE id = ? RETURNING failures`
		}
		err = tx.QueryRowContext(ctx, q, routine).Scan(&failures)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // the routine was deleted meanwhile
		}
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("store: finish routine run %d: %w", run, err)
	}
	return failures, finished, nil
}

// RoutineRuns lists the latest runs of routine id, newest first, at most
// limit.
func (db *DB) RoutineRuns(ctx context.Context, id int64, limit int) ([]RoutineRun, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, routine_id, scheduled_at, state, COALESCE(inbound_id, 0), reason
		FROM routine_runs WHERE routine_id = ? ORDER BY scheduled_at DESC LIMIT ?`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("store: routine runs: %w", err)
	}
	defer rows.Close()
	var out []RoutineRun
	for rows.Next() {
		var (
			r         RoutineRun
			sched, in int64
		)
		if err := rows.Scan(&r.ID, &r.Routine, &sched, &r.State, &in, &r.ReplyReason); err != nil {
			return nil, fmt.Errorf("store: routine runs: %w", err)
		}
		r.ScheduledAt, r.Inbound = fromMS(sched), agent.InboundID(in)
		out = append(out, r)
	}
	return out, rows.Err()
}

// TimeZone returns the IANA time zone p set, "" when none.
func (db *DB) TimeZone(ctx context.Context, p agent.Principal) (string, error) {
	var tz string
	err := db.r.QueryRowContext(ctx, `SELECT z.tz FROM principal_zones z JOIN principals p ON p.id = z.principal_id
		WHERE p.platform = ? AND p.workspace = ? AND p.user = ?`, p.Platform, p.Workspace, p.User).Scan(&tz)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: time zone: %w", err)
	}
	return tz, nil
}

// SetTimeZone records p's IANA time zone ("" forgets it). It does not
// change the zone of routines made before.
func (db *DB) SetTimeZone(ctx context.Context, p agent.Principal, tz string) error {
	tz = strings.TrimSpace(tz)
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		pid, err := db.principalID(ctx, tx, p)
		if err != nil {
			return err
		}
		if tz == "" {
			_, err = tx.ExecContext(ctx, `DELETE FROM principal_zones WHERE principal_id = ?`, pid)
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO principal_zones (principal_id, tz) VALUES (?, ?)
			ON CONFLICT (principal_id) DO UPDATE SET tz = excluded.tz`, pid, tz)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set time zone: %w", err)
	}
	return nil
}
