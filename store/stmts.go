package store

import (
	"context"
	"database/sql"
	"errors"
)

// The statements are prepared once at Open: on the writer's single
// connection for writeStmts, and lazily per connection of the read pool for
// readStmts. Methods use the writer's inside transactions via tx.StmtContext,
// which reuses the connection's prepared statement.

// inboundCols are the columns scanInbound reads, from inbound i joined with
// principals p, and the stream preview recorded for it.
const inboundCols = `i.id, i.state, i.dedupe_key, p.platform, p.workspace, p.user,
	i.channel, i.thread, i.text, i.reply_to, i.received_at, i.files, i.server,
	COALESCE((SELECT v.platform_id FROM stream_previews v WHERE v.inbound_id = i.id), '')`

// replyCols are the columns scanReply reads, from outbound o joined with
// principals p.
const replyCols = `o.id, o.inbound_id, o.turn_id, p.platform, p.workspace, p.user,
	o.channel, o.thread, o.reply_to, o.kind, o.text, o.created_at`

type writeStmts struct {
	principalGet   *sql.Stmt
	principalAdd   *sql.Stmt
	inboundAdd     *sql.Stmt
	inboundForTurn *sql.Stmt
	inboundRun     *sql.Stmt
	inboundFinish  *sql.Stmt
	inboundState   *sql.Stmt
	sessionActive  *sql.Stmt
	sessionByID    *sql.Stmt
	sessionAdd     *sql.Stmt
	sessionRetire  *sql.Stmt
	sessionExists  *sql.Stmt
	summarySet     *sql.Stmt
	turnAdd        *sql.Stmt
	turnTaint      *sql.Stmt
	sessionTaint   *sql.Stmt
	turnFinish     *sql.Stmt
	messageAdd     *sql.Stmt
	stepPut        *sql.Stmt
	stepOld        *sql.Stmt
	usageAdd       *sql.Stmt
	sessionServer  *sql.Stmt
	toolStart      *sql.Stmt
	toolFinish     *sql.Stmt
	replyAdd       *sql.Stmt
	replyDelivered *sql.Stmt
	replyFailed    *sql.Stmt
	replyState     *sql.Stmt
	partRecord     *sql.Stmt
	previewRecord  *sql.Stmt
	threadFollow   *sql.Stmt
	cursorSave     *sql.Stmt
	savepoint      *sql.Stmt
	release        *sql.Stmt
	rollbackTo     *sql.Stmt

	all []*sql.Stmt
}

