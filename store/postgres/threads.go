package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// FollowThread records that key's user was active in key's thread at at (the
// clock's time when zero): the thread is followed for them from now on, or
// its time moves forward (never back).
func (db *DB) FollowThread(ctx context.Context, key agent.SessionKey, at time.Time) error {
	if key.Principal.Platform == "" || key.Principal.User == "" || key.Conversation.Channel == "" {
		return errors.New("postgres: follow thread: platform, user and channel are required")
	}
	ms := toMS(at)
	if ms == 0 {
		ms = db.now()
	}
	p, c := key.Principal, key.Conversation
	if _, err := db.pool.Exec(ctx, `INSERT INTO followed_threads (platform, workspace, channel, thread, "user", active_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (platform, workspace, channel, thread, "user") DO UPDATE
			SET active_at = GREATEST(followed_threads.active_at, excluded.active_at)`,
		p.Platform, p.Workspace, text(c.Channel), text(c.Thread), p.User, ms); err != nil {
		return fmt.Errorf("postgres: follow thread: %w", err)
	}
	return nil
}

// FollowingThread reports whether key's thread is followed for its user
// with activity at or after since.
func (db *DB) FollowingThread(ctx context.Context, key agent.SessionKey, since time.Time) (bool, error) {
	p, c := key.Principal, key.Conversation
	var ok bool
	if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM followed_threads
		WHERE platform = $1 AND workspace = $2 AND channel = $3 AND thread = $4 AND "user" = $5 AND active_at >= $6)`,
		p.Platform, p.Workspace, text(c.Channel), text(c.Thread), p.User, toMS(since)).Scan(&ok); err != nil {
		return false, fmt.Errorf("postgres: following thread: %w", err)
	}
	return ok, nil
}

// ForgetThreads forgets platform's threads quiet since before, then, beyond
// the keep most recently active, the others (keep <= 0 bounds nothing). It
// returns how many it forgot.
func (db *DB) ForgetThreads(ctx context.Context, platform string, before time.Time, keep int) (int, error) {
	n, err := db.forget(ctx, `DELETE FROM followed_threads WHERE platform = $1 AND active_at < $2`,
		`DELETE FROM followed_threads WHERE (platform, workspace, channel, thread, "user") IN (
			SELECT platform, workspace, channel, thread, "user" FROM followed_threads
			WHERE platform = $1 ORDER BY active_at DESC OFFSET $2)`, platform, before, keep)
	if err != nil {
		return 0, fmt.Errorf("postgres: forget threads: %w", err)
	}
	return n, nil
}

func (db *DB) forget(ctx context.Context, quiet, beyond, platform string, before time.Time, keep int) (int, error) {
	var n int64
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, quiet, platform, toMS(before))
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if keep <= 0 {
			return nil
		}
		tag, err = tx.Exec(ctx, beyond, platform, keep)
		n += tag.RowsAffected()
		return err
	})
	return int(n), err
}

// SaveChannelCursor records that lastID is the newest message seen in
// channel (of workspace) of platform at at (the clock's time when zero).
// The cursor and the time only move forward; ids compare as Discord
// snowflakes (by length, then bytes).
func (db *DB) SaveChannelCursor(ctx context.Context, platform, workspace, channel, lastID string, at time.Time) error {
	if platform == "" || channel == "" || lastID == "" {
		return errors.New("postgres: save channel cursor: platform, channel and message id are required")
	}
	ms := toMS(at)
	if ms == 0 {
		ms = db.now()
	}
	if _, err := db.pool.Exec(ctx, `INSERT INTO channel_cursors (platform, channel, workspace, last_id, active_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (platform, channel) DO UPDATE SET
			last_id = CASE WHEN length(excluded.last_id) > length(channel_cursors.last_id)
					OR (length(excluded.last_id) = length(channel_cursors.last_id)
						AND excluded.last_id COLLATE "C" > channel_cursors.last_id COLLATE "C")
				THEN excluded.last_id ELSE channel_cursors.last_id END,
			workspace = excluded.workspace,
			active_at = GREATEST(channel_cursors.active_at, excluded.active_at)`,
		platform, text(channel), text(workspace), text(lastID), ms); err != nil {
		return fmt.Errorf("postgres: save channel cursor: %w", err)
	}
	return nil
}

// ChannelCursors calls fn for platform's channels, the most recently active
// first, at most limit of them (limit <= 0 bounds nothing).
func (db *DB) ChannelCursors(ctx context.Context, platform string, limit int, fn func(workspace, channel, lastID string, at time.Time)) error {
	var lim *int64
	if limit > 0 {
		l := int64(limit)
		lim = &l
	}
	rows, err := db.pool.Query(ctx, `SELECT workspace, channel, last_id, active_at FROM channel_cursors
		WHERE platform = $1 ORDER BY active_at DESC LIMIT $2`, platform, lim)
	if err != nil {
		return fmt.Errorf("postgres: channel cursors: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var workspace, channel, lastID string
		var at int64
		if err := rows.Scan(&workspace, &channel, &lastID, &at); err != nil {
			return fmt.Errorf("postgres: channel cursors: %w", err)
		}
		fn(workspace, channel, lastID, fromMS(at))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: channel cursors: %w", err)
	}
	return nil
}

// ForgetChannelCursors forgets platform's channels active before before,
// then, beyond the keep most recently active, the others (keep <= 0 bounds
// nothing). It returns how many it forgot.
func (db *DB) ForgetChannelCursors(ctx context.Context, platform string, before time.Time, keep int) (int, error) {
	n, err := db.forget(ctx, `DELETE FROM channel_cursors WHERE platform = $1 AND active_at < $2`,
		`DELETE FROM channel_cursors WHERE (platform, channel) IN (
			SELECT platform, channel FROM channel_cursors WHERE platform = $1 ORDER BY active_at DESC OFFSET $2)`,
		platform, before, keep)
	if err != nil {
		return 0, fmt.Errorf("postgres: forget channel cursors: %w", err)
	}
	return n, nil
}

// SetThreadCursor records cursor, how far the thread of inbound id's
// session has been read, before its turn starts; recording it again
// replaces it. An unknown id, or one whose turn started, is
// store.ErrNotFound.
func (db *DB) SetThreadCursor(ctx context.Context, id agent.InboundID, cursor string) error {
	if err := oneRow(db.pool.Exec(ctx, `UPDATE inbound SET thread_cursor = $1 WHERE id = $2 AND turn_id IS NULL`, text(cursor), id)); err != nil {
		return fmt.Errorf("postgres: set thread cursor of inbound %d: %w", id, err)
	}
	return nil
}

// ThreadCursor returns the thread cursor of the latest started turn of k's
// active session that recorded one, "" when none did.
func (db *DB) ThreadCursor(ctx context.Context, k agent.SessionKey) (string, error) {
	var cursor string
	p, c := k.Principal, k.Conversation
	err := db.pool.QueryRow(ctx, `SELECT i.thread_cursor FROM turns t JOIN inbound i ON i.id = t.inbound_id
		WHERE t.session_id = (SELECT s.id FROM sessions s JOIN principals p ON p.id = s.principal_id
			WHERE p.platform = $1 AND p.workspace = $2 AND p."user" = $3 AND s.channel = $4 AND s.thread = $5 AND s.active)
			AND i.thread_cursor <> ''
		ORDER BY t.id DESC LIMIT 1`, text(p.Platform), text(p.Workspace), text(p.User), text(c.Channel), text(c.Thread)).Scan(&cursor)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgres: thread cursor: %w", err)
	}
	return cursor, nil
}

// RecordTurnFile records f, a file a tool of turn t returned for the user;
// recording the file of the same call again replaces it. An unknown turn
// is an error.
func (db *DB) RecordTurnFile(ctx context.Context, t agent.TurnID, f agent.TurnFile) error {
	if f.Name == "" || f.Hash == "" || f.Size < 0 {
		return fmt.Errorf("postgres: record a file of turn %d: a file needs a name, a hash and a size", t)
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO turn_files (turn_id, call_id, name, media_type, hash, size, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (turn_id, call_id) DO UPDATE SET name = excluded.name, media_type = excluded.media_type,
			hash = excluded.hash, size = excluded.size, created_at = excluded.created_at`,
		t, text(f.CallID), text(f.Name), text(f.MediaType), text(f.Hash), f.Size, db.now())
	if err != nil {
		return fmt.Errorf("postgres: record a file of turn %d: %w", t, err)
	}
	return nil
}

