package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"golang.org/x/text/unicode/norm"

	"github.com/talonhq/talon/store"
)

// Memory on PostgreSQL: the same entries, spaces and search as the SQLite
// store's (store/memory.go), with a GIN index over a tsvector instead of
// FTS5. The words of an entry and of a query are found here, in Go, as
// FTS5's unicode61 tokenizer finds them (runs of letters, digits and
// marks; case and diacritics folded), and reduced to their English stems
// by PostgreSQL's snowball dictionary (see migration 0019): so a host name
// or an identifier is found by its parts on both stores, whatever the
// database's locale.

const (
	// maxMemoryTermBytes drops longer words, as store.MemoryTerms does: no
	// query searches for them.
	maxMemoryTermBytes = 64
	// maxMemoryLimit bounds how many entries one call returns.
	maxMemoryLimit = 1000
)

const memoryCols = `id, space, author, text, taint, created_at`

// memoryWords returns the distinct words of text as the index keeps them.
func memoryWords(text string) []string {
	var (
		out  []string
		seen = map[string]bool{}
	)
	for w := range strings.FieldsFuncSeq(text, func(r rune) bool {
		return r == utf8.RuneError || !(unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r))
	}) {
		if len(w) > maxMemoryTermBytes || unicode.IsMark([]rune(w)[0]) {
			continue
		}
		k := fold(w)
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, k)
	}
	return out
}

// fold lowers w's case and removes its diacritics (é is e), as FTS5's
// unicode61 tokenizer with remove_diacritics does.
func fold(w string) string {
	var b strings.Builder
	for _, r := range norm.NFD.String(strings.ToLower(w)) {
		if !unicode.Is(unicode.Mn, r) {
			b.WriteRune(r)
		}
	}
	return norm.NFC.String(b.String())
}

