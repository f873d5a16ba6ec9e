package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// Undelivered lists the replies still pending delivery, oldest first, with
// the parts recorded as posted (Reply.Posted, in the order of N): a preview
// recorded for the reply's inbound is its part 0 unless part 0 itself is
// recorded.
func (db *DB) Undelivered(ctx context.Context) ([]agent.Reply, error) {
	rows, err := db.pool.Query(ctx, `SELECT o.id, o.inbound_id, o.turn_id, p.platform, p.workspace, p."user",
			o.channel, o.thread, o.reply_to, o.kind, o.text, o.created_at
		FROM outbound o JOIN principals p ON p.id = o.principal_id
		WHERE o.state = 'pending' ORDER BY o.id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: undelivered: %w", err)
	}
	var replies []agent.Reply
	for rows.Next() {
		var (
			r             agent.Reply
			inbound, turn *int64
			kind          string
			created       int64
		)
		if err := rows.Scan(&r.ID, &inbound, &turn,
			&r.Key.Principal.Platform, &r.Key.Principal.Workspace, &r.Key.Principal.User,
			&r.Key.Conversation.Channel, &r.Key.Conversation.Thread,
			&r.ReplyTo, &kind, &r.Text, &created); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: undelivered: %w", err)
		}
		if inbound != nil {
			r.Inbound = agent.InboundID(*inbound)
		}
		if turn != nil {
			r.Turn = agent.TurnID(*turn)
		}
		r.Kind, r.CreatedAt = agent.ReplyKind(kind), fromMS(created)
		replies = append(replies, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: undelivered: %w", err)
	}
	if len(replies) == 0 {
		return nil, nil
	}
	byID := make(map[agent.ReplyID]*agent.Reply, len(replies))
	for i := range replies {
		byID[replies[i].ID] = &replies[i]
	}
	parts, err := db.pool.Query(ctx, `SELECT p.outbound_id, p.n, p.platform_id FROM outbound o
		JOIN outbound_parts p ON p.outbound_id = o.id
		WHERE o.state = 'pending' ORDER BY p.outbound_id, p.n`)
	if err != nil {
		return nil, fmt.Errorf("postgres: undelivered: parts: %w", err)
	}
	for parts.Next() {
		var (
			id agent.ReplyID
			n  int64
			p  agent.PostedPart
		)
		if err := parts.Scan(&id, &n, &p.PlatformID); err != nil {
			parts.Close()
			return nil, fmt.Errorf("postgres: undelivered: parts: %w", err)
		}
		p.N = int(n)
		if r := byID[id]; r != nil {
			r.Posted = append(r.Posted, p)
		}
	}
	parts.Close()
	if err := parts.Err(); err != nil {
		return nil, fmt.Errorf("postgres: undelivered: parts: %w", err)
	}
	views, err := db.pool.Query(ctx, `SELECT o.id, v.platform_id FROM outbound o
		JOIN stream_previews v ON v.inbound_id = o.inbound_id WHERE o.state = 'pending'`)
	if err != nil {
		return nil, fmt.Errorf("postgres: undelivered: previews: %w", err)
	}
	defer views.Close()
	for views.Next() {
		var (
			id  agent.ReplyID
			pid string
		)
		if err := views.Scan(&id, &pid); err != nil {
			return nil, fmt.Errorf("postgres: undelivered: previews: %w", err)
		}
		if r := byID[id]; r != nil {
			if _, ok := r.PostedPart(0); !ok {
				r.Posted = append([]agent.PostedPart{{N: 0, PlatformID: pid, Preview: true}}, r.Posted...)
			}
		}
	}
	if err := views.Err(); err != nil {
		return nil, fmt.Errorf("postgres: undelivered: previews: %w", err)
	}
	return replies, nil
}

// RecordPart records that part p of reply id was posted; recording the same
// part again replaces it. An unknown reply is store.ErrNotFound.
func (db *DB) RecordPart(ctx context.Context, id agent.ReplyID, p agent.PostedPart) error {
	if p.N < 0 {
		return fmt.Errorf("postgres: record part %d of reply %d: a part number is at least 0", p.N, id)
	}
	err := oneRow(db.pool.Exec(ctx, `INSERT INTO outbound_parts (outbound_id, n, platform_id, posted_at)
		SELECT id, $1, $2, $3 FROM outbound WHERE id = $4
		ON CONFLICT (outbound_id, n) DO UPDATE SET platform_id = excluded.platform_id, posted_at = excluded.posted_at`,
		p.N, text(p.PlatformID), db.now(), id))
	if err != nil {
		return fmt.Errorf("postgres: record part %d of reply %d: %w", p.N, id, err)
	}
	return nil
}

// RecordPreview records that platformID is the message showing the answer
// to inbound id while it is generated; recording another replaces it. An
// unknown inbound is store.ErrNotFound.
func (db *DB) RecordPreview(ctx context.Context, id agent.InboundID, platformID string) error {
	if platformID == "" {
		return fmt.Errorf("postgres: record the preview of inbound %d: no message id", id)
	}
	err := oneRow(db.pool.Exec(ctx, `INSERT INTO stream_previews (inbound_id, platform_id, created_at)
		SELECT id, $1, $2 FROM inbound WHERE id = $3
		ON CONFLICT (inbound_id) DO UPDATE SET platform_id = excluded.platform_id`, text(platformID), db.now(), id))
	if err != nil {
		return fmt.Errorf("postgres: record the preview of inbound %d: %w", id, err)
	}
	return nil
}

// MarkDelivered records that reply id was delivered as the platform's
// message platformID. Marking a delivered reply again changes nothing and
// is not an error; a reply marked failed may still be marked delivered. An
// unknown reply is store.ErrNotFound.
//
// The mark is sent with other sessions' writes when there are (group.go).
func (db *DB) MarkDelivered(ctx context.Context, id agent.ReplyID, platformID string) error {
	args := []any{text(platformID), db.now(), id}
	var tag pgconn.CommandTag
	err := db.group.do(&groupWrite{
		ctx: ctx,
		first: func(b *pgx.Batch) {
			b.Queue(markDelivered, args...).Exec(func(t pgconn.CommandTag) error {
				tag = t
				return nil
			})
		},
		alone: func(ctx context.Context) (err error) {
			tag, err = db.pool.Exec(ctx, markDelivered, args...)
			return err
		},
	})
	if err == nil {
		err = db.changedOrExists(ctx, tag, id)
	}
	if err != nil {
		return fmt.Errorf("postgres: mark reply %d delivered: %w", id, err)
	}
	return nil
}

// MarkFailed records that reply id will not be delivered, and why. A reply
// already delivered or failed is left as it is, without error. An unknown
// reply is store.ErrNotFound. Under a superseded fencing token (ctx's
// agent.Fence) it fails with agent.ErrFenced and the reply stays pending,
// for the new owner of its session to deliver.
func (db *DB) MarkFailed(ctx context.Context, id agent.ReplyID, reason string) error {
	// With a fence, its check and the update go as one batch: one round
	// trip, one implicit transaction.
	var tag pgconn.CommandTag
	b := &pgx.Batch{}
	queueFence(ctx, b)
	b.Queue(`UPDATE outbound SET state = 'failed', reason = $1, attempts = attempts + 1
		WHERE id = $2 AND state = 'pending'`, text(reason), id).
		Exec(func(t pgconn.CommandTag) error { tag = t; return nil })
	err := fenced(db.pool.SendBatch(ctx, b).Close())
	if err == nil {
		err = db.changedOrExists(ctx, tag, id)
	}
	if err != nil {
		return fmt.Errorf("postgres: mark reply %d failed: %w", id, err)
	}
	return nil
}

// changedOrExists is nil when the update changed a row or reply id exists
// (and so was already in the state asked for), store.ErrNotFound
// otherwise. Replies are never deleted.
func (db *DB) changedOrExists(ctx context.Context, tag pgconn.CommandTag, id agent.ReplyID) error {
	if tag.RowsAffected() > 0 {
		return nil
	}
	var state string
	err := db.pool.QueryRow(ctx, `SELECT state FROM outbound WHERE id = $1`, id).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// markDelivered marks a reply delivered (MarkDelivered).
const markDelivered = `UPDATE outbound SET state = 'delivered', platform_id = $1, delivered_at = $2, attempts = attempts + 1
		WHERE id = $3 AND state <> 'delivered'`
