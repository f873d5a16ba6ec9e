package console

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/talonhq/talon/store"
)

// The benchmark database: benchUsers principals, each with one session of
// benchTurns turns of two messages (benchUsers*benchTurns*2 = 1,000,000
// messages) and one model call, spread over the last year.
const (
	benchUsers = 10_000
	benchTurns = 50
)

// benchDBMade is set once benchDB has been called.
var benchDBMade atomic.Bool

var benchDB = sync.OnceValues(func() (string, error) {
	benchDBMade.Store(true)
	dir, err := os.MkdirTemp("", "talon-console-bench")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "talon.db")
	db, err := store.Open(context.Background(), path) // migrates
	if err != nil {
		return "", err
	}
	db.Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	tx, err := raw.Begin()
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	end := time.Now().UnixMilli()
	span := int64(365 * 24 * time.Hour / time.Millisecond)
	prep := func(q string) *sql.Stmt {
		st, e := tx.Prepare(q)
		if e != nil && err == nil {
			err = e
		}
		return st
	}
	pr := prep(`INSERT INTO principals (id, platform, workspace, user, created_at) VALUES (?, 'slack', ?, ?, ?)`)
	se := prep(`INSERT INTO sessions (id, principal_id, channel, created_at) VALUES (?, ?, ?, ?)`)
	in := prep(`INSERT INTO inbound (id, dedupe_key, principal_id, channel, text, state, received_at, accepted_at, turn_id) VALUES (?, ?, ?, ?, 'hello', 'done', ?, ?, ?)`)
	tu := prep(`INSERT INTO turns (id, session_id, inbound_id, state, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)`)
	me := prep(`INSERT INTO messages (session_id, turn_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)`)
	st := prep(`INSERT INTO turn_steps (turn_id, step, input_tokens, output_tokens, created_at, model) VALUES (?, 1, ?, ?, ?, ?)`)
	if err != nil {
		return "", err
	}
	turn := int64(0)
	for u := int64(1); u <= benchUsers; u++ {
		ws, ch := fmt.Sprintf("T%d", u%20), fmt.Sprintf("C%d", u%200)
		if _, err := pr.Exec(u, ws, fmt.Sprintf("U%05d", u), end-span); err != nil {
			return "", err
		}
		if _, err := se.Exec(u, u, ch, end-span); err != nil {
			return "", err
		}
		for i := range int64(benchTurns) {
			turn++
			at := end - span + (span/benchTurns)*i + u*997%(span/benchTurns)
			state := "done"
			if turn%50 == 0 {
				state = "failed"
			}
			if _, err := in.Exec(turn, fmt.Sprint("k", turn), u, ch, at, at, turn); err != nil {
				return "", err
			}
			if _, err := tu.Exec(turn, u, turn, state, at, at+800+turn%3000); err != nil {
				return "", err
			}
			text := `{"role":"user","content":"hello, what is the weather like today?"}`
			if turn%100_000 == 0 {
				// A word in 10 messages: a search with few matches.
				text = `{"role":"user","content":"where did I leave my umbrella?"}`
			}
			if _, err := me.Exec(u, turn, "user", text, at); err != nil {
				return "", err
			}
			if _, err := me.Exec(u, turn, "assistant", `{"role":"assistant","content":"It is sunny."}`, at+800); err != nil {
				return "", err
			}
			if _, err := st.Exec(turn, 500+turn%700, 50+turn%90, at+800, []string{"gpt-big", "small"}[turn%2]); err != nil {
				return "", err
			}
		}
	}
	// The daily sums the store keeps as it records steps (migration 0015).
	if _, err := tx.Exec(`INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens)
		SELECT ts.created_at / 86400000, s.principal_id, s.channel, ts.model, count(*), sum(ts.input_tokens), sum(ts.output_tokens)
		FROM turn_steps ts JOIN turns t ON t.id = ts.turn_id JOIN sessions s ON s.id = t.session_id GROUP BY 1, 2, 3, 4`); err != nil {
		return "", err
	}
	// The search index as the store's indexer leaves it: new messages
	// wait in messages_fts_pending (migration 0029) for a background
	// indexer, which would otherwise spend the benchmark indexing these
	// in every store opened on the database.
	for _, q := range []string{
		`INSERT INTO messages_fts (rowid, content) SELECT m.id, m.content FROM messages_fts_pending p JOIN messages m ON m.id = p.id`,
		`DELETE FROM messages_fts_pending`,
	} {
		if _, err := tx.Exec(q); err != nil {
			return "", err
		}
	}
	if err := tx.Commit(); err != nil {
		return "", err
	}
	if _, err := raw.Exec(`ANALYZE`); err != nil {
		return "", err
	}
	return path, nil
})

