package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// errRollback makes inTx roll back without it being a failure.
var errRollback = errors.New("postgres: roll back")

// inboundCols are the columns scanInbound reads, from inbound i joined with
// principals p, and the stream preview recorded for it.
const inboundCols = `i.id, i.state, i.dedupe_key, p.platform, p.workspace, p."user",
	i.channel, i.thread, i.text, i.reply_to, i.received_at, i.files, i.server,
	COALESCE((SELECT v.platform_id FROM stream_previews v WHERE v.inbound_id = i.id), '')`

func scanInbound(r pgx.Row) (agent.QueuedInbound, error) {
	var (
		q        agent.QueuedInbound
		state    string
		received int64
		files    string
	)
	err := r.Scan(&q.ID, &state, &q.DedupeKey,
		&q.Key.Principal.Platform, &q.Key.Principal.Workspace, &q.Key.Principal.User,
		&q.Key.Conversation.Channel, &q.Key.Conversation.Thread, &q.Text, &q.ReplyTo, &received, &files, &q.Server, &q.Preview)
	q.Running = state == "running"
	q.ReceivedAt = fromMS(received)
	if err == nil && files != "" {
		if jerr := json.Unmarshal([]byte(files), &q.Files); jerr != nil {
			err = fmt.Errorf("inbound %d: files: %w", q.ID, jerr)
		}
	}
	return q, err
}

// querier is the pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// principalID returns the id of p, adding the principal if it is new (a
// replica that adds it at the same time makes this one find it).
func (db *DB) principalID(ctx context.Context, tx pgx.Tx, p agent.Principal) (int64, error) {
	const get = `SELECT id FROM principals WHERE platform = $1 AND workspace = $2 AND "user" = $3`
	var id int64
	err := tx.QueryRow(ctx, get, text(p.Platform), text(p.Workspace), text(p.User)).Scan(&id)
	if !errors.Is(err, pgx.ErrNoRows) {
		return id, err
	}
	err = tx.QueryRow(ctx, principalAdd+` RETURNING id`, text(p.Platform), text(p.Workspace), text(p.User), db.now()).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		err = tx.QueryRow(ctx, get, text(p.Platform), text(p.Workspace), text(p.User)).Scan(&id)
	}
	return id, err
}

func (db *DB) inboundByKey(ctx context.Context, q querier, key string) (agent.QueuedInbound, error) {
	return scanInbound(q.QueryRow(ctx, `SELECT `+inboundCols+` FROM inbound i JOIN principals p ON p.id = i.principal_id
		WHERE i.dedupe_key = $1`, text(key)))
}

// AcceptInbound persists in and queues it, adding its principal if new, in
// one transaction. If its DedupeKey was seen before (by any replica),
// nothing is written, dup is true and q is the inbound accepted first. A
// zero ReceivedAt is set to the clock's time. Times are kept to the
// millisecond.
func (db *DB) AcceptInbound(ctx context.Context, in agent.Inbound) (q agent.QueuedInbound, dup bool, err error) {
	if in.DedupeKey == "" {
		return q, false, errors.New("postgres: accept inbound: empty dedupe key")
	}
	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = db.Now()
	}
	in.ReceivedAt = fromMS(toMS(in.ReceivedAt))
	files := ""
	if len(in.Files) > 0 {
		b, err := json.Marshal(in.Files)
		if err != nil {
			return agent.QueuedInbound{}, false, fmt.Errorf("postgres: accept inbound: files: %w", err)
		}
		files = string(b)
	}
	// The common case, a new message of a known principal, is one
	// statement (atomic without a transaction). It inserts nothing when
	// the principal is new or the key was seen: the steps below tell
	// which.
	// It is sent with other sessions' writes when there are (group.go).
	var (
		id       agent.InboundID
		inserted bool
	)
	p := in.Key.Principal
	args := []any{text(in.DedupeKey), text(p.Platform), text(p.Workspace), text(p.User),
		text(in.Key.Conversation.Channel), text(in.Key.Conversation.Thread),
		text(in.Text), text(in.ReplyTo), toMS(in.ReceivedAt), db.now(), text(files), text(in.Server)}
	err = db.group.do(&groupWrite{
		ctx: ctx,
		first: func(b *pgx.Batch) {
			b.Queue(acceptInsert, args...).Query(func(rows pgx.Rows) error {
				inserted = false
				for rows.Next() {
					if err := rows.Scan(&id); err != nil {
						return err
					}
					inserted = true
				}
				return rows.Err()
			})
		},
		alone: func(ctx context.Context) error {
			err := db.pool.QueryRow(ctx, acceptInsert, args...).Scan(&id)
			inserted = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				err = nil
			}
			return err
		},
	})
	if err != nil {
		return agent.QueuedInbound{}, false, fmt.Errorf("postgres: accept inbound: %w", err)
	}
	if inserted {
		return agent.QueuedInbound{ID: id, Inbound: in}, false, nil
	}
	if q, err := db.inboundByKey(ctx, db.pool, in.DedupeKey); err == nil {
		return q, true, nil
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return agent.QueuedInbound{}, false, fmt.Errorf("postgres: accept inbound: %w", err)
	}
	// A new principal: it and the message in one round trip, one
	// (implicit) transaction, the insert above again now that the
	// principal exists. A replica inserting the same key at the same time
	// makes the insert wait for its commit, then do nothing: a duplicate.
	b := &pgx.Batch{}
	b.Queue(principalAdd, text(p.Platform), text(p.Workspace), text(p.User), db.now())
	inserted = false
	b.Queue(acceptInsert, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if err := rows.Scan(&id); err != nil {
				return err
			}
			inserted = true
		}
		return rows.Err()
	})
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return agent.QueuedInbound{}, false, fmt.Errorf("postgres: accept inbound: %w", err)
	}
	if !inserted {
		q, err := db.inboundByKey(ctx, db.pool, in.DedupeKey)
		if err != nil {
			return agent.QueuedInbound{}, true, fmt.Errorf("postgres: accept inbound: %w", err)
		}
		return q, true, nil
	}
	return agent.QueuedInbound{ID: id, Inbound: in}, false, nil
}

