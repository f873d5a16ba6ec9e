package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// usageReads is the store with the starts of the periods Usage was asked
// for recorded, and the days UsersByUsage was asked for.
type usageReads struct {
	*store.DB
	mu    sync.Mutex
	froms []time.Time
	users []string
}

func (u *usageReads) UsersByUsage(ctx context.Context, month, today time.Time, match string, limit int) ([]store.UserUsage, int, error) {
	u.mu.Lock()
	u.users = append(u.users, month.Format(time.DateOnly)+" "+today.Format(time.DateOnly))
	u.mu.Unlock()
	return u.DB.UsersByUsage(ctx, month, today, match, limit)
}

// summed reports whether UsersByUsage was asked for month up to today,
// waiting up to 10 s for it.
func (u *usageReads) summed(month, today time.Time) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		u.mu.Lock()
		ok := slices.Contains(u.users, month.Format(time.DateOnly)+" "+today.Format(time.DateOnly))
		u.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

func (u *usageReads) Usage(ctx context.Context, from, to time.Time) ([]store.UsageRow, error) {
	u.mu.Lock()
	u.froms = append(u.froms, from)
	u.mu.Unlock()
	return u.DB.Usage(ctx, from, to)
}

// Precompute keeps the default period's settled days in the store at the
// start and again once the store settles the day after midnight: a console
// opened afterwards serves the Usage page and its CSV without reading the
// settled days' rows, and serves what a console reading every row serves.
func TestPrecompute(t *testing.T) {
	after, retry := precomputeAfter, precomputeRetry
	precomputeAfter, precomputeRetry = 20*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { precomputeAfter, precomputeRetry = after, retry })
	f := newFixture(t)
	now := f.clk.Now()
	for d := 5; d >= 0; d-- {
		f.clk.Set(now.AddDate(0, 0, -d))
		f.turn(t, agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprint("U", d%3)}, "C1", "gpt-big", false, time.Second, [2]int{100 + d, 10 * d})
	}
	today := now.UTC().Truncate(24 * time.Hour)
	// Just before midnight: the pre-compute's next run is due shortly.
	f.clk.Set(today.AddDate(0, 0, 1).Add(-300 * time.Millisecond))

	ctx := context.Background()
	newConsole := func(st Store) *Server {
		t.Helper()
		c := &Server{Store: st, Token: testToken, Now: f.clk.Now, Prices: f.cs.Prices, Channels: f.cs.Channels}
		if _, err := c.Handler(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	kept := func(from, settled time.Time) bool {
		t.Helper()
		gen, _, err := f.db.UsageSettled(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, name := range []string{"sums ", "csv "} {
			v, err := f.db.KeptUsagePeriod(ctx, name+f.cs.pricesKey(), gen, from, settled)
			if err != nil {
				t.Fatal(err)
			}
			if v != nil {
				n++
			}
		}
		return n == 2
	}
	waitKept := func(from, settled time.Time) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !kept(from, settled); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the period %s to %s is not kept after 10 s", from.Format(time.DateOnly), settled.Format(time.DateOnly))
			}
		}
	}
	serve := func(c *Server, path string) string {
		t.Helper()
		rec := httptest.NewRecorder()
		h := c.usage
		if strings.Contains(path, "csv") {
			h = c.usageCSV
		}
		h(rec, httptest.NewRequest(http.MethodGet, path, nil), &session{csrf: "x"})
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	// A console opened after the pre-compute: reads no settled day's rows
	// (only the days from settled on) and shows what a full read shows.
	fresh := func(when string, settled time.Time) {
		t.Helper()
		for _, path := range []string{"/console/usage", "/console/usage.csv"} {
			st := &usageReads{DB: f.db}
			got := serve(newConsole(st), path)
			if want := serve(newConsole(struct{ Store }{f.db}), path); got != want {
				t.Errorf("%s: %s of a new console differs from read (-read +new):\n%s", when, path, cmp.Diff(want, got))
			}
			for _, from := range st.froms {
				if from.Before(settled) {
					t.Errorf("%s: %s of a new console read the rows from %s (settled before %s): the pre-computed period was not used", when, path, from.Format(time.DateOnly), settled.Format(time.DateOnly))
				}
			}
			if len(st.froms) == 0 {
				t.Errorf("%s: %s read no usage at all", when, path)
			}
		}
	}

	pcStore := &usageReads{DB: f.db}
	pc := newConsole(pcStore)
	pctx, stop := context.WithCancel(ctx)
	ended := make(chan struct{})
	go func() { defer close(ended); pc.Precompute(pctx) }()
	t.Cleanup(func() { stop(); <-ended })

	// At the start: the 30 days ending today, settled before today.
	waitKept(today.AddDate(0, 0, -29), today)
	fresh("at the start", today)
	// The Users page's month: the store summed its settled days.
	month := time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC)
	if !pcStore.summed(month, today) {
		t.Error("at the start: the store was not asked for the Users page's month after 10 s")
	}

	// After midnight, within the store's grace (a minute on SQLite): today
	// is not settled yet, the period that begins a day later is kept up to
	// today; once the grace has passed, up to tomorrow.
	tomorrow := today.AddDate(0, 0, 1)
	f.clk.Set(tomorrow.Add(30 * time.Second))
	waitKept(tomorrow.AddDate(0, 0, -29), today)
	if kept(tomorrow.AddDate(0, 0, -29), tomorrow) {
		t.Error("the period was kept up to a day not settled yet")
	}
	f.clk.Set(tomorrow.Add(2 * time.Minute))
	waitKept(tomorrow.AddDate(0, 0, -29), tomorrow)
	fresh("after midnight", tomorrow)
	if !pcStore.summed(month, tomorrow) {
		t.Error("after midnight: the store was not asked for the Users page's month after 10 s")
	}

	stop()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("Precompute did not return after its context ended")
	}
}
