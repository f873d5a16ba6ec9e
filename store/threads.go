package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/talonhq/talon/agent"
)

// The threads a channel adapter follows for a user: a follow-up there
// starts a turn without a new mention. The adapters keep them in memory and
// write them here, so that a restart does not forget them; each adapter
// decides how long a quiet thread stays followed (the since of
// FollowingThread) and how many it keeps (ForgetThreads). A thread is named
// by the session key of its conversation: platform, workspace and user of
// the principal, channel and thread.

// FollowThread records that key's user was active in key's thread at at (the
// clock's time when zero): the thread is followed for them from now on, or
// its time moves forward (never back).
func (db *DB) FollowThread(ctx context.Context, key agent.SessionKey, at time.Time) error {
	if key.Principal.Platform == "" || key.Principal.User == "" || key.Conversation.Channel == "" {
		return errors.New("store: follow thread: platform, user and channel are required")
	}
	ms := toMS(at)
	if ms == 0 {
		ms = db.now()
	}
	p, c := key.Principal, key.Conversation
	if _, err := db.exec(ctx, db.ws.threadFollow, p.Platform, p.Workspace, c.Channel, c.Thread, p.User, ms); err != nil {
		return fmt.Errorf("store: follow thread: %w", err)
	}
	return nil
}

// FollowingThread reports whether key's thread is followed for its user
// with activity at or after since: a thread quiet since before since is not,
// whether or not ForgetThreads has removed it yet.
func (db *DB) FollowingThread(ctx context.Context, key agent.SessionKey, since time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("store: following thread: %w", err)
	}
	p, c := key.Principal, key.Conversation
	var n int
	if err := db.rs.following.QueryRowContext(quick(ctx), p.Platform, p.Workspace, c.Channel, c.Thread, p.User, toMS(since)).Scan(&n); err != nil {
		return false, fmt.Errorf("store: following thread: %w", err)
	}
	return n > 0, nil
}

// ForgetThreads forgets platform's threads quiet since before, then, beyond
// the keep most recently active, the others (keep <= 0 bounds nothing). It
// returns how many it forgot.
func (db *DB) ForgetThreads(ctx context.Context, platform string, before time.Time, keep int) (int, error) {
	var n int64
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM followed_threads WHERE platform = ? AND active_at < ?`, platform, toMS(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		if err != nil || keep <= 0 {
			return err
		}
		// Walks the (platform, active_at) index newest first, past the
		// rows kept.
		res, err = tx.ExecContext(ctx, `DELETE FROM followed_threads
			WHERE (platform, workspace, channel, thread, user) IN (
				SELECT platform, workspace, channel, thread, user FROM followed_threads
				WHERE platform = ? ORDER BY active_at DESC LIMIT -1 OFFSET ?)`, platform, keep)
		if err != nil {
			return err
		}
		more, err := res.RowsAffected()
		n += more
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: forget threads: %w", err)
	}
	return int(n), nil
}
