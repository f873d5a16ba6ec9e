package console

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// The Usage page, its CSV and the Overview's tokens per day keep what they
// derive from settled days (the store's UsageSettled), and show exactly
// what a console that reads every row each time shows: on a second load, after a new day's usage, and
// after a resumed turn moved a settled day's step to today.
func TestUsageKeptMatchesRead(t *testing.T) {
	f := newFixture(t)
	// The reference: the same store without UsageSettled, read in full
	// at every load.
	ref := &Server{Store: struct{ Store }{f.db}, Token: testToken, Now: f.clk.Now, Prices: f.cs.Prices, Channels: f.cs.Channels}
	h, err := ref.Handler()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, h)
	refSrv := httptest.NewServer(mux)
	t.Cleanup(refSrv.Close)
	now := f.clk.Now()
	for d := 12; d >= 1; d-- {
		f.clk.Set(now.AddDate(0, 0, -d))
		for i := range 5 {
			who := agent.Principal{Platform: "slack", Workspace: fmt.Sprint("T", i%2), User: fmt.Sprint("U", (d*3+i)%7)}
			f.turn(t, who, fmt.Sprint("C", i%3), []string{"gpt-big", "small"}[i%2], false, time.Second, [2]int{100*d + i, 10 * i})
		}
		f.turnIn(t, bob, "D1", []string{"G1", ""}[d%2], "gpt-big", false, time.Second, [2]int{d, 1})
	}
	// A turn cut off yesterday after its first model call.
	ctx := context.Background()
	q, _, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "cut", Key: agent.SessionKey{Principal: alice, Conversation: agent.Conversation{Channel: "C9"}}, Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	tid, sess, _, err := f.db.StartTurn(ctx, q.ID, &user)
	if err != nil {
		t.Fatal(err)
	}
	step := agent.Step{Session: sess.ID, N: 1, Model: "gpt-big", Usage: llm.Usage{InputTokens: 777_000, OutputTokens: 1}}
	if err := f.db.RecordStep(ctx, tid, step); err != nil {
		t.Fatal(err)
	}
	f.clk.Set(now)
	f.turn(t, alice, "C1", "gpt-big", false, time.Second, [2]int{5, 5})
	// Signed in once the past days are written: the store keeps settled
	// days once read (the Overview reads them).
	kept, read := f.client(t), f.client(t)
	f.signIn(t, kept)
	(&fixture{srv: refSrv}).signIn(t, read)

	direct := func(st Store, prices map[string]Price, path string) string {
		t.Helper()
		c := &Server{Store: st, Token: testToken, Now: f.clk.Now, Prices: prices, Channels: f.cs.Channels}
		rec := httptest.NewRecorder()
		serve := c.usage
		if strings.Contains(path, "csv") {
			serve = c.usageCSV
		}
		serve(rec, httptest.NewRequest(http.MethodGet, path, nil), &session{csrf: "x"})
		if rec.Code != http.StatusOK {
			t.Fatalf("a new console's %s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	same := func(when string) (page, csv string) {
		t.Helper()
		// The Overview's tokens per day keep the settled days' too.
		_, got := get(t, kept, f.srv.URL+"/console/")
		_, want := get(t, read, refSrv.URL+"/console/")
		if diff := cmp.Diff(csrfField.ReplaceAllString(want, ""), csrfField.ReplaceAllString(got, "")); diff != "" {
			t.Errorf("%s: the Overview kept differs from read (-read +kept):\n%s", when, diff)
		}
		for _, days := range []string{"7", "30"} {
			for _, path := range []string{"/console/usage?days=", "/console/usage.csv?days="} {
				_, got := get(t, kept, f.srv.URL+path+days)
				_, want := get(t, read, refSrv.URL+path+days)
				got, want = csrfField.ReplaceAllString(got, ""), csrfField.ReplaceAllString(want, "")
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s: %s%s kept differs from read (-read +kept):\n%s", when, path, days, diff)
				}
				// A console with nothing in memory (a restart): the
				// settled days' lines and sums kept in the store.
				if diff := cmp.Diff(direct(struct{ Store }{f.db}, f.cs.Prices, path+days), direct(f.db, f.cs.Prices, path+days)); diff != "" {
					t.Errorf("%s: %s%s of a new console differs from read (-read +new):\n%s", when, path, days, diff)
				}
				if days == "30" && strings.HasSuffix(path, "=") && strings.Contains(path, "csv") {
					csv = got
				} else if days == "30" {
					page = got
				}
			}
		}
		return page, csv
	}
	same("first load")
	page1, csv1 := same("second load")
	f.cs.usageMemo.mu.Lock()
	n := len(f.cs.usageMemo.entries)
	f.cs.usageMemo.mu.Unlock()
	if n != 2 {
		t.Errorf("%d periods kept, want 2 (7 and 30 days)", n)
	}

	// Kept in the store, under these prices only.
	gen, before, err := f.db.UsageSettled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -29)
	if v, err := f.db.KeptUsagePeriod(ctx, "csv "+f.cs.pricesKey(), gen, from, before.UTC().Truncate(24*time.Hour)); err != nil || v == nil {
		t.Errorf("the 30 days' CSV lines are not kept in the store: %v", err)
	}
	doubled := map[string]Price{}
	for m, p := range f.cs.Prices {
		doubled[m] = Price{Input: 2 * p.Input, Output: 2 * p.Output}
	}
	if direct(f.db, doubled, "/console/usage.csv?days=30") == csv1 {
		t.Error("a console with other prices served the CSV kept under the first ones")
	}
	if v, err := f.db.KeptUsagePeriod(ctx, "sums "+f.cs.pricesKey(), gen, from, before.UTC().Truncate(24*time.Hour)); err != nil || v == nil {
		t.Errorf("the 30 days' sums are not kept in the store: %v", err)
	}
	if direct(f.db, doubled, "/console/usage?days=30") == direct(f.db, f.cs.Prices, "/console/usage?days=30") {
		t.Error("a console with other prices served the page of the sums kept under the first ones")
	}
	if !strings.Contains(csv1, "777000") {
		t.Errorf("the CSV lacks the cut-off turn's step:\n%s", csv1)
	}
	// Resumed today: the step is recorded again, and moves to today.
	step.Usage.InputTokens = 555_000
	if err := f.db.RecordStep(ctx, tid, step); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "ok"}, nil); err != nil {
		t.Fatal(err)
	}
	page3, csv3 := same("the step recorded again today (the turn resumed)")
	if page3 == page1 {
		t.Error("the page did not change when a settled day's step moved to today")
	}
	if !strings.Contains(csv3, now.Format("2006-01-02")+",slack,T1,UALICE,C9,gpt-big,1,555000,1,") || strings.Contains(csv3, "777000") {
		t.Errorf("the resumed step is not today's alone:\n%s", csv3)
	}
	// The next day: today settles.
	f.clk.Set(now.AddDate(0, 0, 1).Add(2 * time.Minute))
	same("the next day")
	f.turn(t, bob, "D1", "small", false, time.Second, [2]int{3, 3})
	same("the next day's first turn")
}