func (s *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	return prepareAll(ctx, db, &s.all, []stmtDef{
		{&s.principalGet, `SELECT id FROM principals WHERE platform = ? AND workspace = ? AND user = ?`},
		{&s.principalAdd, `INSERT INTO principals (platform, workspace, user, created_at) VALUES (?, ?, ?, ?) RETURNING id`},
		{&s.inboundAdd, `INSERT INTO inbound (dedupe_key, principal_id, channel, thread, text, reply_to, received_at, accepted_at, files, server)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`},
		{&s.inboundForTurn, `SELECT i.state, i.principal_id, p.platform, p.workspace, p.user, i.channel, i.thread,
			t.id, t.session_id, i.server
			FROM inbound i JOIN principals p ON p.id = i.principal_id LEFT JOIN turns t ON t.inbound_id = i.id
			WHERE i.id = ?`},
		{&s.inboundRun, `UPDATE inbound SET state = 'running', turn_id = ? WHERE id = ?`},
		{&s.inboundFinish, `UPDATE inbound SET state = ? WHERE id = ? AND state IN ('queued', 'running')
			RETURNING principal_id, channel, thread, reply_to`},
		{&s.inboundState, `SELECT state FROM inbound WHERE id = ?`},
		{&s.sessionActive, `SELECT id, summary, summary_upto, created_at, taint FROM sessions
			WHERE principal_id = ? AND channel = ? AND thread = ? AND active = 1`},
		{&s.sessionByID, `SELECT summary, summary_upto, created_at, taint FROM sessions WHERE id = ?`},
		{&s.turnTaint, `UPDATE turns SET taint = ?1 WHERE id = ?2 AND taint = ''`},
		{&s.sessionTaint, `UPDATE sessions SET taint = ?1
			WHERE id = (SELECT session_id FROM turns WHERE id = ?2) AND taint = ''`},
		{&s.sessionAdd, `INSERT INTO sessions (principal_id, channel, thread, active, created_at) VALUES (?, ?, ?, 1, ?) RETURNING id`},
		{&s.sessionRetire, `UPDATE sessions SET active = 0, retired_at = ?
			WHERE principal_id = ? AND channel = ? AND thread = ? AND active = 1`},
		{&s.sessionExists, `SELECT count(*) FROM sessions WHERE id = ?`},
		{&s.summarySet, `UPDATE sessions SET summary = ?, summary_upto = ? WHERE id = ?`},
		{&s.turnAdd, `INSERT INTO turns (session_id, inbound_id, state, started_at) VALUES (?, ?, 'running', ?) RETURNING id`},
		{&s.turnFinish, `UPDATE turns SET state = ?, finished_at = ? WHERE id = ? AND inbound_id = ?`},
		{&s.messageAdd, `INSERT INTO messages (session_id, turn_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)`},
		{&s.stepOld, `SELECT input_tokens, output_tokens, created_at, model FROM turn_steps WHERE turn_id = ? AND step = ?`},
		{&s.usageAdd, `INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens, server)
			SELECT ?1 / 86400000, s.principal_id, s.channel, ?2, ?3, ?4, ?5, s.server
			FROM turns t JOIN sessions s ON s.id = t.session_id WHERE t.id = ?6
			ON CONFLICT (day, principal_id, channel, model) DO UPDATE SET calls = calls + excluded.calls,
				input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
				server = CASE WHEN excluded.server != '' THEN excluded.server ELSE usage_daily.server END`},
		{&s.sessionServer, `UPDATE sessions SET server = ? WHERE id = ? AND server = ''`},
		{&s.stepPut, `INSERT INTO turn_steps (turn_id, step, input_tokens, output_tokens, stop_reason, created_at, model)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (turn_id, step) DO UPDATE SET input_tokens = excluded.input_tokens,
				output_tokens = excluded.output_tokens, stop_reason = excluded.stop_reason, created_at = excluded.created_at,
				model = excluded.model`},
		{&s.toolStart, `INSERT INTO tool_calls (turn_id, step, call_id, name, arguments, started_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (turn_id, call_id) DO UPDATE SET step = excluded.step, name = excluded.name,
				arguments = excluded.arguments, started_at = excluded.started_at,
				state = 'started', result = '', is_error = 0, finished_at = NULL`},
		{&s.toolFinish, `UPDATE tool_calls SET state = 'finished', result = ?, is_error = ?, finished_at = ?
			WHERE turn_id = ? AND call_id = ?`},
		{&s.replyAdd, `INSERT INTO outbound (inbound_id, turn_id, principal_id, channel, thread, reply_to, kind, text, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`},
		{&s.replyDelivered, `UPDATE outbound SET state = 'delivered', platform_id = ?, delivered_at = ?, attempts = attempts + 1
			WHERE id = ? AND state <> 'delivered'`},
		{&s.replyFailed, `UPDATE outbound SET state = 'failed', reason = ?, attempts = attempts + 1
			WHERE id = ? AND state = 'pending'`},
		{&s.replyState, `SELECT state FROM outbound WHERE id = ?`},
		{&s.partRecord, `INSERT INTO outbound_parts (outbound_id, n, platform_id, posted_at)
			SELECT id, ?, ?, ? FROM outbound WHERE id = ?
			ON CONFLICT (outbound_id, n) DO UPDATE SET platform_id = excluded.platform_id, posted_at = excluded.posted_at`},
		{&s.previewRecord, `INSERT INTO stream_previews (inbound_id, platform_id, created_at)
			SELECT id, ?, ? FROM inbound WHERE id = ?
			ON CONFLICT (inbound_id) DO UPDATE SET platform_id = excluded.platform_id`},
		{&s.threadFollow, `INSERT INTO followed_threads (platform, workspace, channel, thread, user, active_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (platform, workspace, channel, thread, user) DO UPDATE
				SET active_at = max(active_at, excluded.active_at)`},
		// Snowflakes compare by length, then bytes.
		{&s.cursorSave, `INSERT INTO channel_cursors (platform, channel, workspace, last_id, active_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (platform, channel) DO UPDATE SET
				last_id = CASE WHEN length(excluded.last_id) > length(last_id)
						OR (length(excluded.last_id) = length(last_id) AND excluded.last_id > last_id)
					THEN excluded.last_id ELSE last_id END,
				workspace = excluded.workspace,
				active_at = max(active_at, excluded.active_at)`},
		{&s.savepoint, `SAVEPOINT op`},
		{&s.release, `RELEASE op`},
		{&s.rollbackTo, `ROLLBACK TO op`},
	})
}

func (s *writeStmts) close() error { return closeAll(s.all) }