// TestMain removes the benchmark database, when a benchmark made one.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchDBMade.Load() {
		if path, err := benchDB(); err == nil {
			os.RemoveAll(filepath.Dir(path))
		}
	}
	os.Exit(code)
}

// BenchmarkPages serves each page from a database of 1,000,000 messages of
// 10,000 users (a year of use) and reports its p50 and p95 (the README's figure; the bound
// is 50 ms), and its first load. Run: go test ./console -run '^$' -bench Pages -benchtime 50x
func BenchmarkPages(b *testing.B) {
	path, err := benchDB()
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	fresh := func(b *testing.B, now func() time.Time) (Store, func()) {
		db, err := store.Open(context.Background(), path)
		if err != nil {
			b.Fatal(err)
		}
		db.Now = now
		return db, func() { db.Close() }
	}
	benchPages(b, db, func(now func() time.Time) { db.Now = now }, fresh, nil, func(b *testing.B) { setBacklog(b, path) })
}

// coldLoad is a cold page: each load is served by a console and a store
// opened for it (nothing kept in memory by either), after one load of the
// Credentials page (which reads no usage) has opened the store's
// connection. forget, when set, is called before each load too.
type coldLoad struct {
	forget func(b *testing.B)
	// precomputed: the new console runs what Precompute runs at start
	// before the load (not timed), as a replica started a while before.
	precomputed bool
}

