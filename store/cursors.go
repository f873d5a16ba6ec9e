package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The channels a channel adapter reads back after a gap, with the newest
// message seen in each (its cursor), so that messages sent while Talon was
// stopped are read back at the next start. Ids are compared as Discord
// snowflakes: a longer id is newer, then the bytes decide. The adapter
// decides which channels are recent enough to read back and prunes the
// others (ForgetChannelCursors).

// SaveChannelCursor records that lastID is the newest message seen in
// channel (of workspace) of platform at at (the clock's time when zero).
// The cursor and the time only move forward: an older id or time never
// replaces a newer one.
func (db *DB) SaveChannelCursor(ctx context.Context, platform, workspace, channel, lastID string, at time.Time) error {
	if platform == "" || channel == "" || lastID == "" {
		return errors.New("store: save channel cursor: platform, channel and message id are required")
	}
	ms := toMS(at)
	if ms == 0 {
		ms = db.now()
	}
	if _, err := db.exec(ctx, db.ws.cursorSave, platform, channel, workspace, lastID, ms); err != nil {
		return fmt.Errorf("store: save channel cursor: %w", err)
	}
	return nil
}

// ChannelCursors calls fn for platform's channels, the most recently active
// first, at most limit of them (limit <= 0 bounds nothing).
func (db *DB) ChannelCursors(ctx context.Context, platform string, limit int, fn func(workspace, channel, lastID string, at time.Time)) error {
	if limit <= 0 {
		limit = -1
	}
	rows, err := db.r.QueryContext(ctx, `SELECT workspace, channel, last_id, active_at FROM channel_cursors
		WHERE platform = ? ORDER BY active_at DESC LIMIT ?`, platform, limit)
	if err != nil {
		return fmt.Errorf("store: channel cursors: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var workspace, channel, lastID string
		var at int64
		if err := rows.Scan(&workspace, &channel, &lastID, &at); err != nil {
			return fmt.Errorf("store: channel cursors: %w", err)
		}
		fn(workspace, channel, lastID, fromMS(at))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: channel cursors: %w", err)
	}
	return nil
}

// ForgetChannelCursors forgets platform's channels active before before,
// then, beyond the keep most recently active, the others (keep <= 0 bounds
// nothing). It returns how many it forgot.
func (db *DB) ForgetChannelCursors(ctx context.Context, platform string, before time.Time, keep int) (int, error) {
	var n int64
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM channel_cursors WHERE platform = ? AND active_at < ?`, platform, toMS(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		if err != nil || keep <= 0 {
			return err
		}
		// Walks the (platform, active_at) index newest first, past the
		// rows kept.
		res, err = tx.ExecContext(ctx, `DELETE FROM channel_cursors
			WHERE (platform, channel) IN (
				SELECT platform, channel FROM channel_cursors
				WHERE platform = ? ORDER BY active_at DESC LIMIT -1 OFFSET ?)`, platform, keep)
		if err != nil {
			return err
		}
		more, err := res.RowsAffected()
		n += more
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: forget channel cursors: %w", err)
	}
	return int(n), nil
}
