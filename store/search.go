package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// The conversation search (Conversations with a Search) matches a session
// when one of its messages, as stored, contains the text: LIKE '%text%',
// without case for ASCII letters, the text's % and _ taken literally. Three
// ways answer it, all with that same rule:
//
//   - Text with 3 characters in a row other than % and _ is looked up in
//     the trigram index (migration 0025). When the index gives at most
//     searchProbe matching messages, their sessions are the answer.
//   - When it gives more (a common word), the sessions are read newest
//     first and each is asked whether a message matches: with so many
//     matches the newest sessions match at once.
//   - Shorter text cannot use a trigram index: it is looked for in the
//     newest ShortSearchMessages messages only (ShortSearch says when).
//
// While the index of existing messages is still being built (SearchIndexing),
// the messages are read instead of the index. A new message is indexed
// shortly after it is stored, in the background (migration 0029); until it
// is, the search reads it itself.

const (
	// searchProbe is how many matching messages the index is read for
	// before the search reads sessions newest first instead.
	searchProbe = 500
	// ShortSearchMessages is how many of the newest messages a search for
	// text too short for the index (see ShortSearch) reads.
	ShortSearchMessages = 10_000
	// indexBatch is how many existing messages one step of the index's
	// backfill adds, in one write transaction.
	indexBatch = 2000
	// indexPause is the pause between two steps of the backfill, which
	// leaves the writer to the turns.
	indexPause = 100 * time.Millisecond
	// indexRetry is the pause after a step that failed.
	indexRetry = 5 * time.Second
	// pendingEvery is how often the indexer looks for new messages to
	// index (migration 0029), when the writer committed since it last
	// looked.
	pendingEvery = 200 * time.Millisecond
	// pendingBytes bounds the text of the new messages one write
	// transaction indexes (one message at least): the turns' writes queue
	// behind it, and indexing takes about 1 ms of the writer per 10 KB.
	pendingBytes = 64 << 10
	// pendingBatch bounds how many new messages one write transaction
	// indexes.
	pendingBatch = 500
)

// ShortSearch reports whether text has no 3 characters in a row other than
// % and _: such a search cannot use the index and reads only the newest
// ShortSearchMessages messages.
func ShortSearch(text string) bool {
	run := 0
	for _, r := range text {
		if r == '%' || r == '_' {
			run = 0
			continue
		}
		if run++; run >= 3 {
			return false
		}
	}
	return true
}

// StoredText is text as it is written inside a message's stored JSON
// (encoding/json: <, > and & as \u003c, \u003e and \u0026, quotes,
// backslashes and control characters escaped), so that a search for what a
// transcript shows finds it in the stored messages. The console searches
// with it.
func StoredText(text string) string {
	b, _ := json.Marshal(text) // a string always encodes
	return string(b[1 : len(b)-1])
}

// likeEscaped is text as a LIKE pattern with ESCAPE '\' that matches it
// anywhere, its % and _ literal.
func likeEscaped(text string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(text) + "%"
}

// SearchIndexing reports whether the index of the messages that existed
// when the index was made is still being built. Until it is, a search of 3
// characters or more reads every message, as it did before the index.
func (db *DB) SearchIndexing(ctx context.Context) (bool, error) {
	_, pending, err := db.searchBacklog(ctx, db.r)
	return pending, err
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (db *DB) searchBacklog(ctx context.Context, q queryer) (below int64, pending bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT below FROM messages_fts_backlog`).Scan(&below)
	if err == sql.ErrNoRows {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: search index backlog: %w", err)
	}
	return below, true, nil
}

// searchSessions returns the ids of the sessions a search matches, or
// ok=false when the search is to read sessions newest first instead.
func (db *DB) searchSessions(ctx context.Context, text string) (ids []int64, ok bool, err error) {
	esc := likeEscaped(text)
	var rows *sql.Rows
	if ShortSearch(text) {
		// The newest messages by id range, deduplicated below. NOT
		// INDEXED keeps SQLite from a skip-scan of the session index
		// (which its statistics favour at a million messages) and leaves
		// it the rowid range. A bare max(id) is read from the end of the
		// table; wrapped in coalesce, SQLite reads every row.
		var newest sql.NullInt64
		if err := db.r.QueryRowContext(ctx, `SELECT max(id) FROM messages`).Scan(&newest); err != nil {
			return nil, false, fmt.Errorf("store: search: %w", err)
		}
		rows, err = db.r.QueryContext(ctx, `SELECT session_id FROM messages NOT INDEXED WHERE id > ?1 AND content LIKE ?2 ESCAPE '\'`,
			newest.Int64-ShortSearchMessages, esc)
	} else {
		_, pending, berr := db.searchBacklog(ctx, db.r)
		if berr != nil || pending {
			return nil, false, berr
		}
		// The index answers the pattern with the text's % and _ as
		// wildcards (it answers no ESCAPE): a superset of the matches,
		// which the second LIKE narrows to the text.
		// Messages stored since the indexer last ran (migration 0029)
		// are read themselves, in the same statement, so in the same
		// snapshot as the index: each message is read once.
		rows, err = db.r.QueryContext(ctx, `SELECT m.session_id FROM messages_fts f JOIN messages m ON m.id = f.rowid
			WHERE f.content LIKE ?1 AND m.content LIKE ?2 ESCAPE '\'
			UNION ALL
			SELECT m.session_id FROM messages_fts_pending p JOIN messages m ON m.id = p.id
			WHERE m.content LIKE ?2 ESCAPE '\' LIMIT ?3`,
			"%"+text+"%", esc, searchProbe+1)
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: search: %w", err)
	}
	defer rows.Close()
	seen := make(map[int64]bool)
	n := 0
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, false, fmt.Errorf("store: search: %w", err)
		}
		if n++; n > searchProbe && !ShortSearch(text) {
			return nil, false, nil
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("store: search: %w", err)
	}
	return ids, true, nil
}