// SaveMemory adds m to its space, unless the space already holds max
// entries (0: no bound); ID and CreatedAt are set by the store. Text must
// be valid UTF-8 (the caller bounds its size). Two replicas saving into a
// full space at once cannot both pass the bound: the count is taken under
// a lock on the space.
func (db *DB) SaveMemory(ctx context.Context, m store.Memory, max int) (store.Memory, error) {
	if m.Space == "" || m.Author == "" {
		return store.Memory{}, errors.New("postgres: save memory: space and author are required")
	}
	if !utf8.ValidString(m.Text) {
		return store.Memory{}, errors.New("postgres: save memory: text is not valid UTF-8")
	}
	m.Space, m.Author, m.Text, m.Taint = text(m.Space), text(m.Author), text(m.Text), text(m.Taint)
	m.CreatedAt = fromMS(db.now())
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "memory:"+m.Space); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM memories WHERE space = $1`, m.Space).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return fmt.Errorf("%w (%d entries)", store.ErrMemoryFull, n)
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO memories (space, author, text, taint, created_at, words)
			VALUES ($1, $2, $3, $4, $5, talon_memory_words($6, $7)) RETURNING id`,
			m.Space, m.Author, m.Text, m.Taint, toMS(m.CreatedAt), store.MemoryTag(m.Space), memoryWords(m.Text)).Scan(&m.ID)
	})
	if err != nil {
		return store.Memory{}, fmt.Errorf("postgres: save memory: %w", err)
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
	tag, err := db.pool.Exec(ctx, `DELETE FROM memories WHERE id = $1 AND space = ANY($2)`, id, texts(spaces))
	if err != nil {
		return false, fmt.Errorf("postgres: forget memory: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// GetMemory returns entry id; an unknown id wraps store.ErrNotFound.
func (db *DB) GetMemory(ctx context.Context, id int64) (store.Memory, error) {
	ms, err := db.queryMemories(ctx, `SELECT `+memoryCols+` FROM memories WHERE id = $1`, id)
	if err != nil {
		return store.Memory{}, fmt.Errorf("postgres: get memory: %w", err)
	}
	if len(ms) == 0 {
		return store.Memory{}, fmt.Errorf("postgres: memory %d: %w", id, store.ErrNotFound)
	}
	return ms[0], nil
}

// ListMemories returns up to limit entries matching f, newest first.
func (db *DB) ListMemories(ctx context.Context, f store.MemoryFilter, limit int) ([]store.Memory, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Space != "" {
		add("space = $%d", text(f.Space))
	}
	if f.Author != "" {
		add("author = $%d", text(f.Author))
	}
	if len(where) == 0 {
		return nil, errors.New("postgres: list memories: name a space or an author")
	}
	if f.Before > 0 {
		add("id < $%d", f.Before)
	}
	args = append(args, clampLimit(limit))
	ms, err := db.queryMemories(ctx, `SELECT `+memoryCols+` FROM memories WHERE `+strings.Join(where, " AND ")+
		fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list memories: %w", err)
	}
	return ms, nil
}

// MemorySpaces lists every space that holds entries, by name.
func (db *DB) MemorySpaces(ctx context.Context) ([]store.MemorySpace, error) {
	rows, err := db.pool.Query(ctx, `SELECT space, count(*), max(created_at) FROM memories GROUP BY space ORDER BY space`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list memory spaces: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.MemorySpace, error) {
		var (
			s      store.MemorySpace
			newest int64
		)
		err := r.Scan(&s.Space, &s.Entries, &newest)
		s.Newest = fromMS(newest)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list memory spaces: %w", err)
	}
	return out, nil
}

// SearchMemories returns up to limit entries of spaces that contain every
// word of query (by its English stem, without case or diacritics), newest
// first, as the SQLite store does: the words are store.MemoryTerms(query),
// so nothing in query is ever read as syntax, and a query without words
// returns the newest entries.
func (db *DB) SearchMemories(ctx context.Context, spaces []string, query string, limit int) ([]store.Memory, error) {
	if len(spaces) == 0 {
		return nil, nil
	}
	var words []string
	for _, t := range store.MemoryTerms(query) {
		if w := fold(t); w != "" {
			words = append(words, w)
		}
	}
	var (
		ms  []store.Memory
		err error
	)
	if len(words) == 0 {
		ms, err = db.queryMemories(ctx, `SELECT `+memoryCols+` FROM memories WHERE space = ANY($1) ORDER BY id DESC LIMIT $2`,
			texts(spaces), clampLimit(limit))
	} else {
		tags := make([]string, len(spaces))
		for i, s := range spaces {
			tags[i] = store.MemoryTag(text(s))
		}
		// Planned with the values each time (never a prepared
		// statement's generic plan): the query's words are then a
		// constant whose matches the planner can estimate, choosing the
		// GIN index for rare words and the entries newest first for
		// common ones (migration 0021).
		ms, err = db.queryMemoriesMode(ctx, pgx.QueryExecModeExec, `SELECT `+memoryCols+` FROM memories
			WHERE words @@ talon_memory_query($1, $2) AND space = ANY($3) ORDER BY id DESC LIMIT $4`,
			tags, words, texts(spaces), clampLimit(limit))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: search memories: %w", err)
	}
	return ms, nil
}

func (db *DB) queryMemories(ctx context.Context, query string, args ...any) ([]store.Memory, error) {
	return db.queryMemoriesMode(ctx, pgx.QueryExecModeCacheStatement, query, args...)
}

func (db *DB) queryMemoriesMode(ctx context.Context, mode pgx.QueryExecMode, query string, args ...any) ([]store.Memory, error) {
	rows, err := db.pool.Query(ctx, query, append([]any{mode}, args...)...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Memory, error) {
		var (
			m  store.Memory
			at int64
		)
		err := r.Scan(&m.ID, &m.Space, &m.Author, &m.Text, &m.Taint, &at)
		m.CreatedAt = fromMS(at)
		return m, err
	})
}

// indexMemories fills the index of the entries Import copied.
func indexMemories(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, space, text FROM memories`)
	if err != nil {
		return err
	}
	type entry struct {
		id          int64
		space, text string
	}
	es, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (entry, error) {
		var e entry
		err := r.Scan(&e.id, &e.space, &e.text)
		return e, err
	})
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	for _, e := range es {
		b.Queue(`UPDATE memories SET words = talon_memory_words($1, $2) WHERE id = $3`, store.MemoryTag(e.space), memoryWords(e.text), e.id)
	}
	return tx.SendBatch(ctx, b).Close()
}

func clampLimit(n int) int {
	if n <= 0 || n > maxMemoryLimit {
		return maxMemoryLimit
	}
	return n
}

// texts is ss as PostgreSQL can hold them (see text).
func texts(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = text(s)
	}
	return out
}
