package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// activeSessionTx fills s (whose Key is set) with the active session of
// principal pid in s.Key's conversation, creating it if there is none. Of
// two replicas creating it at once, one inserts and the other finds it.
func (db *DB) activeSessionTx(ctx context.Context, tx pgx.Tx, pid int64, s *agent.Session, now int64) error {
	c := s.Key.Conversation
	get := func() error {
		var created int64
		err := tx.QueryRow(ctx, `SELECT id, summary, summary_upto, created_at, taint FROM sessions
			WHERE principal_id = $1 AND channel = $2 AND thread = $3 AND active`, pid, text(c.Channel), text(c.Thread)).
			Scan(&s.ID, &s.Summary, &s.SummaryUpTo, &created, &s.Taint)
		s.CreatedAt = fromMS(created)
		return err
	}
	err := get()
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	ok, err := db.newSessionTx(ctx, tx, pid, s, now)
	if err != nil || ok {
		return err
	}
	return get()
}

// newSessionTx adds an active session for s.Key and fills s with it. It
// returns false, writing nothing, when another session of the key is
// active (one a replica has just added).
func (db *DB) newSessionTx(ctx context.Context, tx pgx.Tx, pid int64, s *agent.Session, now int64) (bool, error) {
	c := s.Key.Conversation
	err := tx.QueryRow(ctx, `INSERT INTO sessions (principal_id, channel, thread, active, created_at) VALUES ($1, $2, $3, TRUE, $4)
		ON CONFLICT (principal_id, channel, thread) WHERE active DO NOTHING RETURNING id`,
		pid, text(c.Channel), text(c.Thread), now).Scan(&s.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.Summary, s.SummaryUpTo, s.CreatedAt, s.Taint = "", 0, fromMS(now), ""
	return true, nil
}

// ActiveSession returns the current session of k, creating it (and k's
// principal) if needed.
func (db *DB) ActiveSession(ctx context.Context, k agent.SessionKey) (agent.Session, error) {
	s := agent.Session{Key: k}
	var created int64
	p, c := k.Principal, k.Conversation
	err := db.pool.QueryRow(ctx, `SELECT s.id, s.summary, s.summary_upto, s.created_at, s.taint
		FROM sessions s JOIN principals p ON p.id = s.principal_id
		WHERE p.platform = $1 AND p.workspace = $2 AND p."user" = $3 AND s.channel = $4 AND s.thread = $5 AND s.active`,
		text(p.Platform), text(p.Workspace), text(p.User), text(c.Channel), text(c.Thread)).Scan(&s.ID, &s.Summary, &s.SummaryUpTo, &created, &s.Taint)
	if err == nil {
		s.CreatedAt = fromMS(created)
		return s, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return agent.Session{}, fmt.Errorf("postgres: active session: %w", err)
	}
	err = db.inTx(ctx, func(tx pgx.Tx) error {
		pid, err := db.principalID(ctx, tx, k.Principal)
		if err != nil {
			return err
		}
		return db.activeSessionTx(ctx, tx, pid, &s, db.now())
	})
	if err != nil {
		return agent.Session{}, fmt.Errorf("postgres: active session: %w", err)
	}
	return s, nil
}

// NewSession retires the active session of k, if any, and starts a fresh
// one, in one transaction. The retired session keeps its history.
func (db *DB) NewSession(ctx context.Context, k agent.SessionKey) (agent.Session, error) {
	s := agent.Session{Key: k}
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		pid, err := db.principalID(ctx, tx, k.Principal)
		if err != nil {
			return err
		}
		now := db.now()
		c := k.Conversation
		if _, err := tx.Exec(ctx, `UPDATE sessions SET active = FALSE, retired_at = $1
			WHERE principal_id = $2 AND channel = $3 AND thread = $4 AND active`, now, pid, text(c.Channel), text(c.Thread)); err != nil {
			return err
		}
		// A /new on another replica at the same time may have started
		// the fresh session: then both answer with it.
		return db.activeSessionTx(ctx, tx, pid, &s, now)
	})
	if err != nil {
		return agent.Session{}, fmt.Errorf("postgres: new session: %w", err)
	}
	return s, nil
}

