package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// errRollback makes inTx roll back without it being a failure.
var errRollback = errors.New("store: roll back")

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func scanInbound(r rowScanner) (agent.QueuedInbound, error) {
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

// principalID returns the id of p, adding the principal if it is new.
func (db *DB) principalID(ctx context.Context, tx *wtx, p agent.Principal) (int64, error) {
	var id int64
	err := tx.StmtContext(ctx, db.ws.principalGet).QueryRowContext(ctx, p.Platform, p.Workspace, p.User).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.StmtContext(ctx, db.ws.principalAdd).QueryRowContext(ctx, p.Platform, p.Workspace, p.User, db.now()).Scan(&id)
	}
	return id, err
}

// AcceptInbound persists in and queues it, adding its principal if new, in
// one transaction. If its DedupeKey was seen before, nothing is written, dup
// is true and q is the inbound accepted first. A zero ReceivedAt is set to
// the clock's time. Times are kept to the millisecond.
func (db *DB) AcceptInbound(ctx context.Context, in agent.Inbound) (q agent.QueuedInbound, dup bool, err error) {
	if in.DedupeKey == "" {
		return q, false, errors.New("store: accept inbound: empty dedupe key")
	}
	// A key seen before is answered by a reader, keeping duplicate storms
	// (platform retries) off the writer.
	if err := ctx.Err(); err != nil {
		return q, false, fmt.Errorf("store: accept inbound: %w", err)
	}
	if q, err := scanInbound(db.rs.inboundSeen.QueryRowContext(quick(ctx), in.DedupeKey)); err == nil {
		return q, true, nil
	} else if !errors.Is(err, sql.ErrNoRows) {
		return agent.QueuedInbound{}, false, fmt.Errorf("store: accept inbound: %w", err)
	}

	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = db.Now()
	}
	in.ReceivedAt = fromMS(toMS(in.ReceivedAt))
	files := ""
	if len(in.Files) > 0 {
		b, err := json.Marshal(in.Files)
		if err != nil {
			return agent.QueuedInbound{}, false, fmt.Errorf("store: accept inbound: files: %w", err)
		}
		files = string(b)
	}
	var id agent.InboundID
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		pid, err := db.principalID(ctx, tx, in.Key.Principal)
		if err != nil {
			return err
		}
		err = tx.StmtContext(ctx, db.ws.inboundAdd).QueryRowContext(ctx,
			in.DedupeKey, pid, in.Key.Conversation.Channel, in.Key.Conversation.Thread,
			in.Text, in.ReplyTo, toMS(in.ReceivedAt), db.now(), files, in.Server).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			// Accepted between the look-up above and this transaction.
			dup = true
			return errRollback
		}
		return err
	})
	if dup {
		q, err := scanInbound(db.rs.inboundSeen.QueryRowContext(ctx, in.DedupeKey))
		if err != nil {
			return agent.QueuedInbound{}, true, fmt.Errorf("store: accept inbound: %w", err)
		}
		return q, true, nil
	}
	if err != nil {
		return q, false, fmt.Errorf("store: accept inbound: %w", err)
	}
	return agent.QueuedInbound{ID: id, Inbound: in}, false, nil
}

// Pending lists the inbound messages whose turn has not finished (queued or
// running), in the order they were accepted.
func (db *DB) Pending(ctx context.Context) ([]agent.QueuedInbound, error) {
	rows, err := db.rs.pending.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: pending: %w", err)
	}
	defer rows.Close()
	var qs []agent.QueuedInbound
	for rows.Next() {
		q, err := scanInbound(rows)
		if err != nil {
			return nil, fmt.Errorf("store: pending: %w", err)
		}
		qs = append(qs, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: pending: %w", err)
	}
	return qs, nil
}

