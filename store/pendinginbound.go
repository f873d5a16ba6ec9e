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