// TurnFiles lists the files recorded for turn t, in the order their tool
// calls started (then the order they were recorded).
func (db *DB) TurnFiles(ctx context.Context, t agent.TurnID) ([]agent.TurnFile, error) {
	rows, err := db.pool.Query(ctx, `SELECT f.call_id, f.name, f.media_type, f.hash, f.size FROM turn_files f
		LEFT JOIN tool_calls c ON c.turn_id = f.turn_id AND c.call_id = f.call_id
		WHERE f.turn_id = $1 ORDER BY c.step NULLS FIRST, c.id NULLS FIRST, f.created_at, f.call_id COLLATE "C"`, t)
	if err != nil {
		return nil, fmt.Errorf("postgres: files of turn %d: %w", t, err)
	}
	defer rows.Close()
	var out []agent.TurnFile
	for rows.Next() {
		var f agent.TurnFile
		if err := rows.Scan(&f.CallID, &f.Name, &f.MediaType, &f.Hash, &f.Size); err != nil {
			return nil, fmt.Errorf("postgres: files of turn %d: %w", t, err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: files of turn %d: %w", t, err)
	}
	return out, nil
}

const dayMS = int64(24 * time.Hour / time.Millisecond)

// PrincipalTokens sums the tokens (input and output) of p's model calls
// made since since's UTC day began.
func (db *DB) PrincipalTokens(ctx context.Context, p agent.Principal, since time.Time) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0)::bigint
		FROM principals p JOIN usage_daily u ON u.principal_id = p.id
		WHERE p.platform = $1 AND p.workspace = $2 AND p."user" = $3 AND u.day >= $4`,
		text(p.Platform), text(p.Workspace), text(p.User), since.UnixMilli()/dayMS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: principal tokens: %w", err)
	}
	return n, nil
}

// WorkspaceTokens sums the tokens of the model calls of every principal of
// one workspace since since's UTC day began.
func (db *DB) WorkspaceTokens(ctx context.Context, platform, workspace string, since time.Time) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0)::bigint
		FROM principals p JOIN usage_daily u ON u.principal_id = p.id
		WHERE p.platform = $1 AND p.workspace = $2 AND u.day >= $3`,
		platform, workspace, since.UnixMilli()/dayMS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: workspace tokens: %w", err)
	}
	return n, nil
}

