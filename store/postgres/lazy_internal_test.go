package postgres

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

// txLog records the statements of each transaction sent on a pool: an
// explicit one (BEGIN … COMMIT), or a batch or a statement on its own.
type txLog struct {
	mu    sync.Mutex
	conns map[*pgx.Conn]*txOf // guarded by mu
	txs   [][]string          // guarded by mu
}

// txOf is what a connection sends now.
type txOf struct {
	explicit, batch bool
	sql             []string
}

func (l *txLog) add(c *pgx.Conn, sql string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	x := l.conns[c]
	if x == nil {
		x = &txOf{}
		l.conns[c] = x
	}
	x.sql = append(x.sql, sql)
	switch strings.ToUpper(strings.TrimSpace(sql)) {
	case "BEGIN":
		x.explicit = true
	case "COMMIT", "ROLLBACK":
		x.explicit = false
	}
	if !x.explicit && !x.batch {
		l.txs = append(l.txs, x.sql)
		x.sql = nil
	}
}

func (l *txLog) TraceBatchStart(ctx context.Context, c *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if x := l.conns[c]; x != nil {
		x.batch = true
	} else {
		l.conns[c] = &txOf{batch: true}
	}
	return ctx
}

func (l *txLog) TraceBatchQuery(_ context.Context, c *pgx.Conn, d pgx.TraceBatchQueryData) {
	l.add(c, d.SQL)
}

func (l *txLog) TraceBatchEnd(_ context.Context, c *pgx.Conn, _ pgx.TraceBatchEndData) {
	l.mu.Lock()
	defer l.mu.Unlock()
	x := l.conns[c]
	x.batch = false
	if !x.explicit && len(x.sql) > 0 {
		l.txs = append(l.txs, x.sql)
		x.sql = nil
	}
}

func (l *txLog) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.add(c, d.SQL)
	return ctx
}

func (l *txLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// with returns the transactions one of whose statements begins with
// prefix.
func (l *txLog) with(prefix string) [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]string
	for _, tx := range l.txs {
		if slices.ContainsFunc(tx, func(q string) bool { return strings.HasPrefix(strings.TrimSpace(q), prefix) }) {
			out = append(out, tx)
		}
	}
	return out
}

// syncURL is a test schema's URL whose commits wait for the disk, as a
// deployment's do (pgtest's do not).
func syncURL(t *testing.T) string {
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("synchronous_commit")
	u.RawQuery = q.Encode()
	return u.String()
}

// TestTurnStartCommitsLazily: a turn's start and its new session (alone
// and in a group) commit without waiting for the WAL's flush; the accept,
// the reply and a group holding any other write wait for it.
func TestTurnStartCommitsLazily(t *testing.T) {
	u := syncURL(t)
	ctx := context.Background()
	db := openDB(t, u)
	// The same pool, traced.
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	log := &txLog{conns: map[*pgx.Conn]*txOf{}}
	cfg.ConnConfig.Tracer = log
	traced, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer traced.Close()
	db.pool, db.group.pool, db.reads.pool = traced, traced, traced

	// The mechanism: what the transaction's commit will use.
	setting := func(lazy ...bool) []string {
		got := make([]string, len(lazy))
		var wg sync.WaitGroup
		queued, release := hold(&db.group)
		for i, l := range lazy {
			wg.Go(func() {
				read := func(b *pgx.Batch) {
					b.Queue(`SELECT current_setting('synchronous_commit')`).QueryRow(func(r pgx.Row) error { return r.Scan(&got[i]) })
				}
				err := db.group.do(&groupWrite{ctx: ctx, lazy: l, first: read, alone: func(ctx context.Context) error {
					b := &pgx.Batch{}
					if l {
						b.Queue(lazyCommit)
					}
					read(b)
					return db.pool.SendBatch(ctx, b).Close()
				}})
				if err != nil {
					t.Error(err)
				}
			})
		}
		for queued() < len(lazy) {
			time.Sleep(time.Millisecond)
		}
		release()
		wg.Wait()
		return got
	}
	if got := setting(true); got[0] != "off" {
		t.Errorf("a lazy write alone commits with synchronous_commit %q, want off", got[0])
	}
	if got := setting(false); got[0] != "on" {
		t.Errorf("a write alone commits with synchronous_commit %q, want on", got[0])
	}
	if got := setting(true, true); got[0] != "off" || got[1] != "off" {
		t.Errorf("a group of lazy writes commits with synchronous_commit %q, want off", got)
	}
	if got := setting(true, false); got[0] != "on" || got[1] != "on" {
		t.Errorf("a group of a lazy write and another commits with synchronous_commit %q, want on", got)
	}

	// The store's writes: a turn's start is lazy; its accept and its
	// reply are not.
	key := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}}
	for i, dk := range []string{"m1", "m2"} {
		q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: dk, Key: key, Text: "hi", ReceivedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// The first start adds the session; the second finds it.
		tid, _, _, err := db.StartTurn(ctx, q.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "hello"}, nil); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	lazyIn := func(what, prefix string, want bool) {
		t.Helper()
		bs := log.with(prefix)
		if len(bs) == 0 {
			t.Fatalf("no transaction sent %s (%s…)", what, prefix)
		}
		for _, b := range bs {
			if got := slices.Contains(b, lazyCommit); got != want {
				t.Errorf("%s sent lazy %v, want %v: %q", what, got, want, b)
			}
		}
	}
	lazyIn("the turn's start", "WITH i AS (SELECT id, principal_id, channel, thread, server FROM inbound", true)
	lazyIn("the new session", "INSERT INTO sessions", true)
	lazyIn("the accept", "INSERT INTO inbound", false)
	lazyIn("the reply", "INSERT INTO outbound", false)
}
