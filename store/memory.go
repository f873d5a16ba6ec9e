package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Memory is one entry of a memory space: a note the model saved for a user
// (space "user:<principal>") or for a channel ("channel:<platform>:<id>").
// Entries are never edited; forgetting one deletes it.
type Memory struct {
	ID int64
	// Space is the memory it belongs to.
	Space string
	// Author is the principal ("platform:workspace:user") who saved it.
	Author string
	Text   string
	// Taint is the source of the taint of the turn that saved it, "" when
	// that turn had read no untrusted content.
	Taint     string
	CreatedAt time.Time
}

// ErrMemoryFull is wrapped by SaveMemory's error when the space holds its
// maximum number of entries.
var ErrMemoryFull = errors.New("store: memory space is full")

// Bounds of a search, whatever the caller asks.
const (
	// MaxMemoryTerms is how many words of a query are searched for; the
	// rest are ignored.
	MaxMemoryTerms = 16
	// maxMemoryTermBytes drops longer words: no one searches for them, and
	// they would only make the index's work larger.
	maxMemoryTermBytes = 64
	// maxMemoryLimit bounds how many entries one call returns.
	maxMemoryLimit = 1000
)

const memoryCols = `m.id, m.space, m.author, m.text, m.taint, m.created_at`

// MemoryTag is space as one token of the full-text index: "m" and the
// first 64 bits of its SHA-256 in 20 decimal digits, so that the tokenizer
// keeps it whole and the stemmer leaves it alone. A search matches the
// tags of its spaces inside the index, so its work grows with the entries
// of its own spaces, not with the whole table; the rows' spaces are
// checked again when they are read, so even a collision finds nothing of
// another space.
func MemoryTag(space string) string {
	h := sha256.Sum256([]byte(space))
	return fmt.Sprintf("m%020d", binary.BigEndian.Uint64(h[:8]))
}

// SaveMemory adds m to its space, unless the space already holds max
// entries (0: no bound); ID and CreatedAt are set by the store. Text must
// be valid UTF-8 (the caller bounds its size).
func (db *DB) SaveMemory(ctx context.Context, m Memory, max int) (Memory, error) {
	if m.Space == "" || m.Author == "" {
		return Memory{}, errors.New("store: save memory: space and author are required")
	}
	if !utf8.ValidString(m.Text) {
		return Memory{}, errors.New("store: save memory: text is not valid UTF-8")
	}
	m.CreatedAt = fromMS(db.now())
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if max > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM memories WHERE space = ?`, m.Space).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return fmt.Errorf("%w (%d entries)", ErrMemoryFull, n)
			}
		}
		return tx.QueryRowContext(ctx, `INSERT INTO memories (space, tag, author, text, taint, created_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			m.Space, MemoryTag(m.Space), m.Author, m.Text, m.Taint, toMS(m.CreatedAt)).Scan(&m.ID)
	})
	if err != nil {
		return Memory{}, fmt.Errorf("store: save memory: %w", err)
	}
	return m, nil
}