// Pending lists the inbound messages whose turn has not finished (queued or
// running), in the order they were accepted.
func (db *DB) Pending(ctx context.Context) ([]agent.QueuedInbound, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+inboundCols+` FROM inbound i JOIN principals p ON p.id = i.principal_id
		WHERE i.state IN ('queued', 'running') ORDER BY i.id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: pending: %w", err)
	}
	defer rows.Close()
	var qs []agent.QueuedInbound
	for rows.Next() {
		q, err := scanInbound(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: pending: %w", err)
		}
		qs = append(qs, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: pending: %w", err)
	}
	return qs, nil
}

// PendingInbound returns accepted message id if its turn has not finished
// (queued or running); ok is false when there is no such message or it has
// finished. A replica given an announced id loads it with this rather than
// listing every pending message.
func (db *DB) PendingInbound(ctx context.Context, id agent.InboundID) (q agent.QueuedInbound, ok bool, err error) {
	row := db.pool.QueryRow(ctx, `SELECT `+inboundCols+` FROM inbound i JOIN principals p ON p.id = i.principal_id
		WHERE i.id = $1 AND i.state IN ('queued', 'running')`, int64(id))
	q, err = scanInbound(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return agent.QueuedInbound{}, false, nil
	}
	if err != nil {
		return agent.QueuedInbound{}, false, fmt.Errorf("postgres: pending inbound %d: %w", id, err)
	}
	return q, true, nil
}

// PendingUpTo returns the accepted messages of inbound id's session (the
// same principal, channel and thread) whose turn has not finished, with
// ids up to id, in the order they were accepted: id itself last when it is
// pending, nothing when id is unknown. A replica given an announced message
// loads it with this, so that an earlier message of the session whose
// announcement is late or lost runs first, not after it.
func (db *DB) PendingUpTo(ctx context.Context, id agent.InboundID) ([]agent.QueuedInbound, error) {
	var qs []agent.QueuedInbound
	scan := func(rows pgx.Rows) error {
		qs = qs[:0]
		for rows.Next() {
			q, err := scanInbound(rows)
			if err != nil {
				return err
			}
			qs = append(qs, q)
		}
		return rows.Err()
	}
	// Read with other sessions' reads when there are (group.go).
	err := db.reads.do(&groupWrite{
		ctx:   ctx,
		first: func(b *pgx.Batch) { b.Queue(pendingUpTo, int64(id)).Query(scan) },
		alone: func(ctx context.Context) error {
			rows, err := db.pool.Query(ctx, pendingUpTo, int64(id))
			if err != nil {
				return err
			}
			defer rows.Close()
			return scan(rows)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: pending up to inbound %d: %w", id, err)
	}
	return qs, nil
}

// StartTurn marks inbound id running in one transaction: it resolves the
// active session of the inbound's key (creating it if needed), creates the
// turn and appends user (if not nil) to the session's history. The
// inbound's row is locked first, so that of two replicas starting it at
// once one creates the turn and the other finds it: a turn started before
// is returned with its session and resumed set, and nothing is written. An
// unknown id is store.ErrNotFound; an inbound that has finished is
// store.ErrFinished. Under a superseded fencing token (ctx's agent.Fence)
// it fails with agent.ErrFenced, writing nothing.
func (db *DB) StartTurn(ctx context.Context, id agent.InboundID, user *llm.Message) (t agent.TurnID, s agent.Session, resumed bool, err error) {
	var content []byte
	if user != nil {
		if content, err = json.Marshal(user); err != nil {
			return 0, s, false, fmt.Errorf("postgres: start turn %d: encode message: %w", id, err)
		}
	}
	var role string
	if user != nil {
		role = string(user.Role)
	}
	if t, s, ok, err := db.startQueuedTurn(ctx, id, role, content, user != nil); err != nil {
		return 0, agent.Session{}, false, fmt.Errorf("postgres: start turn %d: %w", id, fenced(err))
	} else if ok {
		return t, s, false, nil
	}
	// The first message of a conversation: its session, then the common
	// case again; two round trips where the general case below takes
	// five.
	if added, err := db.addQueuedSession(ctx, id); err != nil {
		return 0, agent.Session{}, false, fmt.Errorf("postgres: start turn %d: %w", id, fenced(err))
	} else if added {
		if t, s, ok, err := db.startQueuedTurn(ctx, id, role, content, user != nil); err != nil {
			return 0, agent.Session{}, false, fmt.Errorf("postgres: start turn %d: %w", id, fenced(err))
		} else if ok {
			return t, s, false, nil
		}
	}
	err = db.inTx(ctx, func(tx pgx.Tx) error {
		var (
			state    string
			pid      int64
			turn     *int64
			server   string
			sid      *int64
			summary  *string
			upto     *int64
			screated *int64
			taint    *string
		)
		// The inbound (locked), its principal and the active session of
		// its key in one round trip. A session added since this
		// statement's snapshot is found by activeSessionTx below.
		p := &s.Key.Principal
		err := tx.QueryRow(ctx, `SELECT i.state, i.principal_id, i.channel, i.thread, i.turn_id, i.server, p.platform, p.workspace, p."user",
				s.id, s.summary, s.summary_upto, s.created_at, s.taint
			FROM inbound i JOIN principals p ON p.id = i.principal_id
			LEFT JOIN sessions s ON s.principal_id = i.principal_id AND s.channel = i.channel AND s.thread = i.thread AND s.active
			WHERE i.id = $1 FOR UPDATE OF i`, id).
			Scan(&state, &pid, &s.Key.Conversation.Channel, &s.Key.Conversation.Thread, &turn, &server, &p.Platform, &p.Workspace, &p.User,
				&sid, &summary, &upto, &screated, &taint)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if state == "done" || state == "failed" {
			return store.ErrFinished
		}
		if turn != nil {
			t, resumed = agent.TurnID(*turn), true
			var created int64
			if err := tx.QueryRow(ctx, `SELECT s.id, s.summary, s.summary_upto, s.created_at, s.taint
				FROM turns t JOIN sessions s ON s.id = t.session_id WHERE t.id = $1`, t).
				Scan(&s.ID, &s.Summary, &s.SummaryUpTo, &created, &s.Taint); err != nil {
				return err
			}
			s.CreatedAt = fromMS(created)
			return errRollback
		}
		now := db.now()
		if sid != nil {
			s.ID, s.Summary, s.SummaryUpTo, s.CreatedAt, s.Taint = agent.SessionID(*sid), *summary, *upto, fromMS(*screated), *taint
		} else if err := db.activeSessionTx(ctx, tx, pid, &s, now); err != nil {
			return err
		}
		// The turn, the inbound set running, the user's message and the
		// session's server in one statement, after the check of the
		// fence (in one round trip). A message from a server records it
		// on its session, whose usage is counted to it (migration 0023).
		// Lazy, as the common case: a start lost in a crash of the
		// database server starts again.
		b := &pgx.Batch{}
		b.Queue(lazyCommit)
		queueFence(ctx, b)
		b.Queue(`WITH t AS (INSERT INTO turns (session_id, inbound_id, state, started_at) VALUES ($1, $2, 'running', $3) RETURNING id),
				u AS (UPDATE inbound SET state = 'running', turn_id = (SELECT id FROM t) WHERE id = $2),
				m AS (INSERT INTO messages (session_id, turn_id, role, content, created_at) SELECT $1, t.id, $4, $5, $3 FROM t WHERE $6),
				v AS (UPDATE sessions SET server = $7 WHERE id = $1 AND server = '' AND $7 <> '')
			SELECT id FROM t`, s.ID, id, now, role, string(content), user != nil, server).
			QueryRow(func(row pgx.Row) error { return row.Scan(&t) })
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil && !(resumed && errors.Is(err, errRollback)) {
		return 0, agent.Session{}, false, fmt.Errorf("postgres: start turn %d: %w", id, fenced(err))
	}
	return t, s, resumed, nil
}

// startQueuedTurn is StartTurn's common case in one statement (atomic
// without a transaction, one round trip where the general case takes
// four): a queued inbound without a turn whose session is active. It locks
// the inbound, creates the turn, sets the inbound running, appends the
// user's message (content, when withUser) and records the inbound's
// server on the session, as the general case does. ok is false, with
// nothing written, in every other case (no such inbound, finished, started
// before, by another replica meanwhile too: the lock makes this statement
// see its turn; no active session yet), which the general case handles.
func (db *DB) startQueuedTurn(ctx context.Context, id agent.InboundID, role string, content []byte, withUser bool) (t agent.TurnID, s agent.Session, ok bool, err error) {
	var created int64
	p := &s.Key.Principal
	args := []any{id, db.now(), role, string(content), withUser}
	scan := func(r pgx.Row) error {
		return r.Scan(&t, &s.ID, &s.Summary, &s.SummaryUpTo, &created, &s.Taint, &p.Platform, &p.Workspace, &p.User,
			&s.Key.Conversation.Channel, &s.Key.Conversation.Thread)
	}
	// It is sent with other sessions' writes when there are (group.go).
	// Lazy: a start lost in a crash of the database server starts again.
	err = db.group.do(&groupWrite{
		ctx:  ctx,
		lazy: true,
		first: func(b *pgx.Batch) {
			// A superseded fence fails the group, whose writes are then
			// done one by one: this one alone fails (agent.ErrFenced).
			queueFence(ctx, b)
			b.Queue(startQueued, args...).Query(func(rows pgx.Rows) error {
				ok = false
				for rows.Next() {
					if err := scan(rows); err != nil {
						return err
					}
					ok = true
				}
				return rows.Err()
			})
		},
		alone: func(ctx context.Context) error {
			// With a fence, its check and the statement as one batch: one
			// round trip, one implicit transaction.
			b := &pgx.Batch{}
			b.Queue(lazyCommit)
			queueFence(ctx, b)
			b.Queue(startQueued, args...).QueryRow(func(row pgx.Row) error {
				err := scan(row)
				ok = err == nil
				if errors.Is(err, pgx.ErrNoRows) {
					err = nil
				}
				return err
			})
			return db.pool.SendBatch(ctx, b).Close()
		},
	})
	if err != nil || !ok {
		return 0, agent.Session{}, false, err
	}
	s.CreatedAt = fromMS(created)
	return t, s, true, nil
}

// addQueuedSession adds the active session of queued inbound id's key,
// unless it has one, in one statement after the check of the fence
// (lazily: a session lost in a crash of the database server is added
// again). added is false, with nothing written, when the key has an active
// session (another replica's, just added), or the inbound is not queued
// without a turn: the general case handles these.
func (db *DB) addQueuedSession(ctx context.Context, id agent.InboundID) (added bool, err error) {
	b := &pgx.Batch{}
	b.Queue(lazyCommit)
	queueFence(ctx, b)
	b.Queue(sessionAdd, int64(id), db.now()).
		Exec(func(tag pgconn.CommandTag) error {
			added = tag.RowsAffected() == 1
			return nil
		})
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	return added, nil
}

// TaintTurn records that turn t read untrusted content from source, on the
// turn and on its session, each keeping its first source, in one
// transaction. An unknown turn is store.ErrNotFound.
func (db *DB) TaintTurn(ctx context.Context, t agent.TurnID, source string) error {
	source = text(source)
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		var session int64
		err := tx.QueryRow(ctx, `SELECT session_id FROM turns WHERE id = $1`, t).Scan(&session)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE turns SET taint = $1 WHERE id = $2 AND taint = ''`, source, t); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE sessions SET taint = $1 WHERE id = $2 AND taint = ''`, source, session)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: taint turn %d: %w", t, err)
	}
	return nil
}

// RecordStep notes model call st.N of turn t and appends st.Messages to
// the history of session st.Session within t, in one transaction.
// Recording the same step again replaces its record (the messages are
// appended again). An unknown turn, or an unknown session when st has
// messages, is store.ErrNotFound.
func (db *DB) RecordStep(ctx context.Context, t agent.TurnID, st agent.Step) error {
	contents, err := encodeMessages(st.Messages)
	if err != nil {
		return fmt.Errorf("postgres: record step: %w", err)
	}
	if err := db.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockStep(ctx, tx, t, &st); err != nil {
			return err
		}
		b := &pgx.Batch{}
		queueFence(ctx, b)
		db.queueStep(b, t, &st, contents)
		return tx.SendBatch(ctx, b).Close()
	}); err != nil {
		return fmt.Errorf("postgres: record step: %w", fenced(err))
	}
	return nil
}

// stepUpsert records step $2 of turn $1 and counts it in the daily usage
// sums, in one statement: what its earlier record (a step recorded again)
// added is taken back, from the old record's day and model, and the new
// one added. The two are summed first, as one command cannot change a
// row twice: a step recorded again on the same day with the same model
// nets zero calls. (Only a past day's sums are kept by usage_days, whose
// generation the take-back then still moves: a step is recorded today.)
const stepUpsert = `WITH old AS (SELECT created_at / 86400000 AS day, model, input_tokens, output_tokens
			FROM turn_steps WHERE turn_id = $1 AND step = $2),
		st AS (INSERT INTO turn_steps (turn_id, step, input_tokens, output_tokens, stop_reason, created_at, model)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (turn_id, step) DO UPDATE SET input_tokens = excluded.input_tokens,
				output_tokens = excluded.output_tokens, stop_reason = excluded.stop_reason, created_at = excluded.created_at,
				model = excluded.model),
		d AS (SELECT $6::bigint / 86400000 AS day, $7::text AS model, 1::bigint AS calls, $3::bigint AS input_tokens, $4::bigint AS output_tokens
			UNION ALL SELECT day, model, -1, -input_tokens, -output_tokens FROM old)
	INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens, server)
	SELECT d.day, s.principal_id, s.channel, d.model, sum(d.calls)::bigint, sum(d.input_tokens)::bigint, sum(d.output_tokens)::bigint, s.server
	FROM d CROSS JOIN turns t JOIN sessions s ON s.id = t.session_id WHERE t.id = $1
	GROUP BY d.day, d.model, s.principal_id, s.channel, s.server
	ON CONFLICT (day, principal_id, channel, model) DO UPDATE SET calls = usage_daily.calls + excluded.calls,
		input_tokens = usage_daily.input_tokens + excluded.input_tokens,
		output_tokens = usage_daily.output_tokens + excluded.output_tokens,
		server = CASE WHEN excluded.server <> '' THEN excluded.server ELSE usage_daily.server END`

// lockTurn locks turn t's row, so that a step recorded by two processes at
// once is counted once in the daily sums. An unknown turn is
// store.ErrNotFound.
func lockTurn(ctx context.Context, tx pgx.Tx, t agent.TurnID) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM turns WHERE id = $1 FOR UPDATE`, t).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("turn %d: %w", t, store.ErrNotFound)
	}
	return err
}

