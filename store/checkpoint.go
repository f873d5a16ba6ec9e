package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"
)

// Checkpoints copy the pages the write-ahead log holds back into the
// database file. SQLite's automatic checkpoint runs inside the commit that
// crosses its threshold, on the writer connection: the writer, which every
// turn waits for, would stop for the copy and two fsyncs. Instead a
// checkpointer goroutine runs a PASSIVE checkpoint on a connection of its
// own shortly after writes, concurrently with the writer (readers and the
// writer never wait for it). The writer keeps an automatic checkpoint at a
// larger threshold as a backstop: under writes that never pause, a passive
// checkpoint never catches up with the end of the log, and only a checkpoint
// on the writer lets the log start over instead of growing.

const (
	// checkpointEvery is how often the checkpointer looks for new commits.
	checkpointEvery = 200 * time.Millisecond
	// backstopPages is the writer's automatic checkpoint threshold, in pages
	// of log (SQLite's default is 1,000).
	backstopPages = 4000
)

// checkpointer runs passive checkpoints on its own connection. The
// connection is made by the first checkpoint, not at Open: a short-lived
// process (talon chat answering one line) ends before the first tick and
// never pays for a third connection and its reading of the schema.
type checkpointer struct {
	conn    *sql.DB      // one connection at most, made on first use
	commits atomic.Int64 // commits by the writer; counted by the writer
	stop    context.CancelFunc
	done    chan struct{}
}

func (db *DB) startCheckpointer() error {
	// sql.Open only checks the driver name: the connection is made by the
	// first checkpoint. One that cannot connect fails like any checkpoint
	// (see loop), and the writer's backstop checkpoints instead.
	conn, err := sql.Open("sqlite", checkpointDSN(db.path))
	if err != nil {
		return fmt.Errorf("store: open checkpointer: %w", err)
	}
	conn.SetMaxOpenConns(1)
	conn.SetMaxIdleConns(1)
	conn.SetConnMaxLifetime(0)
	conn.SetConnMaxIdleTime(0)
	cctx, stop := context.WithCancel(context.Background())
	db.ck = &checkpointer{conn: conn, stop: stop, done: make(chan struct{})}
	go db.ck.loop(cctx)
	return nil
}

func (db *DB) stopCheckpointer() error {
	if db.ck == nil {
		return nil
	}
	db.ck.stop()
	<-db.ck.done
	return db.ck.conn.Close()
}

// committed tells the checkpointer that the writer committed.
func (c *checkpointer) committed() {
	if c != nil {
		c.commits.Add(1)
	}
}

func (c *checkpointer) loop(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var seen int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := c.commits.Load()
		if n == seen {
			continue
		}
		seen = n
		// A failure (SQLITE_BUSY from a checkpoint in another process, say)
		// is not worth reporting: the next tick, or the writer's backstop,
		// checkpoints instead.
		_, _ = c.conn.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	}
}

// checkpointDSN is the DSN of the checkpointer's connection.
func checkpointDSN(abs string) string {
	return fileURI(abs, []string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS),
		"_pragma=synchronous(NORMAL)",
	})
}
