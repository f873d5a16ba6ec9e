package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/talonhq/talon/agent"
)

// Undelivered lists the replies still pending delivery, oldest first,
// with the parts recorded as posted (Reply.Posted, in the order of N): a
// preview recorded for the reply's inbound is its part 0 unless part 0
// itself is recorded.
func (db *DB) Undelivered(ctx context.Context) ([]agent.Reply, error) {
	replies, err := db.undelivered(ctx)
	if err != nil || len(replies) == 0 {
		return replies, err
	}
	byID := make(map[agent.ReplyID]*agent.Reply, len(replies))
	for i := range replies {
		byID[replies[i].ID] = &replies[i]
	}
	rows, err := db.rs.pendingParts.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: undelivered: parts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id agent.ReplyID
			p  agent.PostedPart
		)
		if err := rows.Scan(&id, &p.N, &p.PlatformID); err != nil {
			return nil, fmt.Errorf("store: undelivered: parts: %w", err)
		}
		if r := byID[id]; r != nil {
			r.Posted = append(r.Posted, p)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: undelivered: parts: %w", err)
	}
	views, err := db.rs.pendingViews.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: undelivered: previews: %w", err)
	}
	defer views.Close()
	for views.Next() {
		var (
			id  agent.ReplyID
			pid string
		)
		if err := views.Scan(&id, &pid); err != nil {
			return nil, fmt.Errorf("store: undelivered: previews: %w", err)
		}
		if r := byID[id]; r != nil {
			if _, ok := r.PostedPart(0); !ok {
				r.Posted = append([]agent.PostedPart{{N: 0, PlatformID: pid, Preview: true}}, r.Posted...)
			}
		}
	}
	if err := views.Err(); err != nil {
		return nil, fmt.Errorf("store: undelivered: previews: %w", err)
	}
	return replies, nil
}

// RecordPart records that part p of reply id was posted, as the platform's
// message p.PlatformID; recording the same part again replaces it. An
// unknown reply is ErrNotFound.
func (db *DB) RecordPart(ctx context.Context, id agent.ReplyID, p agent.PostedPart) error {
	if p.N < 0 {
		return fmt.Errorf("store: record part %d of reply %d: a part number is at least 0", p.N, id)
	}
	res, err := db.exec(ctx, db.ws.partRecord, p.N, p.PlatformID, db.now(), id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("store: record part %d of reply %d: %w", p.N, id, err)
	}
	return nil
}

// RecordPreview records that platformID is the message showing the answer
// to inbound id while it is generated; recording another replaces it. An
// unknown inbound is ErrNotFound.
func (db *DB) RecordPreview(ctx context.Context, id agent.InboundID, platformID string) error {
	if platformID == "" {
		return fmt.Errorf("store: record the preview of inbound %d: no message id", id)
	}
	res, err := db.exec(ctx, db.ws.previewRecord, platformID, db.now(), id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("store: record the preview of inbound %d: %w", id, err)
	}
	return nil
}

func (db *DB) undelivered(ctx context.Context) ([]agent.Reply, error) {
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
// reply is ErrNotFound. Under a superseded fencing token (ctx's
// agent.Fence) it fails with agent.ErrFenced and the reply stays pending,
// for the new owner of its session to deliver.
func (db *DB) MarkFailed(ctx context.Context, id agent.ReplyID, reason string) error {
	res, err := db.fencedExec(ctx, db.ws.replyFailed, reason, id)
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