// sessionIDsJSON is ids as a JSON array, for json_each.
func sessionIDsJSON(ids []int64) string {
	if ids == nil {
		ids = []int64{}
	}
	b, _ := json.Marshal(ids) // []int64 always marshals
	return string(b)
}

// indexer adds the messages that existed before the search index to it,
// newest first, in the background (see migration 0025), and the messages
// stored since, shortly after they are (see migration 0029).
type indexer struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func (db *DB) startIndexer() {
	ctx, stop := context.WithCancel(context.Background())
	db.ix = &indexer{stop: stop}
	db.ix.wg.Add(2)
	go db.indexLoop(ctx)
	go db.pendingLoop(ctx)
}

func (db *DB) stopIndexer() {
	if db.ix == nil {
		return
	}
	db.ix.stop()
	db.ix.wg.Wait()
}

func (db *DB) indexLoop(ctx context.Context) {
	defer db.ix.wg.Done()
	for {
		more, err := db.indexStep(ctx)
		if err == nil && !more {
			return
		}
		pause := indexPause
		if err != nil {
			// A failure (the database closing, a busy lock) is retried:
			// until the backlog is empty, search reads the messages, so
			// nothing is missed meanwhile.
			pause = indexRetry
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// indexStep indexes the indexBatch newest messages of the backlog and
// reports whether some remain.
func (db *DB) indexStep(ctx context.Context) (more bool, err error) {
	if _, pending, err := db.searchBacklog(ctx, db.r); err != nil || !pending {
		return false, err
	}
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		below, pending, err := db.searchBacklog(ctx, tx)
		if err != nil || !pending {
			return err
		}
		var lo sql.NullInt64
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT min(id), count(*) FROM
			(SELECT id FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?)`, below, indexBatch).Scan(&lo, &n); err != nil {
			return err
		}
		if lo.Valid {
			if _, err := tx.ExecContext(ctx, `INSERT INTO messages_fts (rowid, content)
				SELECT id, content FROM messages WHERE id >= ? AND id < ?`, lo.Int64, below); err != nil {
				return err
			}
		}
		if n < indexBatch {
			_, err = tx.ExecContext(ctx, `DELETE FROM messages_fts_backlog`)
			return err
		}
		more = true
		_, err = tx.ExecContext(ctx, `UPDATE messages_fts_backlog SET below = ?`, lo.Int64)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: index messages for search: %w", err)
	}
	return more, nil
}

// pendingLoop indexes the messages stored since it last looked, every
// pendingEvery when the writer committed meanwhile: off the turns' own
// write transactions, and several turns' messages in one.
func (db *DB) pendingLoop(ctx context.Context) {
	defer db.ix.wg.Done()
	t := time.NewTicker(pendingEvery)
	defer t.Stop()
	seen := int64(-1) // the first look, one tick after Open, finds what a previous process left
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Commits counted before indexing: the indexer's own commits make
		// one more look, which finds nothing, and a turn's commit during
		// a step is never missed.
		c := db.ck.commits.Load()
		if c == seen {
			continue
		}
		seen = c
		for ctx.Err() == nil {
			more, err := db.indexPendingStep(ctx)
			if err != nil {
				// The database closing, a busy lock: looked at again
				// later. Meanwhile the search reads these messages.
				seen = -1
				t.Reset(indexRetry)
				break
			}
			if !more {
				t.Reset(pendingEvery)
				break
			}
		}
	}
}

// indexPendingStep indexes the oldest messages not indexed yet, at most
// pendingBatch of them and pendingBytes of their text (one at least), in
// one write transaction, and reports whether it indexed any.
func (db *DB) indexPendingStep(ctx context.Context) (indexed bool, err error) {
	var pending bool
	if err := db.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM messages_fts_pending)`).Scan(&pending); err != nil {
		return false, fmt.Errorf("store: index new messages for search: %w", err)
	}
	if !pending {
		return false, nil
	}
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		rows, err := tx.QueryContext(ctx, `SELECT p.id, length(CAST(m.content AS BLOB)) FROM messages_fts_pending p
			JOIN messages m ON m.id = p.id ORDER BY p.id LIMIT ?`, pendingBatch)
		if err != nil {
			return err
		}
		var hi, total int64
		for rows.Next() {
			var id, n int64
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return err
			}
			if total += n; total > pendingBytes && hi != 0 {
				break
			}
			hi = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if hi == 0 {
			// Ids whose messages are gone (the delete trigger removes
			// them; nothing else should leave one).
			_, err := tx.ExecContext(ctx, `DELETE FROM messages_fts_pending`)
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO messages_fts (rowid, content)
			SELECT m.id, m.content FROM messages_fts_pending p JOIN messages m ON m.id = p.id WHERE p.id <= ?`, hi); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM messages_fts_pending WHERE id <= ?`, hi)
		indexed = true
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: index new messages for search: %w", err)
	}
	return indexed, nil
}