// benchPages loads each page of a console on db, a database made as
// benchDB makes it; setClock sets db's clock; fresh opens another store
// on the same database (with the clock now), for the cold loads; forgets,
// when set, names more cold loads of the Usage page, each with what it
// forgets before each load; noIndex, when set, makes the store search
// without its index for the pages that follow it.
func benchPages(b *testing.B, db Store, setClock func(now func() time.Time), fresh func(b *testing.B, now func() time.Time) (Store, func()),
	forgets map[string]func(b *testing.B), noIndex func(b *testing.B)) {
	prices := map[string]Price{"gpt-big": {Input: 2, Output: 8}}
	cs := &Server{Store: db, Token: testToken, Prices: prices}
	h, err := cs.Handler()
	if err != nil {
		b.Fatal(err)
	}
	// The handler serving now: cs's, or a cold load's own console's (the
	// sign-in, kept in the database, holds for both).
	var cur atomic.Pointer[http.Handler]
	cur.Store(&h)
	mux := http.NewServeMux()
	mux.Handle(Prefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*cur.Load()).ServeHTTP(w, r) }))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(srv.URL + "/console/signin")
	if err != nil {
		b.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindStringSubmatch(string(page))
	if resp, err = c.PostForm(srv.URL+"/console/signin", url.Values{"csrf": {m[1]}, "token": {testToken}}); err != nil || resp.Request.URL.Path != "/console/" {
		b.Fatalf("sign-in: %v", err)
	}
	resp.Body.Close()
	get := func(b *testing.B, path string) time.Duration {
		start := time.Now()
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", path, resp.StatusCode)
		}
		return time.Since(start)
	}
	type load struct {
		name, path string
		cold       *coldLoad
	}
	cold := func(name, path string) load { return load{name, path, &coldLoad{}} }
	loads := []load{
		{"overview", "/console/", nil},
		{"usage-30d", "/console/usage?days=30", nil},
		{"usage-csv-30d", "/console/usage.csv?days=30", nil},
		{"conversations", "/console/conversations", nil},
		{"conversations-user", "/console/conversations?user=slack:T7:U05007", nil},
		// Text search: a word in every session (the newest 50 match at
		// once), one in 10 messages and one in none (both answered by
		// the index), and 2 characters (the newest 10,000 messages).
		{"conversations-search", "/console/conversations?q=weather", nil},
		{"conversations-search-few", "/console/conversations?q=umbrella", nil},
		{"conversations-search-none", "/console/conversations?q=zebra", nil},
		{"conversations-search-short", "/console/conversations?q=zq", nil},
		{"transcript", "/console/conversations/5000", nil},
		{"credentials", "/console/credentials", nil},
		{"users", "/console/users", nil},
		// The Users page sums the month so far: at the month's last
		// hour (the clock set back to the end of last month) it reads a
		// month of daily rows.
		{"users-month-end", "/console/users", nil},
		// Cold: each load by a console and a store that keep nothing
		// in memory yet (the first load of a day, of a replica, after a
		// restart), against the Credentials page loaded the same way.
		cold("credentials-cold", "/console/credentials"),
		cold("usage-30d-cold", "/console/usage?days=30"),
		cold("usage-csv-30d-cold", "/console/usage.csv?days=30"),
		cold("users-month-end-cold", "/console/users"),
		// The same after the console's pre-compute at start.
		{"usage-30d-precomputed", "/console/usage?days=30", &coldLoad{precomputed: true}},
		{"users-month-end-precomputed", "/console/users", &coldLoad{precomputed: true}},
		// (forgets: more cold loads of the Usage page.)
		{"forgets", "", nil},
		// The same searches without the index (the reference, as the page
		// searched before it): a backlog row makes the store read the
		// messages, as it does while the index of a migrated database is
		// still being built.
		{"noindex", "", nil},
		{"conversations-search-scan", "/console/conversations?q=weather", nil},
		{"conversations-search-few-scan", "/console/conversations?q=umbrella", nil},
		{"conversations-search-none-scan", "/console/conversations?q=zebra", nil},
	}
	if i := slices.IndexFunc(loads, func(l load) bool { return l.name == "forgets" }); i >= 0 {
		var more []load
		for _, name := range slices.Sorted(maps.Keys(forgets)) {
			more = append(more, load{name, "/console/usage?days=30", &coldLoad{forget: forgets[name]}},
				load{name + "-precomputed", "/console/usage?days=30", &coldLoad{forget: forgets[name], precomputed: true}})
		}
		loads = slices.Replace(loads, i, i+1, more...)
	}
	for _, p := range loads {
		if p.name == "noindex" {
			if noIndex == nil {
				break
			}
			noIndex(b)
			continue
		}
		if strings.HasPrefix(p.name, "users-month-end") {
			start := time.Now().UTC()
			end := time.Date(start.Year(), start.Month(), 1, 0, 0, 0, 0, time.UTC).Add(-time.Hour)
			cs.Now = func() time.Time { return end.Add(time.Since(start)) }
			setClock(cs.Now)
		}
		b.Run(p.name, func(b *testing.B) {
			var ds []time.Duration
			for b.Loop() {
				if p.cold == nil {
					ds = append(ds, get(b, p.path))
					continue
				}
				st, closeStore := fresh(b, cs.Now)
				cold := &Server{Store: st, Token: testToken, Prices: prices, Now: cs.Now}
				ch, err := cold.Handler()
				if err != nil {
					b.Fatal(err)
				}
				cur.Store(&ch)
				get(b, "/console/credentials")
				if p.cold.forget != nil {
					p.cold.forget(b)
				}
				if p.cold.precomputed {
					pp, err := cold.periodOf(context.Background(), defaultUsageDays)
					if err == nil {
						err = cold.precompute(context.Background(), pp)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				ds = append(ds, get(b, p.path))
				cur.Store(&h)
				closeStore()
			}
			// The first load is reported too: it fills what the Usage
			// page keeps of settled days (usageMemo).
			first := ds[0]
			slices.Sort(ds)
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(ds, 95).Microseconds())/1000, "p95-ms")
			b.ReportMetric(float64(first.Microseconds())/1000, "first-ms")
		})
		cs.Now = time.Now
		setClock(time.Now)
	}
}

// setBacklog records a backlog of unindexed messages in the database at
// path until the benchmark ends, so that the store searches without the
// index. The store builds the index only from a backlog it finds at Open.
func setBacklog(b *testing.B, path string) {
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`INSERT INTO messages_fts_backlog (below) VALUES (1)`); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		raw, err := sql.Open("sqlite", path)
		if err != nil {
			b.Error(err)
			return
		}
		defer raw.Close()
		if _, err := raw.Exec(`DELETE FROM messages_fts_backlog`); err != nil {
			b.Error(err)
		}
	})
}
