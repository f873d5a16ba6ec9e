package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/talonhq/talon/agent"
)

const approvalCols = `a.id, a.turn_id, a.call_id, a.tool, a.description, p.platform, p.workspace, p.user,
	a.channel, a.thread, a.reply_to, a.state, a.created_at, a.expires_at, a.decided_at, a.decided_by,
	a.method, a.host, a.path, a.args, a.args_omitted, a.message, a.reason, a.url_bytes, a.body_bytes`

func scanApproval(r rowScanner) (agent.Approval, error) {
	var (
		a                         agent.Approval
		state                     string
		created, expires, decided int64
	)
	err := r.Scan(&a.ID, &a.Turn, &a.CallID, &a.Tool, &a.Description,
		&a.Key.Principal.Platform, &a.Key.Principal.Workspace, &a.Key.Principal.User,
		&a.Key.Conversation.Channel, &a.Key.Conversation.Thread, &a.ReplyTo, &state,
		&created, &expires, &decided, &a.DecidedBy,
		&a.Detail.Method, &a.Detail.Host, &a.Detail.Path, &a.Detail.Args, &a.Detail.ArgsOmitted, &a.Message,
		&a.Detail.Reason, &a.Detail.URLBytes, &a.Detail.BodyBytes)
	a.State = agent.ApprovalState(state)
	a.CreatedAt, a.ExpiresAt, a.DecidedAt = fromMS(created), fromMS(expires), fromMS(decided)
	return a, err
}

// CreateApproval persists a pending approval unless one exists for the same
// turn, call and description, which it then returns with created false.
func (db *DB) CreateApproval(ctx context.Context, a agent.Approval) (agent.Approval, bool, error) {
	var id agent.ApprovalID
	created := false
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		err := tx.QueryRowContext(ctx, `SELECT id FROM approvals WHERE turn_id = ? AND call_id = ? AND description = ?`,
			a.Turn, a.CallID, a.Description).Scan(&id)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		pid, err := db.principalID(ctx, tx, a.Key.Principal)
		if err != nil {
			return err
		}
		created = true
		return tx.QueryRowContext(ctx, `INSERT INTO approvals (turn_id, call_id, tool, description, principal_id,
				channel, thread, reply_to, state, created_at, expires_at, method, host, path, args, args_omitted, message,
				reason, url_bytes, body_bytes)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			a.Turn, a.CallID, a.Tool, a.Description, pid, a.Key.Conversation.Channel, a.Key.Conversation.Thread,
			a.ReplyTo, db.now(), toMS(a.ExpiresAt), a.Detail.Method, a.Detail.Host, a.Detail.Path, a.Detail.Args,
			a.Detail.ArgsOmitted, a.Message, a.Detail.Reason, a.Detail.URLBytes, a.Detail.BodyBytes).Scan(&id)
	})
	if err != nil {
		return agent.Approval{}, false, fmt.Errorf("store: create approval: %w", err)
	}
	got, err := db.GetApproval(ctx, id)
	return got, created, err
}

// GetApproval returns the approval id, or an error wrapping ErrNotFound.
func (db *DB) GetApproval(ctx context.Context, id agent.ApprovalID) (agent.Approval, error) {
	a, err := scanApproval(db.w.QueryRowContext(ctx, `SELECT `+approvalCols+`
		FROM approvals a JOIN principals p ON p.id = a.principal_id WHERE a.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("store: approval %d: %w: %w", id, ErrNotFound, agent.ErrUnknownApproval)
	}
	if err != nil {
		return a, fmt.Errorf("store: approval %d: %w", id, err)
	}
	return a, nil
}

// DecideApproval moves a pending approval to state (compare-and-set) and
// returns it as it is afterwards, with whether this call changed it.
func (db *DB) DecideApproval(ctx context.Context, id agent.ApprovalID, state agent.ApprovalState, by string) (agent.Approval, bool, error) {
	res, err := db.execSQL(ctx, `UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?
		WHERE id = ? AND state = 'pending'`, string(state), db.now(), by, id)
	if err != nil {
		return agent.Approval{}, false, fmt.Errorf("store: decide approval: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return agent.Approval{}, false, fmt.Errorf("store: decide approval: %w", err)
	}
	a, err := db.GetApproval(ctx, id)
	return a, n == 1, err
}

// SetApprovalMessage records the platform message that shows approval
// id's prompt. An unknown id is an error wrapping ErrNotFound.
func (db *DB) SetApprovalMessage(ctx context.Context, id agent.ApprovalID, message string) error {
	res, err := db.execSQL(ctx, `UPDATE approvals SET message = ? WHERE id = ?`, message, id)
	if err != nil {
		return fmt.Errorf("store: set approval message: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("store: set approval message of %d: %w", id, ErrNotFound)
	}
	return nil
}

// PendingApprovals lists pending approvals, oldest first.
func (db *DB) PendingApprovals(ctx context.Context) ([]agent.Approval, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+approvalCols+`
		FROM approvals a JOIN principals p ON p.id = a.principal_id WHERE a.state = 'pending' ORDER BY a.id`)
	if err != nil {
		return nil, fmt.Errorf("store: pending approvals: %w", err)
	}
	defer rows.Close()
	var out []agent.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, fmt.Errorf("store: pending approvals: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// AmendInbound changes a queued inbound found by dedupe key: a.Cancel
// marks it done (no reply), otherwise its text is replaced, unless an edit
// newer than a.Edited was applied (edited_us, migration 0032).
func (db *DB) AmendInbound(ctx context.Context, dedupeKey string, a agent.Amendment) (agent.InboundID, bool, error) {
	var (
		res sql.Result
		err error
	)
	if a.Cancel {
		res, err = db.execSQL(ctx, `UPDATE inbound SET state = 'done' WHERE dedupe_key = ? AND state = 'queued'`, dedupeKey)
	} else {
		us, notAfter := a.EditedMicros(), a.EditedMicros()
		if us == 0 {
			notAfter = math.MaxInt64 // no time: the last written wins
		}
		res, err = db.execSQL(ctx, `UPDATE inbound SET text = ?, edited_us = max(edited_us, ?)
			WHERE dedupe_key = ? AND state = 'queued' AND edited_us <= ?`, a.Text, us, dedupeKey, notAfter)
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: amend inbound: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return 0, false, nil
	}
	var id agent.InboundID
	if err := db.w.QueryRowContext(ctx, `SELECT id FROM inbound WHERE dedupe_key = ?`, dedupeKey).Scan(&id); err != nil {
		return 0, false, fmt.Errorf("store: amend inbound: %w", err)
	}
	return id, true, nil
}
