package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// What the operator's console reads and writes (console.Store), as the
// SQLite store does: usage, turns, tool calls, conversations and
// transcripts, the vault's audit log, the console's own audit log, its
// sessions and the Slack sign-ins in progress. Times are UTC; text is
// ordered byte-wise (COLLATE "C"), as SQLite orders it.

func dayOf(t time.Time) int64 { return t.UnixMilli() / dayMS }

// likeEscape makes s a LIKE pattern matching itself anywhere: %s%.
func likeEscape(s string) string {
	return "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(text(s)) + "%"
}

// Usage returns the usage of the model calls made on the UTC days from
// from's to the one before to's, by day (newest first), principal (in the
// order they were first seen), channel and model. Settled days come from
// usage_days (settledDays), the others from usage_daily.
func (db *DB) Usage(ctx context.Context, from, to time.Time) ([]store.UsageRow, error) {
	first, end := dayOf(from), dayOf(to)
	settled := min(end, dayOf(db.Now().Add(-usageGrace)))
	var out []store.UsageRow
	if end > max(first, settled) {
		rows, err := db.pool.Query(ctx, `
			SELECT u.day, p.platform, p.workspace, p."user", u.channel, u.model, u.server, u.calls, u.input_tokens, u.output_tokens
			FROM usage_daily u JOIN principals p ON p.id = u.principal_id
			WHERE u.day >= $1 AND u.day < $2 AND u.calls > 0
			ORDER BY u.day DESC, u.principal_id, u.channel COLLATE "C", u.model COLLATE "C"`, max(first, settled), end)
		if err != nil {
			return nil, fmt.Errorf("postgres: usage: %w", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.UsageRow, error) {
			var u store.UsageRow
			var day int64
			err := r.Scan(&day, &u.Platform, &u.Workspace, &u.User, &u.Channel, &u.Model, &u.Server, &u.Calls, &u.InputTokens, &u.OutputTokens)
			u.Day = fromMS(day * dayMS)
			return u, err
		})
		if err != nil {
			return nil, fmt.Errorf("postgres: usage: %w", err)
		}
	}
	if first < settled {
		days, err := db.settledDays(ctx, first, settled)
		if err != nil {
			return nil, fmt.Errorf("postgres: usage: %w", err)
		}
		n := 0
		for _, d := range days {
			n += len(d.rows)
		}
		out = slices.Grow(out, n)
		for d := settled - 1; d >= first; d-- {
			out = append(out, days[d].rows...)
		}
	}
	return out, nil
}

// usageGrace is how long after a UTC day ends its usage is taken as
// settled: long enough for a step recorded just before midnight to have
// committed, on any replica whose clock is within it of this one's.
const usageGrace = 10 * time.Minute

// UsageSettled returns a generation and the time before which usage is
// settled: what Usage and TokensPerDay return for the days before before,
// read after UsageSettled returned gen, holds as long as UsageSettled
// returns gen again, on any replica. (It moves on when a resumed turn takes
// back a step recorded on an earlier day: migration 0025.)
func (db *DB) UsageSettled(ctx context.Context) (gen uint64, before time.Time, err error) {
	var n int64
	if err := db.pool.QueryRow(ctx, `SELECT n FROM usage_generation`).Scan(&n); err != nil {
		return 0, time.Time{}, fmt.Errorf("postgres: usage settled: %w", err)
	}
	return uint64(n), fromMS(dayOf(db.Now().Add(-usageGrace)) * dayMS), nil
}