type readStmts struct {
	inboundSeen   *sql.Stmt
	pending       *sql.Stmt
	activeSession *sql.Stmt
	recent        *sql.Stmt
	sessionExists *sql.Stmt
	stats         *sql.Stmt
	undelivered   *sql.Stmt
	pendingParts  *sql.Stmt
	pendingViews  *sql.Stmt
	toolResults   *sql.Stmt
	following     *sql.Stmt
	threadCursor  *sql.Stmt
	turnFiles     *sql.Stmt

	all []*sql.Stmt
}

func (s *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	return prepareAll(ctx, db, &s.all, []stmtDef{
		{&s.inboundSeen, `SELECT ` + inboundCols + ` FROM inbound i JOIN principals p ON p.id = i.principal_id
			WHERE i.dedupe_key = ?`},
		{&s.pending, `SELECT ` + inboundCols + ` FROM inbound i JOIN principals p ON p.id = i.principal_id
			WHERE i.state IN ('queued', 'running') ORDER BY i.id`},
		{&s.activeSession, `SELECT s.id, s.summary, s.summary_upto, s.created_at, s.taint
			FROM sessions s JOIN principals p ON p.id = s.principal_id
			WHERE p.platform = ? AND p.workspace = ? AND p.user = ?
				AND s.channel = ? AND s.thread = ? AND s.active = 1`},
		// Newest first: Recent reverses the rows, which spares SQLite
		// sorting them (content and all) a second time.
		{&s.recent, `SELECT m.id, m.turn_id, m.content, m.created_at
			FROM messages m JOIN sessions s ON s.id = m.session_id
			WHERE m.session_id = ? AND m.id > s.summary_upto
			ORDER BY m.id DESC LIMIT ?`},
		{&s.sessionExists, `SELECT count(*) FROM sessions WHERE id = ?`},
		{&s.stats, `SELECT (SELECT count(*) FROM messages WHERE session_id = s.id),
				(SELECT count(*) FROM turns WHERE session_id = s.id)
			FROM sessions s WHERE s.id = ?`},
		{&s.undelivered, `SELECT ` + replyCols + ` FROM outbound o JOIN principals p ON p.id = o.principal_id
			WHERE o.state = 'pending' ORDER BY o.id`},
		{&s.pendingParts, `SELECT p.outbound_id, p.n, p.platform_id FROM outbound o
			JOIN outbound_parts p ON p.outbound_id = o.id
			WHERE o.state = 'pending' ORDER BY p.outbound_id, p.n`},
		{&s.pendingViews, `SELECT o.id, v.platform_id FROM outbound o
			JOIN stream_previews v ON v.inbound_id = o.inbound_id
			WHERE o.state = 'pending'`},
		// Served by the index of UNIQUE (turn_id, call_id).
		{&s.toolResults, `SELECT call_id, result, is_error FROM tool_calls
			WHERE turn_id = ? AND state = 'finished'`},
		{&s.following, `SELECT count(*) FROM followed_threads
			WHERE platform = ? AND workspace = ? AND channel = ? AND thread = ? AND user = ? AND active_at >= ?`},
		// The active session by sessions_active_key, its turns newest first
		// by turns_session (whose entries end with the rowid), each inbound
		// by its key.
		{&s.threadCursor, `SELECT i.thread_cursor FROM turns t JOIN inbound i ON i.id = t.inbound_id
			WHERE t.session_id = (SELECT s.id FROM sessions s JOIN principals p ON p.id = s.principal_id
				WHERE p.platform = ? AND p.workspace = ? AND p.user = ? AND s.channel = ? AND s.thread = ? AND s.active = 1)
				AND i.thread_cursor != ''
			ORDER BY t.id DESC LIMIT 1`},
		// Read for every reply, most of which have no file: prepared,
		// parsing and planning it took more than the read
		// (BenchmarkTurnFiles).
		{&s.turnFiles, turnFilesQuery},
	})
}

func (s *readStmts) close() error { return closeAll(s.all) }

// quick is the context for a short indexed read on the read pool: one that
// is never cancelled. A cancellable context costs a goroutine per statement
// in database/sql (closing the rows) and another in the driver (interrupting
// the statement); a read that takes microseconds is not worth either.
// Callers check ctx before the read.
func quick(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

type stmtDef struct {
	dst   **sql.Stmt
	query string
}

func prepareAll(ctx context.Context, db *sql.DB, all *[]*sql.Stmt, defs []stmtDef) error {
	for _, d := range defs {
		st, err := db.PrepareContext(ctx, d.query)
		if err != nil {
			return err
		}
		*d.dst = st
		*all = append(*all, st)
	}
	return nil
}

func closeAll(stmts []*sql.Stmt) error {
	var errs []error
	for _, st := range stmts {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}