// StartTurn marks inbound id running in one transaction: it resolves the
// active session of the inbound's key (creating it if needed), creates the
// turn and appends user (if not nil) to the session's history. If a turn was
// started for id before, it returns that turn and its session with resumed
// set, and writes nothing. An unknown id is ErrNotFound; an inbound that has
// finished is ErrFinished. Under a superseded fencing token (ctx's
// agent.Fence) it fails with agent.ErrFenced, writing nothing.
func (db *DB) StartTurn(ctx context.Context, id agent.InboundID, user *llm.Message) (t agent.TurnID, s agent.Session, resumed bool, err error) {
	var content []byte
	if user != nil {
		if content, err = json.Marshal(user); err != nil {
			return 0, s, false, fmt.Errorf("store: start turn %d: encode message: %w", id, err)
		}
	}
	check := fenceOf(ctx)
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var (
			state   string
			pid     int64
			turn    sql.NullInt64
			session sql.NullInt64
			server  string
		)
		if check != nil {
			// A superseded owner neither starts nor resumes a turn.
			if err := check(ctx, tx); err != nil {
				return err
			}
		}
		err := tx.StmtContext(ctx, db.ws.inboundForTurn).QueryRowContext(ctx, id).Scan(&state, &pid,
			&s.Key.Principal.Platform, &s.Key.Principal.Workspace, &s.Key.Principal.User,
			&s.Key.Conversation.Channel, &s.Key.Conversation.Thread, &turn, &session, &server)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if state == "done" || state == "failed" {
			return ErrFinished
		}
		now := db.now()
		if turn.Valid {
			t, s.ID, resumed = agent.TurnID(turn.Int64), agent.SessionID(session.Int64), true
			var created int64
			if err := tx.StmtContext(ctx, db.ws.sessionByID).QueryRowContext(ctx, s.ID).Scan(&s.Summary, &s.SummaryUpTo, &created, &s.Taint); err != nil {
				return err
			}
			s.CreatedAt = fromMS(created)
			// Nothing was written: let the rollback end the transaction.
			return errRollback
		}
		if err := db.activeSessionTx(ctx, tx, pid, &s, now); err != nil {
			return err
		}
		if server != "" {
			// The session's channel lies in this server: its usage is
			// counted to it (migration 0026).
			if _, err := tx.StmtContext(ctx, db.ws.sessionServer).ExecContext(ctx, server, s.ID); err != nil {
				return err
			}
		}
		if err := tx.StmtContext(ctx, db.ws.turnAdd).QueryRowContext(ctx, s.ID, id, now).Scan(&t); err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, db.ws.inboundRun).ExecContext(ctx, t, id); err != nil {
			return err
		}
		if user != nil {
			if _, err := tx.StmtContext(ctx, db.ws.messageAdd).ExecContext(ctx, s.ID, t, string(user.Role), string(content), now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !(resumed && errors.Is(err, errRollback)) {
		return 0, agent.Session{}, false, fmt.Errorf("store: start turn %d: %w", id, err)
	}
	return t, s, resumed, nil
}

// TaintTurn records that turn t read untrusted content from source, on the
// turn and on its session, each keeping its first source, in one
// transaction. An unknown turn is ErrNotFound.
func (db *DB) TaintTurn(ctx context.Context, t agent.TurnID, source string) error {
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.StmtContext(ctx, db.ws.turnTaint).ExecContext(ctx, source, t); err != nil {
			return err
		}
		res, err := tx.StmtContext(ctx, db.ws.sessionTaint).ExecContext(ctx, source, t)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			var exists int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM turns WHERE id = ?`, t).Scan(&exists); err != nil {
				return err
			}
			if exists == 0 {
				return ErrNotFound
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: taint turn %d: %w", t, err)
	}
	return nil
}

// RecordStep notes model call st.N of turn t and appends st.Messages to
// the history of session st.Session within t, in one transaction.
// Recording the same step again replaces its record (the messages are
// appended again).
func (db *DB) RecordStep(ctx context.Context, t agent.TurnID, st agent.Step) error {
	contents, err := encodeMessages(st.Messages)
	if err != nil {
		return fmt.Errorf("store: record step: %w", err)
	}
	replaced := int64(-1)
	check := fenceOf(ctx)
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if check != nil {
			if err := check(ctx, tx); err != nil {
				return err
			}
		}
		return db.stepTx(ctx, tx, t, &st, contents, &replaced)
	})
	db.usage.dropAfterCommit(replaced)
	if err != nil {
		return fmt.Errorf("store: record step: %w", err)
	}
	return nil
}

// stepTx records st and appends its messages (encoded as contents).
// The UTC day of a step it replaces is set in *replaced, whose cached usage
// the caller drops again once the transaction has ended (usageCache).
func (db *DB) stepTx(ctx context.Context, tx *wtx, t agent.TurnID, st *agent.Step, contents []string, replaced *int64) error {
	now := db.now()
	// The daily usage sums (usage_daily) take the step's figures, and give
	// back those of the step it replaces (a resumed turn).
	var oldIn, oldOut, oldAt int64
	var oldModel string
	err := tx.StmtContext(ctx, db.ws.stepOld).QueryRowContext(ctx, t, st.N).Scan(&oldIn, &oldOut, &oldAt, &oldModel)
	switch {
	case err == nil:
		*replaced = oldAt / dayMS
		db.usage.drop(*replaced)
		if _, err := tx.ExecContext(ctx, `DELETE FROM usage_days WHERE day = ?`, *replaced); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM usage_periods WHERE first_day <= ? AND end_day > ?`, *replaced, *replaced); err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, db.ws.usageAdd).ExecContext(ctx, oldAt, oldModel, -1, -oldIn, -oldOut, t); err != nil {
			return err
		}
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	if _, err := tx.StmtContext(ctx, db.ws.stepPut).ExecContext(ctx,
		t, st.N, st.Usage.InputTokens, st.Usage.OutputTokens, st.StopReason, now, st.Model); err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, db.ws.usageAdd).ExecContext(ctx, now, st.Model, 1, st.Usage.InputTokens, st.Usage.OutputTokens, t); err != nil {
		return err
	}
	return db.appendTx(ctx, tx, st.Session, t, st.Messages, contents, now)
}