// TokensPerDay sums the tokens of the model calls made since from's UTC
// day, per day and model, oldest first.
func (db *DB) TokensPerDay(ctx context.Context, from time.Time) ([]store.TokenBucket, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT day, model, sum(input_tokens)::BIGINT, sum(output_tokens)::BIGINT
		FROM usage_daily WHERE day >= $1 AND calls > 0
		GROUP BY day, model ORDER BY day, model COLLATE "C"`, dayOf(from))
	if err != nil {
		return nil, fmt.Errorf("postgres: tokens per day: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.TokenBucket, error) {
		var t store.TokenBucket
		var day int64
		err := r.Scan(&day, &t.Model, &t.InputTokens, &t.OutputTokens)
		t.Start = fromMS(day * dayMS)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: tokens per day: %w", err)
	}
	return out, nil
}

// TurnsPer counts the turns started since from per bucket, oldest first.
func (db *DB) TurnsPer(ctx context.Context, from time.Time, bucket time.Duration) ([]store.TurnBucket, error) {
	b := bucket.Milliseconds()
	if b <= 0 {
		return nil, fmt.Errorf("postgres: turns per bucket: bucket %v is not positive", bucket)
	}
	rows, err := db.pool.Query(ctx, `
		SELECT started_at / $2 AS b, count(*), count(*) FILTER (WHERE state = 'failed')
		FROM turns WHERE started_at >= $1
		GROUP BY b ORDER BY b`, toMS(from), b)
	if err != nil {
		return nil, fmt.Errorf("postgres: turns per bucket: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.TurnBucket, error) {
		var t store.TurnBucket
		var n int64
		err := r.Scan(&n, &t.Turns, &t.Failed)
		t.Start = fromMS(n * b)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: turns per bucket: %w", err)
	}
	return out, nil
}

// TurnDurations returns how long each turn started since from took, for
// the turns that have finished, shortest first.
func (db *DB) TurnDurations(ctx context.Context, from time.Time) ([]time.Duration, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT finished_at - started_at AS d FROM turns
		WHERE started_at >= $1 AND finished_at IS NOT NULL ORDER BY d`, toMS(from))
	if err != nil {
		return nil, fmt.Errorf("postgres: turn durations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (time.Duration, error) {
		var ms int64
		err := r.Scan(&ms)
		return time.Duration(ms) * time.Millisecond, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: turn durations: %w", err)
	}
	return out, nil
}

// AddConsoleAction appends a to the console's audit log (At defaults to now).
func (db *DB) AddConsoleAction(ctx context.Context, a store.ConsoleAction) error {
	at := toMS(a.At)
	if at == 0 {
		at = db.now()
	}
	if _, err := db.pool.Exec(ctx, `INSERT INTO console_audit (at, actor, action, target, remote) VALUES ($1, $2, $3, $4, $5)`,
		at, text(a.Actor), text(a.Action), text(a.Target), text(a.Remote)); err != nil {
		return fmt.Errorf("postgres: console audit: %w", err)
	}
	return nil
}