// lockStep is lockTurn for step st: when st has messages to append, the
// same round trip checks that their session exists (store.ErrNotFound
// otherwise), as the foreign key on messages.session_id did before
// migration 0031.
func lockStep(ctx context.Context, tx pgx.Tx, t agent.TurnID, st *agent.Step) error {
	if len(st.Messages) == 0 {
		return lockTurn(ctx, tx, t)
	}
	var session bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $2) FROM turns WHERE id = $1 FOR UPDATE`, t, st.Session).Scan(&session)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("turn %d: %w", t, store.ErrNotFound)
	case err == nil && !session:
		return fmt.Errorf("session %d: %w", st.Session, store.ErrNotFound)
	}
	return err
}

// queueStep queues on b the statements that record st (its earlier record
// taken back from the daily sums, then replaced and added) and append its
// messages (encoded as contents), to run in order in one round trip. The
// turn's row must be locked first (lockTurn).
func (db *DB) queueStep(b *pgx.Batch, t agent.TurnID, st *agent.Step, contents []string) {
	now := db.now()
	model := text(st.Model)
	b.Queue(stepUpsert, t, st.N, st.Usage.InputTokens, st.Usage.OutputTokens, text(st.StopReason), now, model)
	queueAppend(b, st.Session, t, st.Messages, contents, now)
}

// StartToolCall records that call started in step of turn t. Starting a
// call with the same id again (a resumed turn, or another replica) records
// a new attempt in the same row: a call is never recorded twice.
func (db *DB) StartToolCall(ctx context.Context, t agent.TurnID, step int, call llm.ToolCall) error {
	// With a fence, its check and the insert go as one batch: one round
	// trip, one implicit transaction.
	b := &pgx.Batch{}
	queueFence(ctx, b)
	b.Queue(`INSERT INTO tool_calls (turn_id, step, call_id, name, arguments, started_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (turn_id, call_id) DO UPDATE SET step = excluded.step, name = excluded.name,
			arguments = excluded.arguments, started_at = excluded.started_at,
			state = 'started', result = '', is_error = FALSE, finished_at = NULL`,
		t, step, text(call.ID), text(call.Name), text(call.Arguments), db.now())
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: start tool call: %w", fenced(err))
	}
	return nil
}

// FinishToolCall records the result of call callID of turn t. A call never
// started is store.ErrNotFound.
func (db *DB) FinishToolCall(ctx context.Context, t agent.TurnID, callID string, result string, isError bool) error {
	b := &pgx.Batch{}
	queueFence(ctx, b)
	b.Queue(`UPDATE tool_calls SET state = 'finished', result = $1, is_error = $2, finished_at = $3
		WHERE turn_id = $4 AND call_id = $5`, text(result), isError, db.now(), t, text(callID)).
		Exec(func(tag pgconn.CommandTag) error { return oneRow(tag, nil) })
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: finish tool call: %w", fenced(err))
	}
	return nil
}

// ToolResults returns the results recorded by FinishToolCall for the calls
// of turn t that finished, by call id.
func (db *DB) ToolResults(ctx context.Context, t agent.TurnID) (map[string]agent.ToolResult, error) {
	rows, err := db.pool.Query(ctx, `SELECT call_id, result, is_error FROM tool_calls WHERE turn_id = $1 AND state = 'finished'`, t)
	if err != nil {
		return nil, fmt.Errorf("postgres: tool results: %w", err)
	}
	defer rows.Close()
	out := map[string]agent.ToolResult{}
	for rows.Next() {
		var (
			id  string
			res agent.ToolResult
		)
		if err := rows.Scan(&id, &res.Content, &res.IsError); err != nil {
			return nil, fmt.Errorf("postgres: tool results: %w", err)
		}
		out[id] = res
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: tool results: %w", err)
	}
	return out, nil
}

// FinishTurn, in one transaction, sets inbound id done (failed when state
// is TurnFailed) if it is queued or running, sets turn t (unless t is 0) to
// state, records last (if not nil) as RecordStep does, and persists r as a
// pending reply, returning its id. Two replicas finishing the same inbound
// finish it once: the second finds it finished (store.ErrFinished). When
// r.Key is zero the reply goes where the inbound came from. An unknown
// inbound, or a turn that is not the inbound's, is store.ErrNotFound.
func (db *DB) FinishTurn(ctx context.Context, id agent.InboundID, t agent.TurnID, state agent.TurnState, r agent.Reply, last *agent.Step) (agent.ReplyID, error) {
	inState := "done"
	switch state {
	case agent.TurnDone:
	case agent.TurnFailed:
		inState = "failed"
	default:
		return 0, fmt.Errorf("postgres: finish turn: unknown state %q", state)
	}
	var contents []string
	if last != nil {
		var err error
		if contents, err = encodeMessages(last.Messages); err != nil {
			return 0, fmt.Errorf("postgres: finish turn of inbound %d: %w", id, err)
		}
	}
	if r.Key == (agent.SessionKey{}) && (t != 0 || last == nil) {
		rid, ok, err := db.finishTurnPiped(ctx, id, t, state, inState, r, last, contents)
		if err != nil {
			return 0, fmt.Errorf("postgres: finish turn of inbound %d: %w", id, fenced(err))
		}
		if ok {
			return rid, nil
		}
	}
	var rid agent.ReplyID
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		now := db.now()
		var (
			pid                      int64
			channel, thread, replyTo string
		)
		err := tx.QueryRow(ctx, `UPDATE inbound SET state = $1 WHERE id = $2 AND state IN ('queued', 'running')
			RETURNING principal_id, channel, thread, reply_to`, inState, id).Scan(&pid, &channel, &thread, &replyTo)
		if errors.Is(err, pgx.ErrNoRows) {
			var st string
			err := tx.QueryRow(ctx, `SELECT state FROM inbound WHERE id = $1`, id).Scan(&st)
			if errors.Is(err, pgx.ErrNoRows) {
				return store.ErrNotFound
			}
			if err != nil {
				return err
			}
			return store.ErrFinished
		}
		if err != nil {
			return err
		}
		if r.Key != (agent.SessionKey{}) {
			channel, thread, replyTo = r.Key.Conversation.Channel, r.Key.Conversation.Thread, r.ReplyTo
			if pid, err = db.principalID(ctx, tx, r.Key.Principal); err != nil {
				return err
			}
		}
		if t == 0 && last != nil {
			// No turn to update: this finds none (store.ErrNotFound).
			if err := lockTurn(ctx, tx, t); err != nil {
				return err
			}
		}
		// The rest in one round trip, in this order: the turn (its
		// update locks its row, as lockTurn does), the last step, the
		// reply.
		b := &pgx.Batch{}
		queueFence(ctx, b)
		if t != 0 {
			b.Queue(`UPDATE turns SET state = $1, finished_at = $2 WHERE id = $3 AND inbound_id = $4`, string(state), now, t, id).
				Exec(func(tag pgconn.CommandTag) error {
					if err := oneRow(tag, nil); err != nil {
						return fmt.Errorf("turn %d: %w", t, err)
					}
					return nil
				})
		}
		if last != nil {
			db.queueStep(b, t, last, contents)
		}
		b.Queue(outboundInsert,
			id, nullID(t), pid, text(channel), text(thread), text(replyTo), string(r.Kind), text(r.Text), now).
			QueryRow(func(row pgx.Row) error { return row.Scan(&rid) })
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: finish turn of inbound %d: %w", id, fenced(err))
	}
	return rid, nil
}

// finishTurnPiped is FinishTurn's common case (the reply goes where the
// inbound came from; a turn, or no step): the inbound set finished and the
// turn's state in one statement, then the last step and the reply. It is
// sent with other sessions' writes when there are (group.go); on its own
// it is one transaction of two round trips where the general case takes
// four: BEGIN and the first statement, then the rest and COMMIT, sent only
// when the first changed both rows. ok is false, with nothing written,
// when the inbound was not queued or running or the turn is not its: the
// general case then tells which.
func (db *DB) finishTurnPiped(ctx context.Context, id agent.InboundID, t agent.TurnID, state agent.TurnState, inState string, r agent.Reply, last *agent.Step, contents []string) (rid agent.ReplyID, ok bool, err error) {
	now := db.now()
	var (
		pid                      int64
		channel, thread, replyTo string
		finished, turned         bool
	)
	// The turn's update locks its row, as lockTurn does, before the
	// step's usage is counted. With t 0 it finds no turn, as it should.
	first := func(b *pgx.Batch) {
		// A superseded fence fails the group, whose writes are then done
		// one by one: this one alone fails (agent.ErrFenced).
		queueFence(ctx, b)
		b.Queue(finishQueued, inState, id, string(state), now, t).Query(func(rows pgx.Rows) error {
			finished, turned = false, false
			for rows.Next() {
				if err := rows.Scan(&pid, &channel, &thread, &replyTo, &turned); err != nil {
					return err
				}
				finished, turned = true, turned || t == 0
			}
			return rows.Err()
		})
	}
	// then queues the rest when the first statement changed both rows;
	// nothing when it changed none; a group is rolled back when it changed
	// the inbound only (a turn not the inbound's: the general case says so).
	then := func(b *pgx.Batch) error {
		if !finished {
			return nil
		}
		if !turned {
			return errGroupAbort
		}
		if last != nil {
			db.queueStep(b, t, last, contents)
		}
		b.Queue(outboundInsert,
			id, nullID(t), pid, channel, thread, replyTo, string(r.Kind), text(r.Text), now).
			QueryRow(func(row pgx.Row) error { return row.Scan(&rid) })
		return nil
	}
	alone := func(ctx context.Context) error {
		c, err := db.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		// A connection left in a transaction (a ROLLBACK that failed) is
		// closed by the pool on release, not reused.
		defer c.Release()
		rollback := func() { _, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK") }
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		first(b)
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			rollback()
			return err
		}
		b = &pgx.Batch{}
		if err := then(b); err != nil || !finished {
			rollback()
			finished = false
			return nil
		}
		b.Queue("COMMIT")
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			rollback()
			return err
		}
		return nil
	}
	err = db.group.do(&groupWrite{ctx: ctx, first: first, then: then, alone: alone})
	if err != nil || !finished || !turned {
		return 0, false, err
	}
	return rid, true, nil
}

// AmendInbound changes a queued inbound found by dedupe key: a.Cancel
// marks it done (no reply), otherwise its text is replaced, unless an edit
// newer than a.Edited was applied (edited_us, migration 0030). changed is
// false when it is unknown, its turn has started or the edit is older.
func (db *DB) AmendInbound(ctx context.Context, dedupeKey string, a agent.Amendment) (agent.InboundID, bool, error) {
	var (
		id  agent.InboundID
		err error
	)
	if a.Cancel {
		err = db.pool.QueryRow(ctx, `UPDATE inbound SET state = 'done' WHERE dedupe_key = $1 AND state = 'queued' RETURNING id`, text(dedupeKey)).Scan(&id)
	} else {
		// A concurrent amendment of the row makes this one wait and check
		// edited_us again on the row it wrote (READ COMMITTED).
		us, notAfter := a.EditedMicros(), a.EditedMicros()
		if us == 0 {
			notAfter = math.MaxInt64 // no time: the last written wins
		}
		err = db.pool.QueryRow(ctx, `UPDATE inbound SET text = $1, edited_us = GREATEST(edited_us, $2)
			WHERE dedupe_key = $3 AND state = 'queued' AND edited_us <= $4 RETURNING id`,
			text(a.Text), us, text(dedupeKey), notAfter).Scan(&id)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("postgres: amend inbound: %w", err)
	}
	return id, true, nil
}

// acceptInsert accepts a message of a known principal (AcceptInbound).
const acceptInsert = `INSERT INTO inbound (dedupe_key, principal_id, channel, thread, text, reply_to, received_at, accepted_at, files, server)
	SELECT $1, p.id, $5, $6, $7, $8, $9, $10, $11, $12 FROM principals p WHERE p.platform = $2 AND p.workspace = $3 AND p."user" = $4
	ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`

// pendingUpTo loads an announced message and its session's earlier pending ones (PendingUpTo).
const pendingUpTo = `SELECT ` + inboundCols + ` FROM inbound i JOIN principals p ON p.id = i.principal_id
		JOIN inbound a ON a.id = $1 AND a.principal_id = i.principal_id AND a.channel = i.channel AND a.thread = i.thread
		WHERE i.id <= a.id AND i.state IN ('queued', 'running') ORDER BY i.id`

// startQueued starts a queued inbound's turn in its active session (startQueuedTurn).
const startQueued = `WITH i AS (SELECT id, principal_id, channel, thread, server FROM inbound
				WHERE id = $1 AND state = 'queued' AND turn_id IS NULL FOR UPDATE),
			s AS (SELECT s.id, s.summary, s.summary_upto, s.created_at, s.taint FROM sessions s
				JOIN i ON s.principal_id = i.principal_id AND s.channel = i.channel AND s.thread = i.thread WHERE s.active),
			t AS (INSERT INTO turns (session_id, inbound_id, state, started_at) SELECT s.id, $1, 'running', $2 FROM s RETURNING id, session_id),
			u AS (UPDATE inbound SET state = 'running', turn_id = t.id FROM t WHERE inbound.id = $1),
			m AS (INSERT INTO messages (session_id, turn_id, role, content, created_at) SELECT t.session_id, t.id, $3, $4, $2 FROM t WHERE $5),
			v AS (UPDATE sessions SET server = i.server FROM t, i WHERE sessions.id = t.session_id AND sessions.server = '' AND i.server <> '')
		SELECT t.id, s.id, s.summary, s.summary_upto, s.created_at, s.taint, p.platform, p.workspace, p."user", i.channel, i.thread
		FROM t JOIN s ON s.id = t.session_id CROSS JOIN i JOIN principals p ON p.id = i.principal_id`

// finishQueued finishes an inbound and its turn (finishTurnPiped).
const finishQueued = `WITH i AS (UPDATE inbound SET state = $1 WHERE id = $2 AND state IN ('queued', 'running')
			RETURNING principal_id, channel, thread, reply_to),
		tu AS (UPDATE turns SET state = $3, finished_at = $4 WHERE id = $5 AND inbound_id = $2 AND EXISTS (SELECT 1 FROM i) RETURNING id)
		SELECT principal_id, channel, thread, reply_to, EXISTS (SELECT 1 FROM tu) FROM i`

// outboundInsert puts a turn's reply in the outbox (FinishTurn).
const outboundInsert = `INSERT INTO outbound (inbound_id, turn_id, principal_id, channel, thread, reply_to, kind, text, created_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`

// principalAdd adds a principal unless it exists (AcceptInbound).
const principalAdd = `INSERT INTO principals (platform, workspace, "user", created_at) VALUES ($1, $2, $3, $4)
	ON CONFLICT (platform, workspace, "user") DO NOTHING`

// sessionAdd adds the active session of a queued inbound's key unless it
// has one (addQueuedSession).
const sessionAdd = `INSERT INTO sessions (principal_id, channel, thread, active, created_at)
	SELECT principal_id, channel, thread, TRUE, $2 FROM inbound WHERE id = $1 AND state = 'queued' AND turn_id IS NULL
	ON CONFLICT (principal_id, channel, thread) WHERE active DO NOTHING`
