package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

const approvalCols = `a.id, a.turn_id, a.call_id, a.tool, a.description, p.platform, p.workspace, p."user",
	a.channel, a.thread, a.reply_to, a.state, a.created_at, a.expires_at, a.decided_at, a.decided_by,
	a.method, a.host, a.path, a.args, a.args_omitted, a.message, a.reason, a.url_bytes, a.body_bytes`

func scanApproval(r pgx.Row) (agent.Approval, error) {
	var (
		a                         agent.Approval
		state                     string
		created, expires, decided int64
		omitted, urlB, bodyB      int64
	)
	err := r.Scan(&a.ID, &a.Turn, &a.CallID, &a.Tool, &a.Description,
		&a.Key.Principal.Platform, &a.Key.Principal.Workspace, &a.Key.Principal.User,
		&a.Key.Conversation.Channel, &a.Key.Conversation.Thread, &a.ReplyTo, &state,
		&created, &expires, &decided, &a.DecidedBy,
		&a.Detail.Method, &a.Detail.Host, &a.Detail.Path, &a.Detail.Args, &omitted, &a.Message,
		&a.Detail.Reason, &urlB, &bodyB)
	a.State = agent.ApprovalState(state)
	a.CreatedAt, a.ExpiresAt, a.DecidedAt = fromMS(created), fromMS(expires), fromMS(decided)
	a.Detail.ArgsOmitted, a.Detail.URLBytes, a.Detail.BodyBytes = int(omitted), int(urlB), int(bodyB)
	return a, err
}

// CreateApproval persists a pending approval unless one exists for the same
// turn, call and description (created by any replica), which it then
// returns with created false.
func (db *DB) CreateApproval(ctx context.Context, a agent.Approval) (agent.Approval, bool, error) {
	var id agent.ApprovalID
	created := false
	desc, call := text(a.Description), text(a.CallID)
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		const find = `SELECT id FROM approvals WHERE turn_id = $1 AND call_id = $2 AND description = $3`
		err := tx.QueryRow(ctx, find, a.Turn, call, desc).Scan(&id)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		pid, err := db.principalID(ctx, tx, a.Key.Principal)
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO approvals (turn_id, call_id, tool, description, principal_id,
				channel, thread, reply_to, state, created_at, expires_at, method, host, path, args, args_omitted, message,
				reason, url_bytes, body_bytes)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
			ON CONFLICT (turn_id, call_id, description) DO NOTHING RETURNING id`,
			a.Turn, call, text(a.Tool), desc, pid, text(a.Key.Conversation.Channel), text(a.Key.Conversation.Thread),
			text(a.ReplyTo), db.now(), toMS(a.ExpiresAt), text(a.Detail.Method), text(a.Detail.Host), text(a.Detail.Path),
			text(a.Detail.Args), a.Detail.ArgsOmitted, text(a.Message), text(a.Detail.Reason), a.Detail.URLBytes, a.Detail.BodyBytes).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			// Created by a replica since the look-up above.
			return tx.QueryRow(ctx, find, a.Turn, call, desc).Scan(&id)
		}
		created = err == nil
		return err
	})
	if err != nil {
		return agent.Approval{}, false, fmt.Errorf("postgres: create approval: %w", err)
	}
	got, err := db.GetApproval(ctx, id)
	return got, created, err
}

// GetApproval returns the approval id, or an error wrapping
// store.ErrNotFound and agent.ErrUnknownApproval.
func (db *DB) GetApproval(ctx context.Context, id agent.ApprovalID) (agent.Approval, error) {
	a, err := scanApproval(db.pool.QueryRow(ctx, `SELECT `+approvalCols+`
		FROM approvals a JOIN principals p ON p.id = a.principal_id WHERE a.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, fmt.Errorf("postgres: approval %d: %w: %w", id, store.ErrNotFound, agent.ErrUnknownApproval)
	}
	if err != nil {
		return a, fmt.Errorf("postgres: approval %d: %w", id, err)
	}
	return a, nil
}

// DecideApproval moves a pending approval to state (compare-and-set: of
// two replicas deciding at once, one changes it) and returns it as it is
// afterwards, with whether this call changed it.
func (db *DB) DecideApproval(ctx context.Context, id agent.ApprovalID, state agent.ApprovalState, by string) (agent.Approval, bool, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE approvals SET state = $1, decided_at = $2, decided_by = $3
		WHERE id = $4 AND state = 'pending'`, string(state), db.now(), text(by), id)
	if err != nil {
		return agent.Approval{}, false, fmt.Errorf("postgres: decide approval: %w", err)
	}
	a, err := db.GetApproval(ctx, id)
	return a, tag.RowsAffected() == 1, err
}

// SetApprovalMessage records the platform message that shows approval
// id's prompt. An unknown id is an error wrapping store.ErrNotFound.
func (db *DB) SetApprovalMessage(ctx context.Context, id agent.ApprovalID, message string) error {
	if err := oneRow(db.pool.Exec(ctx, `UPDATE approvals SET message = $1 WHERE id = $2`, text(message), id)); err != nil {
		return fmt.Errorf("postgres: set approval message of %d: %w", id, err)
	}
	return nil
}

// PendingApprovals lists pending approvals, oldest first.
func (db *DB) PendingApprovals(ctx context.Context) ([]agent.Approval, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+approvalCols+`
		FROM approvals a JOIN principals p ON p.id = a.principal_id WHERE a.state = 'pending' ORDER BY a.id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: pending approvals: %w", err)
	}
	defer rows.Close()
	var out []agent.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: pending approvals: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: pending approvals: %w", err)
	}
	return out, nil
}