// ForgetMemory deletes entry id if it belongs to one of spaces, and
// reports whether it did. An entry of another space is left alone, and
// the answer is the same as for an id that does not exist.
func (db *DB) ForgetMemory(ctx context.Context, id int64, spaces ...string) (bool, error) {
	if len(spaces) == 0 {
		return false, nil
	}
	args := append([]any{id}, anys(spaces)...)
	res, err := db.execSQL(ctx, `DELETE FROM memories WHERE id = ? AND space IN (`+placeholders(len(spaces))+`)`, args...)
	if err != nil {
		return false, fmt.Errorf("store: forget memory: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// GetMemory returns entry id; an unknown id wraps ErrNotFound.
func (db *DB) GetMemory(ctx context.Context, id int64) (Memory, error) {
	ms, err := db.queryMemories(ctx, `SELECT `+memoryCols+` FROM memories m WHERE m.id = ?`, id)
	if err != nil {
		return Memory{}, fmt.Errorf("store: get memory: %w", err)
	}
	if len(ms) == 0 {
		return Memory{}, fmt.Errorf("store: memory %d: %w", id, ErrNotFound)
	}
	return ms[0], nil
}

// MemoryFilter selects entries for ListMemories: those of Space, or those
// Author saved (in any space), or both; at least one must be set.
type MemoryFilter struct {
	Space  string
	Author string
	// Before, when not 0, lists only entries with a smaller id (paging).
	Before int64
}

// ListMemories returns up to limit entries matching f, newest first.
func (db *DB) ListMemories(ctx context.Context, f MemoryFilter, limit int) ([]Memory, error) {
	var (
		where []string
		args  []any
	)
	if f.Space != "" {
		where, args = append(where, "m.space = ?"), append(args, f.Space)
	}
	if f.Author != "" {
		where, args = append(where, "m.author = ?"), append(args, f.Author)
	}
	if len(where) == 0 {
		return nil, errors.New("store: list memories: name a space or an author")
	}
	if f.Before > 0 {
		where, args = append(where, "m.id < ?"), append(args, f.Before)
	}
	args = append(args, clampLimit(limit))
	ms, err := db.queryMemories(ctx, `SELECT `+memoryCols+` FROM memories m WHERE `+strings.Join(where, " AND ")+
		` ORDER BY m.id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list memories: %w", err)
	}
	return ms, nil
}

// MemorySpace is a space with how many entries it holds.
type MemorySpace struct {
	Space   string
	Entries int
	Newest  time.Time
}

// MemorySpaces lists every space that holds entries, by name.
func (db *DB) MemorySpaces(ctx context.Context) ([]MemorySpace, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT space, COUNT(*), MAX(created_at) FROM memories GROUP BY space ORDER BY space`)
	if err != nil {
		return nil, fmt.Errorf("store: list memory spaces: %w", err)
	}
	defer rows.Close()
	var out []MemorySpace
	for rows.Next() {
		var (
			s      MemorySpace
			newest int64
		)
		if err := rows.Scan(&s.Space, &s.Entries, &newest); err != nil {
			return nil, fmt.Errorf("store: list memory spaces: %w", err)
		}
		s.Newest = fromMS(newest)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list memory spaces: %w", err)
	}
	return out, nil
}

// SearchMemories returns up to limit entries of spaces that contain every
// word of query (by its English stem, without case or diacritics), newest
// first: a newer note usually supersedes an older one. Words are runs of letters and
// digits; everything else in query (quotes, operators, column names,
// "*", "NEAR", invalid UTF-8) only separates words, so query is never
// read as FTS5 syntax. A query without words returns the newest entries.
// Only the first MaxMemoryTerms words count.
func (db *DB) SearchMemories(ctx context.Context, spaces []string, query string, limit int) ([]Memory, error) {
	if len(spaces) == 0 {
		return nil, nil
	}
	terms := MemoryTerms(query)
	if len(terms) == 0 {
		ms, err := db.queryMemories(ctx, `SELECT `+memoryCols+` FROM memories m WHERE m.space IN (`+placeholders(len(spaces))+
			`) ORDER BY m.id DESC LIMIT ?`, append(anys(spaces), clampLimit(limit))...)
		if err != nil {
			return nil, fmt.Errorf("store: search memories: %w", err)
		}
		return ms, nil
	}
	tags := make([]string, len(spaces))
	for i, s := range spaces {
		tags[i] = `"` + MemoryTag(s) + `"`
	}
	quoted := make([]string, len(terms))
	for i, t := range terms {
		quoted[i] = `"` + t + `"`
	}
	match := "tag : (" + strings.Join(tags, " OR ") + ") AND text : (" + strings.Join(quoted, " AND ") + ")"
	// The index walks the matches newest first and stops at the limit.
	// Ranking them (bm25) would cost a walk of every match of every word
	// first, for its statistics: for a common word, most of a large
	// memory.
	args := []any{match, clampLimit(limit)}
	args = append(args, anys(spaces)...)
	ms, err := db.queryMemories(ctx, `SELECT `+memoryCols+`
		FROM (SELECT rowid AS id FROM memories_fts WHERE memories_fts MATCH ? ORDER BY rowid DESC LIMIT ?) f
		JOIN memories m ON m.id = f.id
		WHERE m.space IN (`+placeholders(len(spaces))+`)
		ORDER BY m.id DESC`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: search memories: %w", err)
	}
	return ms, nil
}

// MemoryTerms returns the words SearchMemories searches query for: runs
// of letters, digits and combining marks (as the index's tokenizer reads
// them), at most MaxMemoryTerms, each at most 64 bytes (longer ones are
// dropped), without repeats.
func MemoryTerms(query string) []string {
	var (
		out  []string
		seen = map[string]bool{}
	)
	for w := range strings.FieldsFuncSeq(query, func(r rune) bool {
		return r == utf8.RuneError || !(unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r))
	}) {
		if len(out) == MaxMemoryTerms {
			break
		}
		if len(w) > maxMemoryTermBytes || unicode.IsMark([]rune(w)[0]) {
			continue
		}
		k := strings.ToLower(w)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, w)
	}
	return out
}

func (db *DB) queryMemories(ctx context.Context, query string, args ...any) ([]Memory, error) {
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Memory
	for rows.Next() {
		var (
			m  Memory
			at int64
		)
		if err := rows.Scan(&m.ID, &m.Space, &m.Author, &m.Text, &m.Taint, &at); err != nil {
			return nil, err
		}
		m.CreatedAt = fromMS(at)
		out = append(out, m)
	}
	return out, rows.Err()
}

func clampLimit(n int) int {
	if n <= 0 || n > maxMemoryLimit {
		return maxMemoryLimit
	}
	return n
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
