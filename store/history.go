package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// activeSessionTx fills s (whose Key is set) with the active session of
// principal pid in s.Key's conversation, creating it if there is none.
func (db *DB) activeSessionTx(ctx context.Context, tx *wtx, pid int64, s *agent.Session, now int64) error {
	c := s.Key.Conversation
	var created int64
	err := tx.StmtContext(ctx, db.ws.sessionActive).QueryRowContext(ctx, pid, c.Channel, c.Thread).
		Scan(&s.ID, &s.Summary, &s.SummaryUpTo, &created, &s.Taint)
	if errors.Is(err, sql.ErrNoRows) {
		return db.newSessionTx(ctx, tx, pid, s, now)
	}
	s.CreatedAt = fromMS(created)
	return err
}

// newSessionTx adds an active session for s.Key and fills s with it. The
// caller makes sure no other session of the key is active.
func (db *DB) newSessionTx(ctx context.Context, tx *wtx, pid int64, s *agent.Session, now int64) error {
	c := s.Key.Conversation
	if err := tx.StmtContext(ctx, db.ws.sessionAdd).QueryRowContext(ctx, pid, c.Channel, c.Thread, now).Scan(&s.ID); err != nil {
		return err
	}
	s.Summary, s.SummaryUpTo, s.CreatedAt, s.Taint = "", 0, fromMS(now), ""
	return nil
}

// ActiveSession returns the current session of k, creating it (and k's
// principal) if needed.
func (db *DB) ActiveSession(ctx context.Context, k agent.SessionKey) (agent.Session, error) {
	s := agent.Session{Key: k}
	// The common case, a session that exists, is answered by a reader.
	var created int64
	p, c := k.Principal, k.Conversation
	err := db.rs.activeSession.QueryRowContext(quick(ctx), p.Platform, p.Workspace, p.User, c.Channel, c.Thread).
		Scan(&s.ID, &s.Summary, &s.SummaryUpTo, &created, &s.Taint)
	if err == nil {
		s.CreatedAt = fromMS(created)
		return s, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return agent.Session{}, fmt.Errorf("store: active session: %w", err)
	}
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		pid, err := db.principalID(ctx, tx, k.Principal)
		if err != nil {
			return err
		}
		return db.activeSessionTx(ctx, tx, pid, &s, db.now())
	})
	if err != nil {
		return agent.Session{}, fmt.Errorf("store: active session: %w", err)
	}
	return s, nil
}

// NewSession retires the active session of k, if any, and starts a fresh
// one, in one transaction. The retired session keeps its history.
func (db *DB) NewSession(ctx context.Context, k agent.SessionKey) (agent.Session, error) {
	s := agent.Session{Key: k}
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		pid, err := db.principalID(ctx, tx, k.Principal)
		if err != nil {
			return err
		}
		now := db.now()
		c := k.Conversation
		if _, err := tx.StmtContext(ctx, db.ws.sessionRetire).ExecContext(ctx, now, pid, c.Channel, c.Thread); err != nil {
			return err
		}
		return db.newSessionTx(ctx, tx, pid, &s, now)
	})
	if err != nil {
		return agent.Session{}, fmt.Errorf("store: new session: %w", err)
	}
	return s, nil
}

// Recent returns the last limit messages of session s after its summary
// point (SummaryUpTo), oldest first. A limit of 0 or less means no limit.
// An unknown session is ErrNotFound.
func (db *DB) Recent(ctx context.Context, s agent.SessionID, limit int) ([]agent.StoredMessage, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: recent: %w", err)
	}
	rows, err := db.rs.recent.QueryContext(quick(ctx), s, limit)
	if err != nil {
		return nil, fmt.Errorf("store: recent: %w", err)
	}
	defer rows.Close()
	var (
		msgs    []agent.StoredMessage
		content sql.RawBytes
		turn    sql.NullInt64
		created int64
	)
	for rows.Next() {
		m := agent.StoredMessage{Session: s}
		if err := rows.Scan(&m.ID, &turn, &content, &created); err != nil {
			return nil, fmt.Errorf("store: recent: %w", err)
		}
		if err := decodeMessage(content, &m.Message); err != nil {
			return nil, fmt.Errorf("store: recent: message %d: %w", m.ID, err)
		}
		m.Turn, m.CreatedAt = agent.TurnID(turn.Int64), fromMS(created)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: recent: %w", err)
	}
	slices.Reverse(msgs)
	if len(msgs) == 0 {
		var n int
		if err := db.rs.sessionExists.QueryRowContext(quick(ctx), s).Scan(&n); err != nil {
			return nil, fmt.Errorf("store: recent: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("store: recent: session %d: %w", s, ErrNotFound)
		}
		return nil, nil
	}
	return msgs, nil
}

// AppendMessages adds msgs, in order, to the history of session s within
// turn t (0 for none), in one transaction. An unknown session is
// ErrNotFound.
func (db *DB) AppendMessages(ctx context.Context, s agent.SessionID, t agent.TurnID, msgs ...llm.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	contents, err := encodeMessages(msgs)
	if err != nil {
		return fmt.Errorf("store: append messages: %w", err)
	}
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var n int
		if err := tx.StmtContext(ctx, db.ws.sessionExists).QueryRowContext(ctx, s).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("session %d: %w", s, ErrNotFound)
		}
		return db.appendTx(ctx, tx, s, t, msgs, contents, db.now())
	})
	if err != nil {
		return fmt.Errorf("store: append messages: %w", err)
	}
	return nil
}

// encodeMessages returns the JSON of each message, as stored. It runs
// before the transaction, off the writer.
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

// appendTx appends msgs, encoded as contents, to session s within turn t.
func (db *DB) appendTx(ctx context.Context, tx *wtx, s agent.SessionID, t agent.TurnID, msgs []llm.Message, contents []string, now int64) error {
	if len(msgs) == 0 {
		return nil
	}
	add := tx.StmtContext(ctx, db.ws.messageAdd)
	for i, m := range msgs {
		if _, err := add.ExecContext(ctx, s, nullID(t), string(m.Role), contents[i], now); err != nil {
			return err
		}
	}
	return nil
}

// SetSummary records a compaction summary of session s covering its
// messages up to and including id upTo; Recent then starts after upTo. An
// unknown session is ErrNotFound.
func (db *DB) SetSummary(ctx context.Context, s agent.SessionID, summary string, upTo int64) error {
	res, err := db.exec(ctx, db.ws.summarySet, summary, upTo, s)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("store: set summary of session %d: %w", s, err)
	}
	return nil
}

// SessionStats counts the messages and turns of session s. An unknown
// session is ErrNotFound.
func (db *DB) SessionStats(ctx context.Context, s agent.SessionID) (messages, turns int, err error) {
	err = db.rs.stats.QueryRowContext(ctx, s).Scan(&messages, &turns)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return 0, 0, fmt.Errorf("store: session stats of session %d: %w", s, err)
	}
	return messages, turns, nil
}