// Recent returns the last limit messages of session s after its summary
// point, oldest first. A limit of 0 or less means no limit. An unknown
// session is store.ErrNotFound.
func (db *DB) Recent(ctx context.Context, s agent.SessionID, limit int) ([]agent.StoredMessage, error) {
	var lim *int64
	if limit > 0 {
		l := int64(limit)
		lim = &l
	}
	var msgs []agent.StoredMessage
	scan := func(rows pgx.Rows) error {
		msgs = msgs[:0]
		for rows.Next() {
			var (
				m       = agent.StoredMessage{Session: s}
				turn    *int64
				content []byte
				created int64
			)
			if err := rows.Scan(&m.ID, &turn, &content, &created); err != nil {
				return err
			}
			if err := json.Unmarshal(content, &m.Message); err != nil {
				return fmt.Errorf("message %d: %w", m.ID, err)
			}
			if turn != nil {
				m.Turn = agent.TurnID(*turn)
			}
			m.CreatedAt = fromMS(created)
			msgs = append(msgs, m)
		}
		return rows.Err()
	}
	// Read with other sessions' reads when there are (group.go).
	err := db.reads.do(&groupWrite{
		ctx:   ctx,
		first: func(b *pgx.Batch) { b.Queue(recentMessages, s, lim).Query(scan) },
		alone: func(ctx context.Context) error {
			rows, err := db.pool.Query(ctx, recentMessages, s, lim)
			if err != nil {
				return err
			}
			defer rows.Close()
			return scan(rows)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: recent: %w", err)
	}
	slices.Reverse(msgs)
	if len(msgs) == 0 {
		var n int64
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE id = $1`, s).Scan(&n); err != nil {
			return nil, fmt.Errorf("postgres: recent: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("postgres: recent: session %d: %w", s, store.ErrNotFound)
		}
		return nil, nil
	}
	return msgs, nil
}

// AppendMessages adds msgs, in order, to the history of session s within
// turn t (0 for none), in one transaction. An unknown session is
// store.ErrNotFound.
func (db *DB) AppendMessages(ctx context.Context, s agent.SessionID, t agent.TurnID, msgs ...llm.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	contents, err := encodeMessages(msgs)
	if err != nil {
		return fmt.Errorf("postgres: append messages: %w", err)
	}
	err = db.inTx(ctx, func(tx pgx.Tx) error {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE id = $1`, s).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("session %d: %w", s, store.ErrNotFound)
		}
		return appendTx(ctx, tx, s, t, msgs, contents, db.now())
	})
	if err != nil {
		return fmt.Errorf("postgres: append messages: %w", err)
	}
	return nil
}

// encodeMessages returns the JSON of each message, as stored (JSON escapes
// a NUL byte, so the text is always storable).
func encodeMessages(msgs []llm.Message) ([]string, error) {
	contents := make([]string, len(msgs))
	for i := range msgs {
		b, err := json.Marshal(&msgs[i])
		if err != nil {
			return nil, fmt.Errorf("encode message: %w", err)
		}
		contents[i] = string(b)
	}
	return contents, nil
}

func appendTx(ctx context.Context, tx pgx.Tx, s agent.SessionID, t agent.TurnID, msgs []llm.Message, contents []string, now int64) error {
	if len(msgs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	queueAppend(b, s, t, msgs, contents, now)
	return tx.SendBatch(ctx, b).Close()
}

// queueAppend queues on b the inserts that append msgs (encoded as
// contents) to the history of session s within turn t.
func queueAppend(b *pgx.Batch, s agent.SessionID, t agent.TurnID, msgs []llm.Message, contents []string, now int64) {
	for i, m := range msgs {
		b.Queue(messageInsert,
			s, nullID(t), text(string(m.Role)), contents[i], now)
	}
}

// SetSummary records a compaction summary of session s covering its
// messages up to and including id upTo. An unknown session is
// store.ErrNotFound.
func (db *DB) SetSummary(ctx context.Context, s agent.SessionID, summary string, upTo int64) error {
	err := oneRow(db.pool.Exec(ctx, `UPDATE sessions SET summary = $1, summary_upto = $2 WHERE id = $3`, text(summary), upTo, s))
	if err != nil {
		return fmt.Errorf("postgres: set summary of session %d: %w", s, err)
	}
	return nil
}

// SessionStats counts the messages and turns of session s. An unknown
// session is store.ErrNotFound.
func (db *DB) SessionStats(ctx context.Context, s agent.SessionID) (messages, turns int, err error) {
	var m, t int64
	err = db.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM messages WHERE session_id = s.id),
			(SELECT count(*) FROM turns WHERE session_id = s.id)
		FROM sessions s WHERE s.id = $1`, s).Scan(&m, &t)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: session stats of session %d: %w", s, err)
	}
	return int(m), int(t), nil
}

// recentMessages reads a session's newest messages after its summary (Recent).
const recentMessages = `SELECT m.id, m.turn_id, m.content, m.created_at
		FROM messages m JOIN sessions s ON s.id = m.session_id
		WHERE m.session_id = $1 AND m.id > s.summary_upto
		ORDER BY m.id DESC LIMIT $2`

// messageInsert appends a message to a session's history (queueAppend).
const messageInsert = `INSERT INTO messages (session_id, turn_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)`
