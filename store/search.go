package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
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
// the messages are read instead of the index.

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
		rows, err = db.r.QueryContext(ctx, `SELECT m.session_id FROM messages_fts f JOIN messages m ON m.id = f.rowid
			WHERE f.content LIKE ?1 AND m.content LIKE ?2 ESCAPE '\' LIMIT ?3`,
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
// newest first, in the background (see migration 0025).
type indexer struct {
	stop context.CancelFunc
	done chan struct{}
}

func (db *DB) startIndexer() {
	ctx, stop := context.WithCancel(context.Background())
	db.ix = &indexer{stop: stop, done: make(chan struct{})}
	go db.indexLoop(ctx)
}

func (db *DB) stopIndexer() {
	if db.ix == nil {
		return
	}
	db.ix.stop()
	<-db.ix.done
}

func (db *DB) indexLoop(ctx context.Context) {
	defer close(db.ix.done)
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
