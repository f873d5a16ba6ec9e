package memory_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/memory"
	"github.com/talonhq/talon/store"
)

// benchEntries is how many entries the benchmarks' database holds.
const benchEntries = 100_000

// vocabulary is benchWords made-up words of two to four syllables.
func vocabulary(r *rand.Rand, n int) []string {
	syl := []string{"ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "po", "gu", "ba", "fe", "ji", "qua", "zo", "ter", "lin", "mor", "pas"}
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		var b strings.Builder
		for range 2 + r.IntN(3) {
			b.WriteString(syl[r.IntN(len(syl))])
		}
		if w := b.String(); !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// corpus makes entries of 8 to 30 words drawn from words with a Zipf
// distribution, as in prose: a few words are in many entries, most in few.
type corpus struct {
	words []string
	zipf  *rand.Zipf
	r     *rand.Rand
}

func newCorpus(seed uint64) *corpus {
	r := rand.New(rand.NewPCG(seed, 1))
	words := vocabulary(r, 20_000)
	return &corpus{words: words, r: r, zipf: rand.NewZipf(r, 1.1, 2, uint64(len(words)-1))}
}

func (c *corpus) word() string { return c.words[c.zipf.Uint64()] }

func (c *corpus) entry() string {
	n := 8 + c.r.IntN(23)
	ws := make([]string, n)
	for i := range ws {
		ws[i] = c.word()
	}
	return strings.Join(ws, " ")
}

// benchDB is a database with benchEntries entries: spread over users
// (100 each) when spread, else all in the searcher's own memory; the
// searcher is alice.
func benchDB(b *testing.B, spread bool) (*store.DB, string, *corpus) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "talon.db")
	db, err := store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	c := newCorpus(1)
	texts := make([]string, benchEntries)
	for i := range texts {
		texts[i] = c.entry()
	}
	// Saved from many goroutines, so that the store's writer commits them
	// in groups.
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const workers = 32
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(texts); i += workers {
				space := memory.UserSpace(alice)
				if spread && i%100 != 0 {
					space = memory.UserSpace(agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprintf("U%04d", i%1000)})
				}
				if _, err := db.SaveMemory(context.Background(), store.Memory{Space: space, Author: "slack:T1:UX", Text: texts[i]}, 0); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	// Measured as a running gateway finds it: opened again (the bulk
	// load's WAL checkpointed by Close), after 200 searches.
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if db, err = store.Open(context.Background(), path); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	for _, q := range c.queries(200) {
		if _, err := db.SearchMemories(context.Background(), []string{memory.UserSpace(alice)}, q, 10); err != nil {
			b.Fatal(err)
		}
	}
	return db, path, c
}

// queries are n searches of one to three words, drawn as entries' words
// are: most include a common word.
func (c *corpus) queries(n int) []string {
	out := make([]string, n)
	for i := range out {
		ws := make([]string, 1+c.r.IntN(3))
		for j := range ws {
			ws[j] = c.word()
		}
		out[i] = strings.Join(ws, " ")
	}
	return out
}

// measure runs op b.N times over queries and reports its p50 and p95 in
// wall time, and its p95 in CPU time of the thread that ran it (the query
// runs on the calling goroutine, pinned to its thread): on a machine
// shared with other jobs the wall time's tail is mostly waiting for a
// core, which the CPU time leaves out.
func measure(b *testing.B, queries []string, op func(q string) error) {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	durs := make([]time.Duration, 0, b.N)
	cpus := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start, cpu := time.Now(), threadCPU(b)
		if err := op(queries[i%len(queries)]); err != nil {
			b.Fatal(err)
		}
		cpus = append(cpus, threadCPU(b)-cpu)
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durs)
	slices.Sort(cpus)
	if len(durs) > 0 {
		b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(durs[len(durs)*95/100].Microseconds())/1000, "p95-ms")
		b.ReportMetric(float64(cpus[len(cpus)*95/100].Microseconds())/1000, "p95-cpu-ms")
	}
}

// threadCPU is the CPU time of the calling thread.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkSearch measures memory_search (the tool, as the model calls
// it: arguments decoded, FTS5 query, entries framed) over 100,000 entries,
// all in the searcher's memory or spread over 1,000 users, with two
// references measured in the same run on the same database: the newest
// entries by the space's index (memory_search without words), and the
// same words found with a LIKE scan of the searcher's entries.
func BenchmarkSearch(b *testing.B) {
	for _, spread := range []bool{false, true} {
		name := "one_memory"
		if spread {
			name = "spread_1000_users"
		}
		b.Run(name, func(b *testing.B) {
			db, path, c := benchDB(b, spread)
			s := &memory.Service{Store: db, Log: zerolog.Nop()}
			qs := c.queries(1000)
			key := agent.SessionKey{Principal: alice, Conversation: inDM}
			search := func(q string) error {
				args, _ := json.Marshal(map[string]any{"query": q})
				res, err := s.Run(context.Background(), agent.ToolCall{Name: memory.ToolSearch, Args: args, Key: key})
				if err == nil && res.IsError {
					err = fmt.Errorf("search %q: %s", q, res.Content)
				}
				return err
			}
			b.Run("fts", func(b *testing.B) { measure(b, qs, search) })
			b.Run("ref_indexed_newest", func(b *testing.B) {
				measure(b, qs, func(string) error { return search("") })
			})
			b.Run("ref_like_scan", func(b *testing.B) {
				raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
				if err != nil {
					b.Fatal(err)
				}
				defer raw.Close()
				space := memory.UserSpace(alice)
				measure(b, qs, func(q string) error {
					where, args := "space = ?", []any{space}
					for _, w := range strings.Fields(q) {
						where += " AND text LIKE ?"
						args = append(args, "%"+w+"%")
					}
					rows, err := raw.Query(`SELECT id, text FROM memories WHERE `+where+` ORDER BY id DESC LIMIT 10`, args...)
					if err != nil {
						return err
					}
					defer rows.Close()
					for rows.Next() {
					}
					return rows.Err()
				})
			})
		})
	}
}