// ServerTokens sums the tokens of the model calls of the sessions run in
// a Discord server since since's UTC day began (see migration 0023).
func (db *DB) ServerTokens(ctx context.Context, server string, since time.Time) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint
		FROM usage_daily WHERE server = $1 AND server <> '' AND day >= $2`,
		text(server), since.UnixMilli()/dayMS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: server tokens: %w", err)
	}
	return n, nil
}

var _ agent.UsageLog = (*DB)(nil)

// RecordModelUse adds one call of model for session s (a model call that
// is not a turn's step, such as a summary) to the daily usage sums.
func (db *DB) RecordModelUse(ctx context.Context, s agent.SessionID, model string, u llm.Usage) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens, server)
		SELECT $1::bigint / 86400000, s.principal_id, s.channel, $2, 1, $3, $4, s.server FROM sessions s WHERE s.id = $5
		ON CONFLICT (day, principal_id, channel, model) DO UPDATE SET calls = usage_daily.calls + 1,
			input_tokens = usage_daily.input_tokens + excluded.input_tokens,
			output_tokens = usage_daily.output_tokens + excluded.output_tokens,
			server = CASE WHEN excluded.server <> '' THEN excluded.server ELSE usage_daily.server END`,
		db.now(), text(model), u.InputTokens, u.OutputTokens, s)
	if err != nil {
		return fmt.Errorf("postgres: record model use: %w", err)
	}
	return nil
}
