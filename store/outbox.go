package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/talonhq/talon/agent"
)

// Undelivered lists the replies still pending delivery, oldest first.
func (db *DB) Undelivered(ctx context.Context) ([]agent.Reply, error) {
	rows, err := db.rs.undelivered.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: undelivered: %w", err)
	}
	defer rows.Close()
	var replies []agent.Reply
	for rows.Next() {
		var (
			r             agent.Reply
			inbound, turn sql.NullInt64
			kind          string
			created       int64
		)
		if err := rows.Scan(&r.ID, &inbound, &turn,
			&r.Key.Principal.Platform, &r.Key.Principal.Workspace, &r.Key.Principal.User,
			&r.Key.Conversation.Channel, &r.Key.Conversation.Thread,
			&r.ReplyTo, &kind, &r.Text, &created); err != nil {
			return nil, fmt.Errorf("store: undelivered: %w", err)
		}
		r.Inbound, r.Turn = agent.InboundID(inbound.Int64), agent.TurnID(turn.Int64)
		r.Kind, r.CreatedAt = agent.ReplyKind(kind), fromMS(created)
		replies = append(replies, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: undelivered: %w", err)
	}
	return replies, nil
}

// MarkDelivered records that reply id was delivered as the platform's
// message platformID. Marking a delivered reply again changes nothing and
// is not an error; a reply marked failed may still be marked delivered. An
// unknown reply is ErrNotFound.
func (db *DB) MarkDelivered(ctx context.Context, id agent.ReplyID, platformID string) error {
	res, err := db.exec(ctx, db.ws.replyDelivered, platformID, db.now(), id)
	if err == nil {
		err = db.changedOrExists(ctx, res, id)
	}
	if err != nil {
		return fmt.Errorf("store: mark reply %d delivered: %w", id, err)
	}
	return nil
}

// MarkFailed records that reply id will not be delivered, and why. A reply
// already delivered or failed is left as it is, without error. An unknown
// reply is ErrNotFound.
func (db *DB) MarkFailed(ctx context.Context, id agent.ReplyID, reason string) error {
	res, err := db.exec(ctx, db.ws.replyFailed, reason, id)
	if err == nil {
		err = db.changedOrExists(ctx, res, id)
	}
	if err != nil {
		return fmt.Errorf("store: mark reply %d failed: %w", id, err)
	}
	return nil
}

// changedOrExists is nil when res changed a row or reply id exists (and so
// was already in the state asked for), ErrNotFound otherwise. Replies are
// never deleted, so looking after the update is not racy.
func (db *DB) changedOrExists(ctx context.Context, res sql.Result, id agent.ReplyID) error {
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return err
	}
	var state string
	err = db.ws.replyState.QueryRowContext(ctx, id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