// The kept periods are at most maxUsageMemo, their CSV lines at most
// maxUsageMemoCSV bytes in all (the oldest period's go first), and a new
// generation drops the others.
func TestUsageMemoBounds(t *testing.T) {
	var c usageMemo
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	period := func(gen uint64, days int) usagePeriod {
		return usagePeriod{gen: gen, ok: true, from: day.AddDate(0, 0, -days), settled: day}
	}
	for days := 1; days <= 6; days++ {
		c.put(period(1, days), func(e *usageMemoEntry) { e.csv = make([]byte, 6<<20) })
	}
	if len(c.entries) != maxUsageMemo {
		t.Fatalf("%d periods kept, want %d", len(c.entries), maxUsageMemo)
	}
	n := 0
	for _, e := range c.entries {
		n += len(e.csv)
	}
	if n > maxUsageMemoCSV || c.get(period(1, 6)).csv == nil || c.get(period(1, 2)).csv != nil {
		t.Errorf("CSV kept: %d bytes in all (bound %d); newest kept %v, oldest dropped %v",
			n, maxUsageMemoCSV, c.get(period(1, 6)).csv != nil, c.get(period(1, 2)).csv == nil)
	}
	c.put(period(2, 30), func(e *usageMemoEntry) { e.tokensSet = true })
	if len(c.entries) != 1 || !c.get(period(2, 30)).tokensSet || c.get(period(1, 6)).csv != nil {
		t.Errorf("after a new generation: %d periods kept, want only the new one", len(c.entries))
	}
}

