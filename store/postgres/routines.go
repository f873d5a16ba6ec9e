package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// Routines on PostgreSQL: the SQLite store's records (store/routines.go)
// for every replica at once. A run is a row of routine_runs, unique per
// routine and scheduled time, inserted with ON CONFLICT DO NOTHING before
// the run starts: of two replicas that would start the same run, one
// inserts it and the other finds it there, so no run happens twice.

const routineCols = `r.id, p.platform, p.workspace, p."user", r.name, r.schedule, r.tz, r.prompt, r.dest, r.channel,
	r.reply_to, r.notify_to, r.state, r.reason, r.failures, r.next_at, r.created_at,
	coalesce(l.scheduled_at, 0), coalesce(l.state, '')
	FROM routines r JOIN principals p ON p.id = r.principal_id
	LEFT JOIN LATERAL (SELECT scheduled_at, state FROM routine_runs
		WHERE routine_id = r.id AND state <> 'missed' ORDER BY scheduled_at DESC LIMIT 1) l ON true`

func scanRoutine(s pgx.Row) (store.Routine, error) {
	var (
		r                      store.Routine
		next, created, lastRun int64
	)
	err := s.Scan(&r.ID, &r.Owner.Platform, &r.Owner.Workspace, &r.Owner.User, &r.Name, &r.Schedule, &r.TZ, &r.Prompt,
		&r.Dest, &r.Channel, &r.ReplyTo, &r.NotifyTo, &r.State, &r.Reason, &r.Failures, &next, &created, &lastRun, &r.LastState)
	r.NextAt, r.CreatedAt, r.LastAt = fromMS(next), fromMS(created), fromMS(lastRun)
	return r, err
}

func (db *DB) queryRoutines(ctx context.Context, where string, args ...any) ([]store.Routine, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+routineCols+` `+where, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Routine, error) { return scanRoutine(r) })
}

// CreateRoutine adds r for r.Owner, unless the owner has max routines
// that are not done already (store.ErrRoutineLimit; max ≤ 0 means no
// limit). It returns r with its id and creation time. The count is taken
// under a lock on the owner, so two replicas cannot both pass the limit.
func (db *DB) CreateRoutine(ctx context.Context, r store.Routine, max int) (store.Routine, error) {
	if r.State == "" {
		r.State = "active"
	}
	r.CreatedAt = fromMS(db.now())
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		pid, err := db.principalID(ctx, tx, r.Owner)
		if err != nil {
			return err
		}
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT id FROM principals WHERE id = $1 FOR UPDATE`, pid); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM routines WHERE principal_id = $1 AND state <> 'done'`, pid).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return store.ErrRoutineLimit
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO routines (principal_id, name, schedule, tz, prompt, dest, channel, reply_to,
			notify_to, state, reason, next_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id`,
			pid, text(r.Name), text(r.Schedule), text(r.TZ), text(r.Prompt), r.Dest, text(r.Channel), text(r.ReplyTo),
			text(r.NotifyTo), r.State, text(r.Reason), toMS(r.NextAt), toMS(r.CreatedAt)).Scan(&r.ID)
	})
	if err != nil {
		return store.Routine{}, fmt.Errorf("postgres: create routine: %w", err)
	}
	return r, nil
}

// Routines lists the routines of owner, or every routine when owner is
// nil, oldest first.
func (db *DB) Routines(ctx context.Context, owner *agent.Principal) ([]store.Routine, error) {
	var (
		out []store.Routine
		err error
	)
	if owner == nil {
		out, err = db.queryRoutines(ctx, `ORDER BY r.id`)
	} else {
		out, err = db.queryRoutines(ctx, `WHERE p.platform = $1 AND p.workspace = $2 AND p."user" = $3 ORDER BY r.id`,
			text(owner.Platform), text(owner.Workspace), text(owner.User))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: list routines: %w", err)
	}
	return out, nil
}

// GetRoutine returns routine id; an unknown id is store.ErrNotFound.
func (db *DB) GetRoutine(ctx context.Context, id int64) (store.Routine, error) {
	r, err := scanRoutine(db.pool.QueryRow(ctx, `SELECT `+routineCols+` WHERE r.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Routine{}, fmt.Errorf("postgres: routine %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Routine{}, fmt.Errorf("postgres: routine %d: %w", id, err)
	}
	return r, nil
}

