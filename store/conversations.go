package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// Conversation is one session as the console lists it.
type Conversation struct {
	Session                                    agent.SessionID
	Platform, Workspace, User, Channel, Thread string
	Active                                     bool
	CreatedAt, LastAt                          time.Time
	Messages                                   int64
}

// ConversationFilter narrows Conversations. Empty fields match everything.
type ConversationFilter struct {
	// Principal is "platform:workspace:user".
	Principal string
	Channel   string
	// Search is text a message of the session contains (its stored form),
	// without case for ASCII letters; % and _ are literal. Text without 3
	// characters in a row other than % and _ (ShortSearch) is looked for
	// in the newest ShortSearchMessages messages only.
	Search string
	// Before lists sessions older than this one (paging); 0 means from the
	// newest.
	Before agent.SessionID
	Limit  int
}

const conversationCols = `s.id, p.platform, p.workspace, p.user, s.channel, s.thread, s.active, s.created_at,
	coalesce((SELECT m.created_at FROM messages m WHERE m.session_id = s.id ORDER BY m.id DESC LIMIT 1), s.created_at),
	(SELECT count(*) FROM messages m WHERE m.session_id = s.id)`

func scanConversation(r rowScanner) (Conversation, error) {
	var c Conversation
	var created, last int64
	err := r.Scan(&c.Session, &c.Platform, &c.Workspace, &c.User, &c.Channel, &c.Thread, &c.Active, &created, &last, &c.Messages)
	c.CreatedAt, c.LastAt = fromMS(created), fromMS(last)
	return c, err
}

// Conversations lists sessions newest first, as f narrows them. A search
// matches a message's stored text as LIKE does (see store/search.go for
// how, and ShortSearch for the text it looks for in recent messages only).
func (db *DB) Conversations(ctx context.Context, f ConversationFilter) ([]Conversation, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var (
		rows *sql.Rows
		err  error
	)
	ids, indexed := []int64(nil), false
	if f.Search != "" {
		if ids, indexed, err = db.searchSessions(ctx, f.Search); err != nil {
			return nil, fmt.Errorf("store: conversations: %w", err)
		}
	}
	switch {
	case f.Search == "" || indexed:
		rows, err = db.r.QueryContext(ctx, `SELECT `+conversationCols+`
		FROM sessions s JOIN principals p ON p.id = s.principal_id
		WHERE (?1 = '' OR p.platform || ':' || p.workspace || ':' || p.user = ?1)
		  AND (?2 = '' OR s.channel = ?2)
		  AND (?3 = 0 OR s.id < ?3)
		  AND (?4 = '' OR s.id IN (SELECT value FROM json_each(?4)))
		ORDER BY s.id DESC LIMIT ?5`, f.Principal, f.Channel, int64(f.Before), idsArg(f.Search, ids), f.Limit)
	default:
		// Many matches (or the index not built yet): the newest sessions
		// are read, each asked whether a message matches.
		rows, err = db.r.QueryContext(ctx, `SELECT `+conversationCols+`
		FROM sessions s JOIN principals p ON p.id = s.principal_id
		WHERE (?1 = '' OR p.platform || ':' || p.workspace || ':' || p.user = ?1)
		  AND (?2 = '' OR s.channel = ?2)
		  AND (?3 = 0 OR s.id < ?3)
		  AND EXISTS (SELECT 1 FROM messages m WHERE m.session_id = s.id AND m.content LIKE ?4 ESCAPE '\')
		ORDER BY s.id DESC LIMIT ?5`, f.Principal, f.Channel, int64(f.Before), likeEscaped(f.Search), f.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: conversations: %w", err)
	}
	defer rows.Close()
	var out []Conversation
	for rows.Next() {
		c, err := scanConversation(rows)
		if err != nil {
			return nil, fmt.Errorf("store: conversations: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: conversations: %w", err)
	}
	return out, nil
}

// Approval is one approval asked in a session, and who decided it.
type Approval struct {
	Turn                                        agent.TurnID
	CallID, Tool, Description, State, DecidedBy string
	CreatedAt, DecidedAt                        time.Time
}

// Transcript returns session s, its latest limit messages (oldest first,
// as stored: redacted as the model saw them) and the approvals of its
// turns. An unknown session is ErrNotFound.
func (db *DB) Transcript(ctx context.Context, s agent.SessionID, limit int) (Conversation, []agent.StoredMessage, []Approval, error) {
	c, err := scanConversation(db.r.QueryRowContext(ctx, `SELECT `+conversationCols+`
		FROM sessions s JOIN principals p ON p.id = s.principal_id WHERE s.id = ?`, int64(s)))
	if err == sql.ErrNoRows {
		return c, nil, nil, fmt.Errorf("store: transcript of session %d: %w", s, ErrNotFound)
	}
	if err != nil {
		return c, nil, nil, fmt.Errorf("store: transcript: %w", err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT id, coalesce(turn_id, 0), content, created_at FROM
		(SELECT * FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id`, int64(s), limit)
	if err != nil {
		return c, nil, nil, fmt.Errorf("store: transcript: %w", err)
	}
	defer rows.Close()
	var msgs []agent.StoredMessage
	for rows.Next() {
		m := agent.StoredMessage{Session: s}
		var content []byte
		var at int64
		if err := rows.Scan(&m.ID, &m.Turn, &content, &at); err != nil {
			return c, nil, nil, fmt.Errorf("store: transcript: %w", err)
		}
		if err := decodeMessage(content, &m.Message); err != nil {
			m.Message = llm.Message{Role: "unreadable", Content: "(this message could not be decoded)"}
		}
		m.CreatedAt = fromMS(at)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return c, nil, nil, fmt.Errorf("store: transcript: %w", err)
	}
	arows, err := db.r.QueryContext(ctx, `SELECT a.turn_id, a.call_id, a.tool, a.description, a.state, a.decided_by, a.created_at, a.decided_at
		FROM approvals a JOIN turns t ON t.id = a.turn_id WHERE t.session_id = ? ORDER BY a.id`, int64(s))
	if err != nil {
		return c, nil, nil, fmt.Errorf("store: transcript approvals: %w", err)
	}
	defer arows.Close()
	var aps []Approval
	for arows.Next() {
		var a Approval
		var created, decided int64
		if err := arows.Scan(&a.Turn, &a.CallID, &a.Tool, &a.Description, &a.State, &a.DecidedBy, &created, &decided); err != nil {
			return c, nil, nil, fmt.Errorf("store: transcript approvals: %w", err)
		}
		a.CreatedAt, a.DecidedAt = fromMS(created), fromMS(decided)
		aps = append(aps, a)
	}
	return c, msgs, aps, arows.Err()
}

// idsArg is the JSON array of ids when there is a search, "" (every
// session) when there is none.
func idsArg(search string, ids []int64) string {
	if search == "" {
		return ""
	}
	return sessionIDsJSON(ids)
}
