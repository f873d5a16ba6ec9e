package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/talonhq/talon/agent"
)

// PendingInbound returns accepted message id if its turn has not finished
// (it is queued or running); ok is false when it is unknown or finished.
// The cluster package loads an announced message with it.
func (db *DB) PendingInbound(ctx context.Context, id agent.InboundID) (q agent.QueuedInbound, ok bool, err error) {
	row := db.r.QueryRowContext(ctx, `SELECT `+inboundCols+` FROM inbound i JOIN principals p ON p.id = i.principal_id
		WHERE i.id = ? AND i.state IN ('queued', 'running')`, int64(id))
	q, err = scanInbound(row)
	if errors.Is(err, sql.ErrNoRows) {
		return agent.QueuedInbound{}, false, nil
	}
	if err != nil {
		return agent.QueuedInbound{}, false, fmt.Errorf("store: pending inbound %d: %w", id, err)
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
	rows, err := db.r.QueryContext(ctx, `SELECT `+inboundCols+` FROM inbound i JOIN principals p ON p.id = i.principal_id
		JOIN inbound a ON a.id = ? AND a.principal_id = i.principal_id AND a.channel = i.channel AND a.thread = i.thread
		WHERE i.id <= a.id AND i.state IN ('queued', 'running') ORDER BY i.id`, int64(id))
	if err != nil {
		return nil, fmt.Errorf("store: pending up to inbound %d: %w", id, err)
	}
	defer rows.Close()
	var qs []agent.QueuedInbound
	for rows.Next() {
		q, err := scanInbound(rows)
		if err != nil {
			return nil, fmt.Errorf("store: pending up to inbound %d: %w", id, err)
		}
		qs = append(qs, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: pending up to inbound %d: %w", id, err)
	}
	return qs, nil
}
