package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/talonhq/talon/agent"
)

var _ agent.ThreadCursors = (*DB)(nil)

// SetThreadCursor records cursor, how far the thread of inbound id's
// session has been read, before its turn starts. It counts once the turn
// has started (ThreadCursor); recording it again replaces it. An unknown
// id is ErrNotFound.
func (db *DB) SetThreadCursor(ctx context.Context, id agent.InboundID, cursor string) error {
	res, err := db.execSQL(ctx, `UPDATE inbound SET thread_cursor = ? WHERE id = ? AND turn_id IS NULL`, cursor, id)
	if err != nil {
		return fmt.Errorf("store: set thread cursor: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("store: set thread cursor of inbound %d: %w", id, ErrNotFound)
	}
	return nil
}

// ThreadCursor returns the thread cursor of the latest started turn of
// session s that recorded one, "" when none did.
func (db *DB) ThreadCursor(ctx context.Context, s agent.SessionID) (string, error) {
	var cursor string
	err := db.r.QueryRowContext(ctx, `SELECT i.thread_cursor FROM turns t JOIN inbound i ON i.id = t.inbound_id
		WHERE t.session_id = ? AND i.thread_cursor != '' ORDER BY t.id DESC LIMIT 1`, s).Scan(&cursor)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: thread cursor: %w", err)
	}
	return cursor, nil
}
