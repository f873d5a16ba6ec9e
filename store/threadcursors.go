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
// k's active session that recorded one, "" when none did (or k has no
// session yet). It only reads.
func (db *DB) ThreadCursor(ctx context.Context, k agent.SessionKey) (string, error) {
	var cursor string
	p, c := k.Principal, k.Conversation
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("store: thread cursor: %w", err)
	}
	err := db.rs.threadCursor.QueryRowContext(quick(ctx), p.Platform, p.Workspace, p.User, c.Channel, c.Thread).Scan(&cursor)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: thread cursor: %w", err)
	}
	return cursor, nil
}