// DueRoutines lists the active routines whose next run is at or before
// now, the earliest first.
func (db *DB) DueRoutines(ctx context.Context, now time.Time) ([]store.Routine, error) {
	out, err := db.queryRoutines(ctx, `WHERE r.state = 'active' AND r.next_at > 0 AND r.next_at <= $1 ORDER BY r.next_at, r.id`, toMS(now))
	if err != nil {
		return nil, fmt.Errorf("postgres: due routines: %w", err)
	}
	return out, nil
}

// DeleteRoutine removes routine id and its runs' records. An unknown id is
// store.ErrNotFound.
func (db *DB) DeleteRoutine(ctx context.Context, id int64) error {
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM routine_runs WHERE routine_id = $1`, id); err != nil {
			return err
		}
		return oneRow(tx.Exec(ctx, `DELETE FROM routines WHERE id = $1`, id))
	})
	if err != nil {
		return fmt.Errorf("postgres: delete routine %d: %w", id, err)
	}
	return nil
}

// SetRoutineState sets routine id's state and reason; next, when not nil,
// becomes its next run (the zero time: none), and a routine made active
// again starts counting failures afresh. An unknown id is
// store.ErrNotFound.
func (db *DB) SetRoutineState(ctx context.Context, id int64, state, reason string, next *time.Time) error {
	q := `UPDATE routines SET state = $1, reason = $2, failures = CASE WHEN $1 = 'active' THEN 0 ELSE failures END,
		notice = CASE WHEN $1 = 'active' THEN '' ELSE notice END`
	args := []any{state, text(reason)}
	if next != nil {
		q += `, next_at = $3`
		args = append(args, toMS(*next))
	}
	args = append(args, id)
	q += fmt.Sprintf(` WHERE id = $%d`, len(args))
	if err := oneRow(db.pool.Exec(ctx, q, args...)); err != nil {
		return fmt.Errorf("postgres: set routine %d %s: %w", id, state, err)
	}
	return nil
}

// OweRoutineNotice records that routine id's owner is owed text, to be
// tried at at; it replaces a notice owed before. An unknown id is
// ErrNotFound.
func (db *DB) OweRoutineNotice(ctx context.Context, id int64, notice string, at time.Time) error {
	if err := oneRow(db.pool.Exec(ctx, `UPDATE routines SET notice = $1, notice_at = $2, notice_tries = 0 WHERE id = $3`,
		text(notice), toMS(at), id)); err != nil {
		return fmt.Errorf("postgres: owe routine %d a notice: %w", id, err)
	}
	return nil
}

// DueRoutineNotices lists the notices owed whose time is at or before
// now, the earliest first.
func (db *DB) DueRoutineNotices(ctx context.Context, now time.Time) ([]store.RoutineNotice, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, notice, notice_at, notice_tries FROM routines
		WHERE notice != '' AND notice_at <= $1 ORDER BY notice_at, id`, toMS(now))
	if err != nil {
		return nil, fmt.Errorf("postgres: due routine notices: %w", err)
	}
	defer rows.Close()
	var out []store.RoutineNotice
	for rows.Next() {
		var (
			n      store.RoutineNotice
			at, tr int64
		)
		if err := rows.Scan(&n.Routine, &n.Text, &at, &tr); err != nil {
			return nil, fmt.Errorf("postgres: due routine notices: %w", err)
		}
		n.At, n.Tries = fromMS(at), int(tr)
		out = append(out, n)
	}
	return out, rows.Err()
}