// StartToolCall records that call started in step of turn t. Starting a
// call with the same id again (a resumed turn) records a new attempt.
func (db *DB) StartToolCall(ctx context.Context, t agent.TurnID, step int, call llm.ToolCall) error {
	_, err := db.fencedExec(ctx, db.ws.toolStart, t, step, call.ID, call.Name, call.Arguments, db.now())
	if err != nil {
		return fmt.Errorf("store: start tool call: %w", err)
	}
	return nil
}

// FinishToolCall records the result of call callID of turn t. A call never
// started is ErrNotFound.
func (db *DB) FinishToolCall(ctx context.Context, t agent.TurnID, callID string, result string, isError bool) error {
	res, err := db.fencedExec(ctx, db.ws.toolFinish, result, isError, db.now(), t, callID)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("store: finish tool call: %w", err)
	}
	return nil
}

// ToolResults returns the results recorded by FinishToolCall for the calls
// of turn t that finished, by call id. A call started again since (a
// resumed turn) is not finished until it is recorded again.
func (db *DB) ToolResults(ctx context.Context, t agent.TurnID) (map[string]agent.ToolResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: tool results: %w", err)
	}
	rows, err := db.rs.toolResults.QueryContext(quick(ctx), t)
	if err != nil {
		return nil, fmt.Errorf("store: tool results: %w", err)
	}
	defer rows.Close()
	out := map[string]agent.ToolResult{}
	for rows.Next() {
		var (
			id  string
			res agent.ToolResult
		)
		if err := rows.Scan(&id, &res.Content, &res.IsError); err != nil {
			return nil, fmt.Errorf("store: tool results: %w", err)
		}
		out[id] = res
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tool results: %w", err)
	}
	return out, nil
}

// FinishTurn, in one transaction, sets turn t (unless t is 0) to state,
// sets inbound id done (failed when state is TurnFailed), records last (if
// not nil) as RecordStep does, and persists r as a pending reply, returning
// its id. r's Inbound and Turn are taken from id and t; when r.Key is zero,
// the reply goes where the inbound came from (its key and ReplyTo). An
// unknown inbound, or a turn that is not the inbound's, is ErrNotFound; an
// inbound already finished is ErrFinished.
func (db *DB) FinishTurn(ctx context.Context, id agent.InboundID, t agent.TurnID, state agent.TurnState, r agent.Reply, last *agent.Step) (agent.ReplyID, error) {
	inState := "done"
	switch state {
	case agent.TurnDone:
	case agent.TurnFailed:
		inState = "failed"
	default:
		return 0, fmt.Errorf("store: finish turn: unknown state %q", state)
	}
	var contents []string
	if last != nil {
		var err error
		if contents, err = encodeMessages(last.Messages); err != nil {
			return 0, fmt.Errorf("store: finish turn of inbound %d: %w", id, err)
		}
	}
	var rid agent.ReplyID
	replaced := int64(-1)
	defer func() { db.usage.dropAfterCommit(replaced) }()
	check := fenceOf(ctx)
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if check != nil {
			if err := check(ctx, tx); err != nil {
				return err
			}
		}
		now := db.now()
		var (
			pid                      int64
			channel, thread, replyTo string
		)
		err := tx.StmtContext(ctx, db.ws.inboundFinish).QueryRowContext(ctx, inState, id).Scan(&pid, &channel, &thread, &replyTo)
		if errors.Is(err, sql.ErrNoRows) {
			var st string
			err := tx.StmtContext(ctx, db.ws.inboundState).QueryRowContext(ctx, id).Scan(&st)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			return ErrFinished
		}
		if err != nil {
			return err
		}
		if t != 0 {
			res, err := tx.StmtContext(ctx, db.ws.turnFinish).ExecContext(ctx, string(state), now, t, id)
			if err == nil {
				err = oneRow(res)
			}
			if err != nil {
				return fmt.Errorf("turn %d: %w", t, err)
			}
		}
		if last != nil {
			if err := db.stepTx(ctx, tx, t, last, contents, &replaced); err != nil {
				return err
			}
		}
		if r.Key != (agent.SessionKey{}) {
			channel, thread, replyTo = r.Key.Conversation.Channel, r.Key.Conversation.Thread, r.ReplyTo
			if pid, err = db.principalID(ctx, tx, r.Key.Principal); err != nil {
				return err
			}
		}
		return tx.StmtContext(ctx, db.ws.replyAdd).QueryRowContext(ctx,
			id, nullID(t), pid, channel, thread, replyTo, string(r.Kind), r.Text, now).Scan(&rid)
	})
	if err != nil {
		return 0, fmt.Errorf("store: finish turn of inbound %d: %w", id, err)
	}
	return rid, nil
}

// oneRow turns an update that matched no row into ErrNotFound.
func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