// The CSV's lines are what encoding/csv writes for the same records,
// whatever the names hold: commas, quotes, line breaks, leading spaces
// (Unicode ones too), \., a formula's first character, none.
func TestCSVLinesAsEncodingCSV(t *testing.T) {
	s := &Server{Prices: map[string]Price{"m1": {Input: 2, Output: 8}, "m\"2": {Input: 0.5}}}
	day := time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)
	names := []string{"", "plain", "a,b", `say "hi"`, "two\nlines", "cr\rhere", " lead", "\tTab", "\u00a0nbsp", "\u2003em", `\.`, `\.x`, "=1+2", "+x", "-y", "@z", "\rz", "ünï", "end "}
	var rows []store.UsageRow
	for i, n := range names {
		d := day
		if i%3 == 0 {
			d = day.AddDate(0, 0, -1)
		}
		rows = append(rows, store.UsageRow{Day: d, Platform: n, Workspace: names[(i+1)%len(names)], User: names[(i+2)%len(names)],
			Channel: names[(i+3)%len(names)], Model: []string{"m1", "m\"2", n}[i%3], Server: names[(i+4)%len(names)],
			Calls: int64(i), InputTokens: int64(1000 * i), OutputTokens: -int64(i)})
	}
	var want bytes.Buffer
	cw := csv.NewWriter(&want)
	for _, u := range rows {
		_ = cw.Write([]string{u.Day.Format("2006-01-02"), cell(u.Platform), cell(workspaceOrServer(u)), cell(u.User), cell(u.Channel), cell(u.Model),
			strconv.FormatInt(u.Calls, 10), strconv.FormatInt(u.InputTokens, 10), strconv.FormatInt(u.OutputTokens, 10),
			strconv.FormatFloat(s.cost(u.Model, u.InputTokens, u.OutputTokens), 'f', 6, 64)})
	}
	cw.Flush()
	if got := s.csvLines(rows); string(got) != want.String() {
		t.Errorf("csvLines:\n%q\nencoding/csv:\n%q", got, want.String())
	}
}

// The Usage page's sums kept in the store decode to what was encoded; a
// value cut short or of another version is refused.
func TestUsageSumsEncoding(t *testing.T) {
	s := &Server{Prices: map[string]Price{"m1": {Input: 1e-6, Output: 2e-6}}}
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var rows []store.UsageRow
	for d := range 3 {
		for u := range 300 {
			rows = append(rows, store.UsageRow{Day: day.AddDate(0, 0, -d), Platform: []string{"slack", "discord"}[u%2], Workspace: []string{"T1", ""}[u%2],
				User: fmt.Sprint("U", u), Channel: fmt.Sprint("C", u%7), Model: []string{"m1", "m2"}[u%3%2], Server: []string{"", "G1", ""}[u%3],
				Calls: int64(u + 1), InputTokens: int64(100 * u), OutputTokens: int64(d*u + 1)})
		}
	}
	m := s.sumUsage(rows)
	m.sortLists()
	data := m.encode(nil)
	got, err := decodeUsageSums(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got, cmp.AllowUnexported(usageSums{}, usageRow{}), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("decoded sums (-encoded +decoded):\n%s", diff)
	}
	for _, n := range []int{0, 1, len(data) / 2, len(data) - 1} {
		if _, err := decodeUsageSums(data[:n]); err == nil {
			t.Errorf("a value cut to %d of %d bytes decoded", n, len(data))
		}
	}
	if _, err := decodeUsageSums(append([]byte{usageSumsVersion + 1}, data[1:]...)); err == nil {
		t.Error("a value of another version decoded")
	}
}