// ClaimRoutineNotice takes the attempt at routine id's notice due at at:
// it counts the attempt and moves the notice's time to next. It returns
// false when the notice is no longer due at at (another replica took the
// attempt, under the row's lock; it was delivered, replaced or cleared).
func (db *DB) ClaimRoutineNotice(ctx context.Context, id int64, at, next time.Time) (bool, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE routines SET notice_at = $1, notice_tries = notice_tries + 1
		WHERE id = $2 AND notice != '' AND notice_at = $3`, toMS(next), id, toMS(at))
	if err != nil {
		return false, fmt.Errorf("postgres: claim routine %d's notice: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ClearRoutineNotice records routine id's notice delivered, unless it is
// no longer the one claimed with next at (it was replaced since).
func (db *DB) ClearRoutineNotice(ctx context.Context, id int64, at time.Time) error {
	if _, err := db.pool.Exec(ctx, `UPDATE routines SET notice = '', notice_at = 0, notice_tries = 0
		WHERE id = $1 AND notice_at = $2`, id, toMS(at)); err != nil {
		return fmt.Errorf("postgres: clear routine %d's notice: %w", id, err)
	}
	return nil
}

// AdvanceRoutine moves routine id on from its next run, from, in one
// transaction: each time of missed is recorded as a missed run; run, when
// not zero, is recorded as a run started (the record that keeps it from
// ever starting twice); and next becomes the routine's next run (zero:
// none; the routine is then done). It does nothing, and returns moved
// false, when the routine's next run is no longer from (another replica
// moved it on, or it was changed): the UPDATE's condition is checked
// under the row's lock, so of two replicas one moves it. started is false
// when the run was recorded before.
func (db *DB) AdvanceRoutine(ctx context.Context, id int64, from time.Time, missed []time.Time, run, next time.Time) (r store.RoutineRun, moved, started bool, err error) {
	now := db.now()
	err = db.inTx(ctx, func(tx pgx.Tx) error {
		state := "active"
		if next.IsZero() {
			state = "done"
		}
		tag, err := tx.Exec(ctx, `UPDATE routines SET next_at = $1, state = $2 WHERE id = $3 AND next_at = $4 AND state = 'active'`,
			toMS(next), state, id, toMS(from))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		moved = true
		for _, m := range missed {
			if _, err := tx.Exec(ctx, `INSERT INTO routine_runs (routine_id, scheduled_at, state, created_at, finished_at)
				VALUES ($1, $2, 'missed', $3, $3) ON CONFLICT DO NOTHING`, id, toMS(m), now); err != nil {
				return err
			}
		}
		if run.IsZero() {
			return nil
		}
		err = tx.QueryRow(ctx, `INSERT INTO routine_runs (routine_id, scheduled_at, state, created_at)
			VALUES ($1, $2, 'started', $3) ON CONFLICT DO NOTHING RETURNING id`, id, toMS(run), now).Scan(&r.ID)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		started = true
		r.Routine, r.ScheduledAt, r.State = id, fromMS(toMS(run)), "started"
		return nil
	})
	if err != nil {
		return store.RoutineRun{}, false, false, fmt.Errorf("postgres: advance routine %d: %w", id, err)
	}
	return r, moved, started, nil
}

// StartRoutineRun records a run of routine id at scheduled that an
// operator asked for, unless one is recorded for that time (by any
// replica); started is false then.
func (db *DB) StartRoutineRun(ctx context.Context, id int64, scheduled time.Time) (r store.RoutineRun, started bool, err error) {
	err = db.pool.QueryRow(ctx, `INSERT INTO routine_runs (routine_id, scheduled_at, state, created_at)
		VALUES ($1, $2, 'started', $3) ON CONFLICT DO NOTHING RETURNING id`, id, toMS(scheduled), db.now()).Scan(&r.ID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = nil
	case err != nil:
		return store.RoutineRun{}, false, fmt.Errorf("postgres: start a run of routine %d: %w", id, err)
	default:
		started = true
	}
	r.Routine, r.ScheduledAt, r.State = id, fromMS(toMS(scheduled)), "started"
	return r, started, nil
}

// SetRunInbound records the inbound a run was handed to the runtime as.
func (db *DB) SetRunInbound(ctx context.Context, run int64, in agent.InboundID) error {
	if _, err := db.pool.Exec(ctx, `UPDATE routine_runs SET inbound_id = $1 WHERE id = $2`, nullID(in), run); err != nil {
		return fmt.Errorf("postgres: routine run %d: %w", run, err)
	}
	return nil
}

// OpenRoutineRuns lists the runs started and not yet finished, oldest
// first, with the state of their turn and reply.
func (db *DB) OpenRoutineRuns(ctx context.Context) ([]store.RoutineRun, error) {
	rows, err := db.pool.Query(ctx, `SELECT rr.id, rr.routine_id, rr.scheduled_at, rr.state, coalesce(rr.inbound_id, 0),
		coalesce(i.state, ''), coalesce(o.state, ''), coalesce(o.reason, '')
		FROM routine_runs rr LEFT JOIN inbound i ON i.id = rr.inbound_id
		LEFT JOIN LATERAL (SELECT state, reason FROM outbound WHERE inbound_id = rr.inbound_id ORDER BY id DESC LIMIT 1) o ON true
		WHERE rr.state = 'started' ORDER BY rr.id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: open routine runs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.RoutineRun, error) {
		var (
			r         store.RoutineRun
			sched, in int64
		)
		err := row.Scan(&r.ID, &r.Routine, &sched, &r.State, &in, &r.InboundState, &r.ReplyState, &r.ReplyReason)
		r.ScheduledAt, r.Inbound = fromMS(sched), agent.InboundID(in)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: open routine runs: %w", err)
	}
	return out, nil
}