// ConsoleActions returns the latest limit entries of the console's audit
// log, newest first.
func (db *DB) ConsoleActions(ctx context.Context, limit int) ([]store.ConsoleAction, error) {
	rows, err := db.pool.Query(ctx, `SELECT at, actor, action, target, remote FROM console_audit ORDER BY id DESC LIMIT $1`, max(limit, 0))
	if err != nil {
		return nil, fmt.Errorf("postgres: console audit: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.ConsoleAction, error) {
		var a store.ConsoleAction
		var at int64
		err := r.Scan(&at, &a.Actor, &a.Action, &a.Target, &a.Remote)
		a.At = fromMS(at)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: console audit: %w", err)
	}
	return out, nil
}

// consoleLock is the key of the transaction lock under which sessions and
// sign-ins are counted against their bound, so that replicas signing in
// together do not both pass it ("talon_cs" in ASCII).
const consoleLock = 0x74616c6f6e5f6373

// AddConsoleSession stores a new sign-in after deleting the expired ones,
// unless max sessions are open (then store.ErrTooManySessions).
func (db *DB) AddConsoleSession(ctx context.Context, s store.ConsoleSession, max int) error {
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(consoleLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM console_sessions WHERE expires_at <= $1`, db.now()); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM console_sessions`).Scan(&n); err != nil {
			return err
		}
		if n >= max {
			return store.ErrTooManySessions
		}
		_, err := tx.Exec(ctx, `INSERT INTO console_sessions (id_hash, who, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
			s.Hash[:], text(s.Who), toMS(s.Created), toMS(s.Expires))
		return err
	})
	if err != nil && !errors.Is(err, store.ErrTooManySessions) {
		return fmt.Errorf("postgres: console session: %w", err)
	}
	return err
}

// ConsoleSession returns the sign-in whose cookie value hashes to hash if
// it has not expired by now; otherwise store.ErrNotFound.
func (db *DB) ConsoleSession(ctx context.Context, hash [32]byte, now time.Time) (store.ConsoleSession, error) {
	s := store.ConsoleSession{Hash: hash}
	var created, expires int64
	err := db.pool.QueryRow(ctx, `SELECT who, created_at, expires_at FROM console_sessions WHERE id_hash = $1 AND expires_at > $2`,
		hash[:], toMS(now)).Scan(&s.Who, &created, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ConsoleSession{}, store.ErrNotFound
	}
	if err != nil {
		return store.ConsoleSession{}, fmt.Errorf("postgres: console session: %w", err)
	}
	s.Created, s.Expires = fromMS(created), fromMS(expires)
	return s, nil
}

// DeleteConsoleSession ends a sign-in (sign-out); ending one that is not
// there is not an error.
func (db *DB) DeleteConsoleSession(ctx context.Context, hash [32]byte) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, hash[:]); err != nil {
		return fmt.Errorf("postgres: console session: %w", err)
	}
	return nil
}

// AddOIDCState stores a started sign-in (the SHA-256 of its state, its
// nonce) until expires, after deleting the expired ones, unless max are
// pending (then store.ErrTooManySessions).
func (db *DB) AddOIDCState(ctx context.Context, hash [32]byte, nonce string, expires time.Time, max int) error {
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(consoleLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM console_oidc_states WHERE expires_at <= $1`, db.now()); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM console_oidc_states`).Scan(&n); err != nil {
			return err
		}
		if n >= max {
			return store.ErrTooManySessions
		}
		_, err := tx.Exec(ctx, `INSERT INTO console_oidc_states (state_hash, nonce, expires_at) VALUES ($1, $2, $3)`,
			hash[:], text(nonce), toMS(expires))
		return err
	})
	if err != nil && !errors.Is(err, store.ErrTooManySessions) {
		return fmt.Errorf("postgres: oidc state: %w", err)
	}
	return err
}

// TakeOIDCState removes the started sign-in whose state hashes to hash and
// returns its nonce if it had not expired by now; otherwise
// store.ErrNotFound. A state is taken once, on whichever replica.
func (db *DB) TakeOIDCState(ctx context.Context, hash [32]byte, now time.Time) (string, error) {
	var nonce string
	var expires int64
	err := db.pool.QueryRow(ctx, `DELETE FROM console_oidc_states WHERE state_hash = $1 RETURNING nonce, expires_at`, hash[:]).Scan(&nonce, &expires)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && expires <= toMS(now) {
		return "", store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("postgres: oidc state: %w", err)
	}
	return nonce, nil
}

const conversationCols = `s.id, p.platform, p.workspace, p."user", s.channel, s.thread, s.active, s.created_at,
	coalesce((SELECT m.created_at FROM messages m WHERE m.session_id = s.id ORDER BY m.id DESC LIMIT 1), s.created_at),
	(SELECT count(*) FROM messages m WHERE m.session_id = s.id)`

func scanConversation(r pgx.Row) (store.Conversation, error) {
	var c store.Conversation
	var created, last int64
	err := r.Scan(&c.Session, &c.Platform, &c.Workspace, &c.User, &c.Channel, &c.Thread, &c.Active, &created, &last, &c.Messages)
	c.CreatedAt, c.LastAt = fromMS(created), fromMS(last)
	return c, err
}

// Conversations lists sessions newest first, as f narrows them. The search
// matches text anywhere in a stored message, ignoring case (ILIKE), served
// by the trigram index of migration 0022 where pg_trgm is installed; text
// too short for it (store.ShortSearch) is looked for in the newest
// store.ShortSearchMessages messages only, as on SQLite.
func (db *DB) Conversations(ctx context.Context, f store.ConversationFilter) ([]store.Conversation, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Principal != "" {
		// "platform:workspace:user" as the principals' unique index can
		// answer it: each way the text splits at two colons.
		splits := principalSplits(text(f.Principal))
		if len(splits) == 0 || len(splits) > maxPrincipalSplits {
			where = append(where, `p.platform || ':' || p.workspace || ':' || p."user" = `+arg(text(f.Principal)))
		} else {
			var rows []string
			for _, sp := range splits {
				rows = append(rows, `(`+arg(sp[0])+`, `+arg(sp[1])+`, `+arg(sp[2])+`)`)
			}
			where = append(where, `(p.platform, p.workspace, p."user") IN (`+strings.Join(rows, `, `)+`)`)
		}
	}
	if f.Channel != "" {
		where = append(where, `s.channel = `+arg(text(f.Channel)))
	}
	if f.Before != 0 {
		where = append(where, `s.id < `+arg(int64(f.Before)))
	}
	var with string
	switch {
	case f.Search != "" && store.ShortSearch(f.Search):
		// Too short for the trigram index: the newest messages only,
		// as on SQLite (store.ShortSearchMessages), read by id range
		// first. (m.content || '') keeps the planner off the trigram
		// index, which cannot narrow such text and would be read whole.
		with = `WITH hits AS MATERIALIZED (SELECT m.session_id FROM messages m WHERE m.id > (SELECT coalesce(max(id), 0) FROM messages) - ` +
			arg(int64(store.ShortSearchMessages)) + ` AND (m.content || '') ILIKE ` + arg(likeEscape(f.Search)) + ` ESCAPE '\') `
		where = append(where, `s.id IN (SELECT session_id FROM hits)`)
	case f.Search != "":
		where = append(where, `s.id IN (SELECT m.session_id FROM messages m WHERE m.content ILIKE `+arg(likeEscape(f.Search))+` ESCAPE '\')`)
	}
	q := with + `SELECT ` + conversationCols + ` FROM sessions s JOIN principals p ON p.id = s.principal_id`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY s.id DESC LIMIT ` + arg(f.Limit)
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: conversations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Conversation, error) { return scanConversation(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: conversations: %w", err)
	}
	return out, nil
}

// maxPrincipalSplits bounds the ways a principal filter is split; text
// with more colons is compared whole, without the index.
const maxPrincipalSplits = 16

// principalSplits lists the ways s splits into platform, workspace and
// user at two of its colons (one way unless a part holds a colon).
func principalSplits(s string) [][3]string {
	var out [][3]string
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		for j := i + 1; j < len(s); j++ {
			if s[j] == ':' {
				out = append(out, [3]string{s[:i], s[i+1 : j], s[j+1:]})
			}
		}
	}
	return out
}

// Transcript returns session s, its latest limit messages (oldest first,
// as stored: redacted as the model saw them) and the approvals of its
// turns. An unknown session is store.ErrNotFound.
func (db *DB) Transcript(ctx context.Context, s agent.SessionID, limit int) (store.Conversation, []agent.StoredMessage, []store.Approval, error) {
	c, err := scanConversation(db.pool.QueryRow(ctx, `SELECT `+conversationCols+`
		FROM sessions s JOIN principals p ON p.id = s.principal_id WHERE s.id = $1`, int64(s)))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, nil, nil, fmt.Errorf("postgres: transcript of session %d: %w", s, store.ErrNotFound)
	}
	if err != nil {
		return c, nil, nil, fmt.Errorf("postgres: transcript: %w", err)
	}
	rows, err := db.pool.Query(ctx, `SELECT id, coalesce(turn_id, 0), content, created_at FROM
		(SELECT * FROM messages WHERE session_id = $1 ORDER BY id DESC LIMIT $2) m ORDER BY id`, int64(s), max(limit, 0))
	if err != nil {
		return c, nil, nil, fmt.Errorf("postgres: transcript: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (agent.StoredMessage, error) {
		m := agent.StoredMessage{Session: s}
		var content []byte
		var at int64
		if err := r.Scan(&m.ID, &m.Turn, &content, &at); err != nil {
			return m, err
		}
		if err := json.Unmarshal(content, &m.Message); err != nil {
			m.Message = llm.Message{Role: "unreadable", Content: "(this message could not be decoded)"}
		}
		m.CreatedAt = fromMS(at)
		return m, nil
	})
	if err != nil {
		return c, nil, nil, fmt.Errorf("postgres: transcript: %w", err)
	}
	arows, err := db.pool.Query(ctx, `SELECT a.turn_id, a.call_id, a.tool, a.description, a.state, a.decided_by, a.created_at, a.decided_at
		FROM approvals a JOIN turns t ON t.id = a.turn_id WHERE t.session_id = $1 ORDER BY a.id`, int64(s))
	if err != nil {
		return c, nil, nil, fmt.Errorf("postgres: transcript approvals: %w", err)
	}
	aps, err := pgx.CollectRows(arows, func(r pgx.CollectableRow) (store.Approval, error) {
		var a store.Approval
		var created, decided int64
		err := r.Scan(&a.Turn, &a.CallID, &a.Tool, &a.Description, &a.State, &a.DecidedBy, &created, &decided)
		a.CreatedAt, a.DecidedAt = fromMS(created), fromMS(decided)
		return a, err
	})
	if err != nil {
		return c, nil, nil, fmt.Errorf("postgres: transcript approvals: %w", err)
	}
	return c, msgs, aps, nil
}

// UsersByUsage returns the principals who used the model since month's UTC
// day, most tokens first, at most limit, narrowed to those whose
// "platform:workspace:user" contains match (when not ""; ASCII letters in
// either case, as on SQLite); and how many matched in all. The sums of the
// settled days are kept under the usage generation (UsageSettled), so a
// load sums only the days since.
func (db *DB) UsersByUsage(ctx context.Context, month, today time.Time, match string, limit int) ([]store.UserUsage, int, error) {
	gen, before, err := db.UsageSettled(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: users by usage: %w", err)
	}
	first, todayDay, settled := dayOf(month), dayOf(today), dayOf(before)
	from := first
	totals := map[int64]store.UserTotal{}
	if first < settled && settled <= todayDay {
		old, ok := db.users.Get(gen, first, settled)
		if !ok {
			if old, err = db.userTotals(ctx, first, settled, todayDay); err != nil {
				return nil, 0, fmt.Errorf("postgres: users by usage: %w", err)
			}
			db.users.Put(gen, first, settled, old)
		}
		maps.Copy(totals, old)
		from = settled
	}
	recent, err := db.userTotals(ctx, from, -1, todayDay)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: users by usage: %w", err)
	}
	store.AddUserTotals(totals, recent)
	out, total := store.RankUsers(totals, match, limit)
	return out, total, nil
}

// userTotals sums each principal's model calls of the days from from to
// the one before to (to < 0: no end), today's from todayDay on. Settled
// days (to set) come from usage_days (settledDays).
func (db *DB) userTotals(ctx context.Context, from, to, todayDay int64) (map[int64]store.UserTotal, error) {
	out := map[int64]store.UserTotal{}
	if to >= 0 {
		values, err := db.settledDayValues(ctx, from, to)
		if err != nil {
			return nil, err
		}
		for day, v := range values {
			if err := store.AddUsageDayValue(out, day, todayDay, v); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	rows, err := db.pool.Query(ctx, `
		SELECT u.principal_id, p.platform, p.workspace, p."user", sum(u.input_tokens + u.output_tokens)::BIGINT,
			sum(CASE WHEN u.day >= $2 THEN u.input_tokens + u.output_tokens ELSE 0 END)::BIGINT, max(u.day)
		FROM usage_daily u JOIN principals p ON p.id = u.principal_id
		WHERE u.day >= $1 AND u.calls > 0
		GROUP BY u.principal_id, p.platform, p.workspace, p."user"`, from, todayDay)
	if err != nil {
		return nil, err
	}
	var t store.UserTotal
	_, err = pgx.ForEachRow(rows, []any{&t.ID, &t.Platform, &t.Workspace, &t.User, &t.Month, &t.Today, &t.LastDay}, func() error {
		out[t.ID] = t
		return nil
	})
	return out, err
}

// ToolStats counts the calls of each tool started since since, and its
// calls that ended in an error.
func (db *DB) ToolStats(ctx context.Context, since time.Time) ([]store.ToolStat, error) {
	rows, err := db.pool.Query(ctx, `SELECT name, count(*), count(*) FILTER (WHERE is_error), max(started_at) FROM tool_calls
		WHERE started_at >= $1 GROUP BY name ORDER BY name COLLATE "C"`, toMS(since))
	if err != nil {
		return nil, fmt.Errorf("postgres: tool stats: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.ToolStat, error) {
		var s store.ToolStat
		var last int64
		err := r.Scan(&s.Name, &s.Calls, &s.Errors, &last)
		s.Last = fromMS(last)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: tool stats: %w", err)
	}
	return out, nil
}

// VaultAudit returns up to limit events of the vault's audit log that f
// selects, newest first.
func (db *DB) VaultAudit(ctx context.Context, f store.VaultAuditFilter, limit int) ([]vault.AuditEvent, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	for _, c := range []struct{ col, v string }{{`"user"`, f.User}, {"name", f.Name}, {"host", f.Host}, {"tool", f.Tool}} {
		if c.v != "" {
			where = append(where, c.col+" = "+arg(text(c.v)))
		}
	}
	switch f.Result {
	case "":
	case "allowed", "refused":
		where = append(where, "allowed = "+arg(f.Result == "allowed"))
	default:
		return nil, fmt.Errorf("postgres: vault audit: result %q: want allowed or refused", f.Result)
	}
	if !f.From.IsZero() {
		where = append(where, "at >= "+arg(toMS(f.From)))
	}
	if !f.To.IsZero() {
		where = append(where, "at < "+arg(toMS(f.To)))
	}
	q := `SELECT at, "user", name, host, tool, allowed, reason FROM vault_audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT " + arg(max(limit, 0))
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: vault audit: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (vault.AuditEvent, error) {
		var a vault.AuditEvent
		var at int64
		var reason string
		err := r.Scan(&at, &a.User, &a.Name, &a.Host, &a.Tool, &a.Allowed, &reason)
		a.Time, a.Reason = fromMS(at), vault.Reason(reason)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: vault audit: %w", err)
	}
	return out, nil
}