// FinishRoutineRun ends a started run as "done" or "failed" with reason,
// and counts it on its routine: a failure adds one to its failures in a
// row, a success resets them. It returns the routine's failures in a row
// afterwards; finished is false when the run was not open (finished
// before, by this replica or another).
func (db *DB) FinishRoutineRun(ctx context.Context, run int64, state, reason string) (failures int, finished bool, err error) {
	if state != "done" && state != "failed" {
		return 0, false, fmt.Errorf("postgres: finish routine run %d: state %q", run, state)
	}
	err = db.inTx(ctx, func(tx pgx.Tx) error {
		var routine int64
		err := tx.QueryRow(ctx, `UPDATE routine_runs SET state = $1, reason = $2, finished_at = $3
			WHERE id = $4 AND state = 'started' RETURNING routine_id`, state, text(reason), db.now(), run).Scan(&routine)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		finished = true
		q := `UPDATE routines SET failures = 0 WHERE id = $1 RETURNING failures`
		if state == "failed" {
			q = `UPDATE routines SET failures = failures + 1 WHERE id = $1 RETURNING failures`
		}
		err = tx.QueryRow(ctx, q, routine).Scan(&failures)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // the routine was deleted meanwhile
		}
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("postgres: finish routine run %d: %w", run, err)
	}
	return failures, finished, nil
}

// RoutineRuns lists the latest runs of routine id, newest first, at most
// limit.
func (db *DB) RoutineRuns(ctx context.Context, id int64, limit int) ([]store.RoutineRun, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, routine_id, scheduled_at, state, coalesce(inbound_id, 0), reason
		FROM routine_runs WHERE routine_id = $1 ORDER BY scheduled_at DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: routine runs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.RoutineRun, error) {
		var (
			r         store.RoutineRun
			sched, in int64
		)
		err := row.Scan(&r.ID, &r.Routine, &sched, &r.State, &in, &r.ReplyReason)
		r.ScheduledAt, r.Inbound = fromMS(sched), agent.InboundID(in)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: routine runs: %w", err)
	}
	return out, nil
}

// TimeZone returns the IANA time zone p set, "" when none.
func (db *DB) TimeZone(ctx context.Context, p agent.Principal) (string, error) {
	var tz string
	err := db.pool.QueryRow(ctx, `SELECT z.tz FROM principal_zones z JOIN principals p ON p.id = z.principal_id
		WHERE p.platform = $1 AND p.workspace = $2 AND p."user" = $3`, text(p.Platform), text(p.Workspace), text(p.User)).Scan(&tz)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgres: time zone: %w", err)
	}
	return tz, nil
}

// SetTimeZone records p's IANA time zone ("" forgets it). It does not
// change the zone of routines made before.
func (db *DB) SetTimeZone(ctx context.Context, p agent.Principal, tz string) error {
	tz = text(strings.TrimSpace(tz))
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		pid, err := db.principalID(ctx, tx, p)
		if err != nil {
			return err
		}
		if tz == "" {
			_, err = tx.Exec(ctx, `DELETE FROM principal_zones WHERE principal_id = $1`, pid)
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO principal_zones (principal_id, tz) VALUES ($1, $2)
			ON CONFLICT (principal_id) DO UPDATE SET tz = excluded.tz`, pid, tz)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: set time zone: %w", err)
	}
	return nil
}
