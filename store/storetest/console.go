package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// ConsoleStore is what the operator's console reads and writes
// (console.Store); both stores implement it. It restates console.Store
// because store packages may not import the console (DESIGN.md's direction).
type ConsoleStore interface {
	Usage(ctx context.Context, from, to time.Time) ([]store.UsageRow, error)
	TokensPerDay(ctx context.Context, from time.Time) ([]store.TokenBucket, error)
	UsageSettled(ctx context.Context) (gen uint64, before time.Time, err error)
	KeptUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time) ([]byte, error)
	KeepUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time, data []byte) error
	TurnsPer(ctx context.Context, from time.Time, bucket time.Duration) ([]store.TurnBucket, error)
	TurnDurations(ctx context.Context, from time.Time) ([]time.Duration, error)
	AddConsoleAction(ctx context.Context, a store.ConsoleAction) error
	ConsoleActions(ctx context.Context, limit int) ([]store.ConsoleAction, error)
	AddConsoleSession(ctx context.Context, sess store.ConsoleSession, max int) error
	ConsoleSession(ctx context.Context, hash [32]byte, now time.Time) (store.ConsoleSession, error)
	DeleteConsoleSession(ctx context.Context, hash [32]byte) error
	AddOIDCState(ctx context.Context, hash [32]byte, nonce string, expires time.Time, max int) error
	TakeOIDCState(ctx context.Context, hash [32]byte, now time.Time) (string, error)
	Conversations(ctx context.Context, f store.ConversationFilter) ([]store.Conversation, error)
	Transcript(ctx context.Context, s agent.SessionID, limit int) (store.Conversation, []agent.StoredMessage, []store.Approval, error)
	UsersByUsage(ctx context.Context, month, today time.Time, match string, limit int) ([]store.UserUsage, int, error)
	ToolStats(ctx context.Context, since time.Time) ([]store.ToolStat, error)
	VaultAudit(ctx context.Context, f store.VaultAuditFilter, limit int) ([]vault.AuditEvent, error)
}

var consoleTests = []test{
	{"ConsoleUsage", testConsoleUsage},
	{"UsageSettled", testUsageSettled},
	{"ServerUsage", testServerUsage},
	{"ConsoleTurnsAndTools", testConsoleTurnsAndTools},
	{"Conversations", testConversations},
	{"ConversationSearch", testConversationSearch},
	{"Transcript", testTranscript},
	{"ConsoleSessions", testConsoleSessions},
	{"OIDCStates", testOIDCStates},
	{"ConsoleAudit", testConsoleAudit},
	{"VaultAuditFilter", testVaultAuditFilter},
}

var day0 = time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)

// turnWith runs one finished turn of key at the clock's time with one
// step of model and tokens, and returns its session.
func (e *env) turnWith(tb testing.TB, dedupe string, key agent.SessionKey, model string, in, out int, text string) agent.SessionID {
	tb.Helper()
	ctx := context.Background()
	q := accept(tb, e.db, agent.Inbound{DedupeKey: dedupe, Key: key, Text: text})
	user := llm.Message{Role: llm.RoleUser, Content: text}
	tid, s := startTurn(tb, e.db, q.ID, &user)
	if _, err := e.db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "ok"},
		&agent.Step{Session: s.ID, N: 1, Model: model, Usage: llm.Usage{InputTokens: in, OutputTokens: out},
			Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "answer to " + text}}}); err != nil {
		tb.Fatal(err)
	}
	return s.ID
}

// A day's usage settles after midnight (with a grace of at most an hour);
// a resumed turn that records a settled day's step again moves UsageSettled's
// generation on, and the step's figures to today, in Usage, TokensPerDay
// and UsersByUsage read before and after.
func testUsageSettled(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(ConsoleStore)
	e.clk.set(day0.Add(23 * time.Hour))
	q := accept(t, e.db, agent.Inbound{DedupeKey: "s1", Key: alice, Text: "hi"})
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	tid, s := startTurn(t, e.db, q.ID, &user)
	step := agent.Step{Session: s.ID, N: 1, Model: "m1", Usage: llm.Usage{InputTokens: 100, OutputTokens: 10}}
	if err := e.db.RecordStep(ctx, tid, step); err != nil {
		t.Fatal(err)
	}
	d1 := day0.Add(24 * time.Hour)
	e.clk.set(d1.Add(time.Second))
	if _, before, err := db.UsageSettled(ctx); err != nil || !before.Equal(day0) {
		t.Errorf("a second after midnight: settled before %v, %v; want %v (the day just ended is not settled yet)", before, err, day0)
	}
	e.clk.set(d1.Add(time.Hour))
	gen, before, err := db.UsageSettled(ctx)
	if err != nil || !before.Equal(d1) {
		t.Errorf("an hour after midnight: settled before %v, %v; want %v", before, err, d1)
	}
	read := func() ([]store.UsageRow, []store.TokenBucket) {
		t.Helper()
		rows, err := db.Usage(ctx, day0, d1.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := db.TokensPerDay(ctx, day0)
		if err != nil {
			t.Fatal(err)
		}
		return rows, tokens
	}
	rows0, tokens := read()
	if len(rows0) != 1 || !rows0[0].Day.Equal(day0) || len(tokens) != 1 || !tokens[0].Start.Equal(day0) {
		t.Fatalf("before the resume: %+v, %+v; want the step on %v", rows0, tokens, day0)
	}
	// A second store on the same data, with nothing kept in its memory,
	// reads the same (PostgreSQL: the settled day as the first read kept
	// it in usage_days).
	other := func() ConsoleStore {
		t.Helper()
		r := e.replica(t)
		t.Cleanup(func() { r.Close() })
		return r.(ConsoleStore)
	}
	if rows, err := other().Usage(ctx, day0, d1.Add(24*time.Hour)); err != nil || !cmp.Equal(rows0, rows) {
		t.Errorf("Usage of a second store before the resume: %+v, %v; want %+v", rows, err, rows0)
	}
	if g, _, _ := db.UsageSettled(ctx); g != gen {
		t.Errorf("the generation moved from %d to %d with no change to a settled day", gen, g)
	}
	// A period's value kept under the generation is read by a second
	// store; a period that holds a day not settled is refused.
	if err := db.KeepUsagePeriod(ctx, "p", gen, day0, d1, []byte("v0")); err != nil {
		t.Fatal(err)
	}
	if err := db.KeepUsagePeriod(ctx, "p", gen, day0, d1.Add(24*time.Hour), []byte("x")); err == nil {
		t.Error("KeepUsagePeriod kept a period whose last day is not settled")
	}
	kept := func(db ConsoleStore, gen uint64, from, end time.Time) string {
		t.Helper()
		v, err := db.KeptUsagePeriod(ctx, "p", gen, from, end)
		if err != nil {
			t.Fatal(err)
		}
		if v == nil {
			return "<none>"
		}
		return string(v)
	}
	if v := kept(other(), gen, day0, d1); v != "v0" {
		t.Errorf("a second store's kept period before the resume: %s; want v0", v)
	}
	if v := kept(db, gen, day0.Add(-24*time.Hour), d1); v != "<none>" {
		t.Errorf("kept period of other days: %s; want none", v)
	}
	users := func() []store.UserUsage {
		t.Helper()
		users, _, err := db.UsersByUsage(ctx, day0, d1, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return users
	}
	if diff := cmp.Diff([]store.UserUsage{{Platform: "slack", Workspace: "T1", User: "U1", Month: 110, LastDay: day0}}, users()); diff != "" {
		t.Errorf("UsersByUsage before the resume (-want +got):\n%s", diff)
	}
	step.Usage.InputTokens = 200
	if err := e.db.RecordStep(ctx, tid, step); err != nil {
		t.Fatal(err)
	}
	if g, _, err := db.UsageSettled(ctx); err != nil || g == gen {
		t.Errorf("generation after a settled day's step was recorded again: %d, %v; want other than %d", g, err, gen)
	}
	// The period's value no longer holds: not read under the new
	// generation, nor kept again under the old one.
	g2, _, _ := db.UsageSettled(ctx)
	if v := kept(db, g2, day0, d1); v != "<none>" {
		t.Errorf("kept period after the resume: %s; want none", v)
	}
	if err := db.KeepUsagePeriod(ctx, "p", gen, day0, d1, []byte("stale")); err != nil {
		t.Fatal(err)
	}
	if v := kept(other(), g2, day0, d1); v != "<none>" {
		t.Errorf("kept period after the resume, kept again under the old generation: %s; want none", v)
	}
	if err := db.KeepUsagePeriod(ctx, "p", g2, day0, d1, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if v := kept(other(), g2, day0, d1); v != "v1" {
		t.Errorf("kept period after the resume, kept under the new generation: %s; want v1", v)
	}
	rows, tokens := read()
	wantRows := []store.UsageRow{{Day: d1, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m1", Calls: 1, InputTokens: 200, OutputTokens: 10}}
	if diff := cmp.Diff(wantRows, rows); diff != "" {
		t.Errorf("Usage after the resume (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]store.TokenBucket{{Start: d1, Model: "m1", InputTokens: 200, OutputTokens: 10}}, tokens); diff != "" {
		t.Errorf("TokensPerDay after the resume (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]store.UserUsage{{Platform: "slack", Workspace: "T1", User: "U1", Month: 210, Today: 210, LastDay: d1}}, users()); diff != "" {
		t.Errorf("UsersByUsage after the resume (-want +got):\n%s", diff)
	}
	// And a store opened after it, which keeps nothing yet (on
	// PostgreSQL the day kept under the old generation is not used).
	r := other()
	if rows, err := r.Usage(ctx, day0, d1.Add(24*time.Hour)); err != nil || !cmp.Equal(wantRows, rows) {
		t.Errorf("Usage of a store opened after the resume: %+v, %v; want %+v", rows, err, wantRows)
	}
	if got, _, err := r.UsersByUsage(ctx, day0, d1, "", 10); err != nil || len(got) != 1 || got[0].Month != 210 || got[0].Today != 210 {
		t.Errorf("UsersByUsage of a store opened after the resume: %+v, %v; want 210 tokens, all today", got, err)
	}
	// A period kept the next day deletes the one that ended before.
	d2 := d1.Add(24 * time.Hour)
	e.clk.set(d2.Add(time.Hour))
	g3, _, _ := db.UsageSettled(ctx)
	if err := db.KeepUsagePeriod(ctx, "p", g3, d1, d2, []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v, w := kept(other(), g3, day0, d1), kept(other(), g3, d1, d2); v != "<none>" || w != "v2" {
		t.Errorf("kept periods the next day: %s, %s; want the old one deleted, v2", v, w)
	}
}

// Usage is summed per day, principal, channel and model, newest day first;
// TokensPerDay per day and model; UsersByUsage ranks by the month's tokens
// and matches the principal ignoring case.
func testConsoleUsage(t *testing.T, e *env) {
	ctx := context.Background()
	carol := agent.SessionKey{Principal: agent.Principal{Platform: "discord", User: "42"}, Conversation: agent.Conversation{Channel: "D9"}}
	e.clk.set(day0.Add(10 * time.Hour))
	e.turnWith(t, "a1", alice, "m1", 100, 10, "one")
	e.turnWith(t, "a2", alice, "m1", 50, 5, "two")
	e.turnWith(t, "a3", alice, "m2", 7, 1, "three")
	e.clk.set(day0.Add(34 * time.Hour))
	e.turnWith(t, "b1", bob, "m1", 1000, 100, "four")
	e.turnWith(t, "c1", carol, "m2", 3, 3, "five")
	db := e.reopen(t).(ConsoleStore)

	rows, err := db.Usage(ctx, day0, day0.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	d1 := day0.Add(24 * time.Hour)
	want := []store.UsageRow{
		{Day: d1, Platform: "slack", Workspace: "T1", User: "U2", Channel: "C1", Model: "m1", Calls: 1, InputTokens: 1000, OutputTokens: 100},
		{Day: d1, Platform: "discord", User: "42", Channel: "D9", Model: "m2", Calls: 1, InputTokens: 3, OutputTokens: 3},
		{Day: day0, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m1", Calls: 2, InputTokens: 150, OutputTokens: 15},
		{Day: day0, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m2", Calls: 1, InputTokens: 7, OutputTokens: 1},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}
	if rows, err := db.Usage(ctx, d1, d1.Add(24*time.Hour)); err != nil || len(rows) != 2 {
		t.Errorf("Usage of the second day: %d rows, %v; want 2", len(rows), err)
	}

	tokens, err := db.TokensPerDay(ctx, day0)
	if err != nil {
		t.Fatal(err)
	}
	wantTokens := []store.TokenBucket{
		{Start: day0, Model: "m1", InputTokens: 150, OutputTokens: 15},
		{Start: day0, Model: "m2", InputTokens: 7, OutputTokens: 1},
		{Start: d1, Model: "m1", InputTokens: 1000, OutputTokens: 100},
		{Start: d1, Model: "m2", InputTokens: 3, OutputTokens: 3},
	}
	if diff := cmp.Diff(wantTokens, tokens); diff != "" {
		t.Errorf("TokensPerDay (-want +got):\n%s", diff)
	}

	users, total, err := db.UsersByUsage(ctx, day0, d1, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	wantUsers := []store.UserUsage{
		{Platform: "slack", Workspace: "T1", User: "U2", Month: 1100, Today: 1100, LastDay: d1},
		{Platform: "slack", Workspace: "T1", User: "U1", Month: 173, Today: 0, LastDay: day0},
		{Platform: "discord", User: "42", Month: 6, Today: 6, LastDay: d1},
	}
	if diff := cmp.Diff(wantUsers, users); diff != "" || total != 3 {
		t.Errorf("UsersByUsage: total %d, want 3 (-want +got):\n%s", total, diff)
	}
	if users, total, err := db.UsersByUsage(ctx, day0, d1, "", 1); err != nil || total != 3 || len(users) != 1 || users[0].User != "U2" {
		t.Errorf("UsersByUsage limited to 1: %+v, total %d, %v; want U2 of 3", users, total, err)
	}
	if users, total, err := db.UsersByUsage(ctx, day0, d1, "SLACK:t1", 10); err != nil || total != 2 || len(users) != 2 {
		t.Errorf("UsersByUsage matching SLACK:t1: %+v, total %d, %v; want the 2 slack users", users, total, err)
	}
	if users, total, err := db.UsersByUsage(ctx, day0, d1, "%", 10); err != nil || total != 0 || len(users) != 0 {
		t.Errorf("UsersByUsage matching %%: %+v, total %d, %v; want none (the match is literal)", users, total, err)
	}
	if users, _, err := db.UsersByUsage(ctx, d1, d1, "", 10); err != nil || len(users) != 2 {
		t.Errorf("UsersByUsage since the second day: %+v, %v; want 2 users", users, err)
	}
}

// The Discord server a message came from is kept with it, recorded on its
// session by the session's first turn from a server, and carried by the
// session's usage (steps and other model calls): ServerTokens sums one
// server's since a day, a DM counts to none, and Usage rows name the
// server.
func testServerUsage(t *testing.T, e *env) {
	ctx := context.Background()
	discord := func(user, channel string) agent.SessionKey {
		return agent.SessionKey{Principal: agent.Principal{Platform: "discord", User: user}, Conversation: agent.Conversation{Channel: channel}}
	}
	turn := func(dedupe, server string, key agent.SessionKey, in, out int) agent.SessionID {
		t.Helper()
		q := accept(t, e.db, agent.Inbound{DedupeKey: dedupe, Key: key, Server: server, Text: "hi"})
		if p, ok, err := e.db.PendingInbound(ctx, q.ID); err != nil || !ok || p.Server != server {
			t.Errorf("PendingInbound(%s): server %q, %v, %v; want %q", dedupe, p.Server, ok, err, server)
		}
		tid, s := startTurn(t, e.db, q.ID, &llm.Message{Role: llm.RoleUser, Content: "hi"})
		if _, err := e.db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "ok"},
			&agent.Step{Session: s.ID, N: 1, Model: "m1", Usage: llm.Usage{InputTokens: in, OutputTokens: out},
				Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "ok"}}}); err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	e.clk.set(day0.Add(-48 * time.Hour))
	turn("old", "G1", discord("42", "C10"), 300, 0)
	e.clk.set(day0.Add(10 * time.Hour))
	s1 := turn("g1a", "G1", discord("42", "C10"), 100, 10)
	turn("g1b", "G1", discord("43", "C11"), 20, 2)
	turn("g2", "G2", discord("42", "C20"), 5, 5)
	turn("dm", "", discord("42", "D9"), 1000, 100)
	// A model call that is not a step (a summary) counts to its session's
	// server too.
	if err := e.db.RecordModelUse(ctx, s1, "m1", llm.Usage{InputTokens: 7, OutputTokens: 1}); err != nil {
		t.Fatal(err)
	}
	db := e.reopen(t)
	meter, ok := db.(agent.ServerMeter)
	if !ok {
		t.Fatalf("%T is not an agent.ServerMeter", db)
	}
	for _, c := range []struct {
		server string
		since  time.Time
		want   int64
	}{
		{"G1", day0, 140},
		{"G1", day0.Add(-48 * time.Hour), 440},
		{"G2", day0, 10},
		{"G2", day0.Add(24 * time.Hour), 0},
		{"G3", day0, 0},
		{"", day0, 0}, // a DM counts to no server
	} {
		if n, err := meter.ServerTokens(ctx, c.server, c.since); err != nil || n != c.want {
			t.Errorf("ServerTokens(%q, %s) = %d, %v; want %d", c.server, c.since.Format(time.DateOnly), n, err, c.want)
		}
	}
	rows, err := db.(ConsoleStore).Usage(ctx, day0, day0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.UsageRow{
		{Day: day0, Platform: "discord", User: "42", Channel: "C10", Model: "m1", Server: "G1", Calls: 2, InputTokens: 107, OutputTokens: 11},
		{Day: day0, Platform: "discord", User: "42", Channel: "C20", Model: "m1", Server: "G2", Calls: 1, InputTokens: 5, OutputTokens: 5},
		{Day: day0, Platform: "discord", User: "42", Channel: "D9", Model: "m1", Calls: 1, InputTokens: 1000, OutputTokens: 100},
		{Day: day0, Platform: "discord", User: "43", Channel: "C11", Model: "m1", Server: "G1", Calls: 1, InputTokens: 20, OutputTokens: 2},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}
}

// TurnsPer buckets the turns started (and failed); TurnDurations lists the
// finished turns' durations; ToolStats counts calls and errors per tool.
func testConsoleTurnsAndTools(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	start := day0.Add(time.Hour)
	run := func(key string, at time.Time, took time.Duration, state agent.TurnState, calls map[string]bool) {
		t.Helper()
		e.clk.set(at)
		q := accept(t, db, inbound(key, alice))
		tid, _ := startTurn(t, db, q.ID, nil)
		i := 0
		for name, isErr := range calls {
			id := fmt.Sprint(key, "-", i)
			i++
			if err := db.StartToolCall(ctx, tid, 1, llm.ToolCall{ID: id, Name: name, Arguments: "{}"}); err != nil {
				t.Fatal(err)
			}
			if err := db.FinishToolCall(ctx, tid, id, "r", isErr); err != nil {
				t.Fatal(err)
			}
		}
		e.clk.set(at.Add(took))
		if took < 0 {
			return // left running
		}
		if _, err := db.FinishTurn(ctx, q.ID, tid, state, agent.Reply{Kind: agent.ReplyAnswer, Text: "x"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	run("t1", start, 3*time.Second, agent.TurnDone, map[string]bool{"fetch": false})
	run("t2", start.Add(10*time.Second), time.Second, agent.TurnFailed, map[string]bool{"fetch": true, "shell": false})
	run("t3", start.Add(2*time.Minute), 2*time.Second, agent.TurnDone, nil)
	run("t4", start.Add(3*time.Minute), -1, "", map[string]bool{"Zed": false})
	cs := e.reopen(t).(ConsoleStore)

	buckets, err := cs.TurnsPer(ctx, start, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wantBuckets := []store.TurnBucket{{Start: start, Turns: 2, Failed: 1}, {Start: start.Add(2 * time.Minute), Turns: 1}, {Start: start.Add(3 * time.Minute), Turns: 1}}
	if diff := cmp.Diff(wantBuckets, buckets); diff != "" {
		t.Errorf("TurnsPer (-want +got):\n%s", diff)
	}
	if _, err := cs.TurnsPer(ctx, start, 0); err == nil {
		t.Error("TurnsPer with a zero bucket: no error")
	}
	durs, err := cs.TurnDurations(ctx, start.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]time.Duration{time.Second, 2 * time.Second}, durs); diff != "" {
		t.Errorf("TurnDurations since t2 (-want +got):\n%s", diff)
	}
	stats, err := cs.ToolStats(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	wantStats := []store.ToolStat{
		{Name: "Zed", Calls: 1, Last: start.Add(3 * time.Minute)},
		{Name: "fetch", Calls: 2, Errors: 1, Last: start.Add(10 * time.Second)},
		{Name: "shell", Calls: 1, Last: start.Add(10 * time.Second)},
	}
	if diff := cmp.Diff(wantStats, stats); diff != "" {
		t.Errorf("ToolStats (-want +got; names in byte order):\n%s", diff)
	}
	if stats, err := cs.ToolStats(ctx, start.Add(time.Minute)); err != nil || len(stats) != 1 || stats[0].Name != "Zed" {
		t.Errorf("ToolStats since a minute later: %+v, %v; want Zed only", stats, err)
	}
}

// Conversations lists sessions newest first, narrowed by principal and
// channel, paged by Before and Limit.
func testConversations(t *testing.T, e *env) {
	ctx := context.Background()
	other := alice
	other.Conversation = agent.Conversation{Channel: "C2"}
	e.clk.set(day0)
	s1 := e.turnWith(t, "k1", alice, "m", 1, 1, "first")
	e.clk.set(day0.Add(time.Minute))
	s2 := e.turnWith(t, "k2", bob, "m", 1, 1, "second")
	e.clk.set(day0.Add(2 * time.Minute))
	s3 := e.turnWith(t, "k3", other, "m", 1, 1, "third")
	e.clk.set(day0.Add(3 * time.Minute))
	e.turnWith(t, "k4", alice, "m", 1, 1, "fourth") // alice's first session again
	// Colons in a principal's parts: "slack:E1:T2:U:7" splits 6 ways.
	colons := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "E1:T2", User: "U:7"}, Conversation: agent.Conversation{Channel: "C7"}}
	s5 := e.turnWith(t, "k5", colons, "m", 1, 1, "fifth")
	db := e.reopen(t).(ConsoleStore)

	ids := func(f store.ConversationFilter) []agent.SessionID {
		t.Helper()
		cs, err := db.Conversations(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		out := []agent.SessionID{}
		for _, c := range cs {
			out = append(out, c.Session)
		}
		return out
	}
	for _, tt := range []struct {
		name string
		f    store.ConversationFilter
		want []agent.SessionID
	}{
		{"all", store.ConversationFilter{}, []agent.SessionID{s5, s3, s2, s1}},
		{"principal", store.ConversationFilter{Principal: "slack:T1:U1"}, []agent.SessionID{s3, s1}},
		{"channel", store.ConversationFilter{Channel: "C1"}, []agent.SessionID{s2, s1}},
		{"both", store.ConversationFilter{Principal: "slack:T1:U1", Channel: "C1"}, []agent.SessionID{s1}},
		{"before", store.ConversationFilter{Before: s3}, []agent.SessionID{s2, s1}},
		{"limit", store.ConversationFilter{Limit: 2}, []agent.SessionID{s5, s3}},
		{"unknown principal", store.ConversationFilter{Principal: "slack:T1:U9"}, []agent.SessionID{}},
		{"colons", store.ConversationFilter{Principal: "slack:E1:T2:U:7"}, []agent.SessionID{s5}},
		{"colons, a part short", store.ConversationFilter{Principal: "slack:E1:T2:U"}, []agent.SessionID{}},
		{"no colon", store.ConversationFilter{Principal: "slack"}, []agent.SessionID{}},
	} {
		if diff := cmp.Diff(tt.want, ids(tt.f)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	cs, err := db.Conversations(ctx, store.ConversationFilter{Principal: "slack:T1:U1", Channel: "C1"})
	if err != nil || len(cs) != 1 {
		t.Fatalf("alice's conversation: %+v, %v", cs, err)
	}
	want := store.Conversation{Session: s1, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Thread: "1700.1", Active: true,
		CreatedAt: day0, LastAt: day0.Add(3 * time.Minute), Messages: 4}
	if diff := cmp.Diff(want, cs[0]); diff != "" {
		t.Errorf("alice's conversation (-want +got):\n%s", diff)
	}
}

// The search finds the sessions with a message containing the text,
// anywhere in a word, ignoring case; LIKE's wildcards in it are literal.
func testConversationSearch(t *testing.T, e *env) {
	ctx := context.Background()
	carol := bob
	carol.Principal.User = "U3"
	s1 := e.turnWith(t, "k1", alice, "m", 1, 1, "the Quokka report is due")
	s2 := e.turnWith(t, "k2", bob, "m", 1, 1, "100% done_now")
	s3 := e.turnWith(t, "k3", carol, "m", 1, 1, "nothing to see")
	db := e.db.(ConsoleStore)
	for _, tt := range []struct {
		search string
		want   []agent.SessionID
	}{
		{"quokka", []agent.SessionID{s1}},
		{"OKK", []agent.SessionID{s1}},
		{"ok", []agent.SessionID{s1}}, // too short for the index: the newest messages
		{"report is", []agent.SessionID{s1}},
		{"answer to", []agent.SessionID{s3, s2, s1}}, // the assistant's messages are searched too
		{"100%", []agent.SessionID{s2}},
		{"0% d", []agent.SessionID{s2}},
		{"%", []agent.SessionID{s2}},
		{"e_n", []agent.SessionID{s2}},
		{"_", []agent.SessionID{s2}},
		{"o%e", []agent.SessionID{}},
		{"platypus", []agent.SessionID{}},
	} {
		cs, err := db.Conversations(ctx, store.ConversationFilter{Search: tt.search})
		if err != nil {
			t.Fatalf("search %q: %v", tt.search, err)
		}
		got := []agent.SessionID{}
		for _, c := range cs {
			got = append(got, c.Session)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("search %q (-want +got):\n%s", tt.search, diff)
		}
	}
	if cs, err := db.Conversations(ctx, store.ConversationFilter{Search: "quokka", Principal: "slack:T1:U2"}); err != nil || len(cs) != 0 {
		t.Errorf("search of alice's word narrowed to bob: %+v, %v; want none", cs, err)
	}
}

// Transcript returns the latest messages oldest first, with the tool calls
// as stored, and the approvals of the session's turns with who decided.
func testTranscript(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	e.clk.set(day0)
	q := accept(t, db, inbound("k1", alice))
	user := llm.Message{Role: llm.RoleUser, Content: "ship it <script>alert(1)</script>"}
	tid, s := startTurn(t, db, q.ID, &user)
	call := llm.ToolCall{ID: "c1", Name: "github", Arguments: `{"repo":"o/r"}`}
	if err := db.RecordStep(ctx, tid, agent.Step{Session: s.ID, N: 1, Model: "m", Messages: []llm.Message{
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call}},
		{Role: llm.RoleTool, ToolCallID: "c1", Content: "created #7"},
	}}); err != nil {
		t.Fatal(err)
	}
	a, _, err := db.CreateApproval(ctx, agent.Approval{Turn: tid, CallID: "c1", Tool: "github", Description: "POST https://api.github.com/repos/o/r/issues",
		Key: alice, ExpiresAt: day0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.set(day0.Add(time.Minute))
	if _, _, err := db.DecideApproval(ctx, a.ID, agent.ApprovalApproved, "slack:T1:U1"); err != nil {
		t.Fatal(err)
	}
	cs := e.reopen(t).(ConsoleStore)

	c, msgs, aps, err := cs.Transcript(ctx, s.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if c.Session != s.ID || c.User != "U1" || c.Messages != 3 {
		t.Errorf("conversation %+v; want session %d of U1 with 3 messages", c, s.ID)
	}
	if len(msgs) != 3 || msgs[0].Message.Content != user.Content || len(msgs[1].Message.ToolCalls) != 1 ||
		msgs[1].Message.ToolCalls[0] != call || msgs[2].Message.Content != "created #7" || msgs[2].Turn != tid {
		t.Errorf("messages %+v; want the user's, the tool call, its result", msgs)
	}
	want := []store.Approval{{Turn: tid, CallID: "c1", Tool: "github", Description: "POST https://api.github.com/repos/o/r/issues",
		State: "approved", DecidedBy: "slack:T1:U1", CreatedAt: day0, DecidedAt: day0.Add(time.Minute)}}
	if diff := cmp.Diff(want, aps); diff != "" {
		t.Errorf("approvals (-want +got):\n%s", diff)
	}
	if _, msgs, _, err := cs.Transcript(ctx, s.ID, 2); err != nil || len(msgs) != 2 || msgs[1].Message.Content != "created #7" {
		t.Errorf("the latest 2 messages: %+v, %v; want the tool call and its result", msgs, err)
	}
	if _, _, _, err := cs.Transcript(ctx, s.ID+100, 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Transcript of an unknown session: %v, want ErrNotFound", err)
	}
}

// Sessions are found by hash until they expire, bounded in number (the
// expired ones make room), and end on delete; a replica sees them.
func testConsoleSessions(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(ConsoleStore)
	e.clk.set(day0)
	h := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	add := func(db ConsoleStore, v string, ttl time.Duration) error {
		return db.AddConsoleSession(ctx, store.ConsoleSession{Hash: h(v), Who: "admin " + v, Created: day0, Expires: day0.Add(ttl)}, 2)
	}
	if err := add(db, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := add(db, "b", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := add(db, "c", time.Hour); !errors.Is(err, store.ErrTooManySessions) {
		t.Errorf("a third session over a bound of 2: %v, want ErrTooManySessions", err)
	}
	other := e.replica(t).(ConsoleStore)
	got, err := other.ConsoleSession(ctx, h("a"), day0.Add(30*time.Minute))
	want := store.ConsoleSession{Hash: h("a"), Who: "admin a", Created: day0, Expires: day0.Add(time.Hour)}
	if err != nil || got != want {
		t.Errorf("ConsoleSession on a replica = %+v, %v; want %+v", got, err, want)
	}
	if _, err := db.ConsoleSession(ctx, h("b"), day0.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an expired session: %v, want ErrNotFound", err)
	}
	if _, err := db.ConsoleSession(ctx, h("x"), day0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown session: %v, want ErrNotFound", err)
	}
	e.clk.set(day0.Add(2 * time.Minute)) // b has expired: it makes room
	if err := add(db, "c", time.Hour); err != nil {
		t.Errorf("a session after one expired: %v", err)
	}
	if err := db.DeleteConsoleSession(ctx, h("a")); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteConsoleSession(ctx, h("a")); err != nil {
		t.Errorf("deleting again: %v", err)
	}
	if _, err := other.ConsoleSession(ctx, h("a"), day0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a deleted session: %v, want ErrNotFound", err)
	}
	if _, err := db.ConsoleSession(ctx, h("c"), day0.Add(3*time.Minute)); err != nil {
		t.Errorf("session c: %v", err)
	}
}

// An OIDC state is taken once, on any replica, and not after it expired;
// pending states are bounded.
func testOIDCStates(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(ConsoleStore)
	e.clk.set(day0)
	h := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	if err := db.AddOIDCState(ctx, h("s1"), "n1", day0.Add(10*time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	if err := db.AddOIDCState(ctx, h("s2"), "n2", day0.Add(time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	if err := db.AddOIDCState(ctx, h("s3"), "n3", day0.Add(time.Minute), 2); !errors.Is(err, store.ErrTooManySessions) {
		t.Errorf("a third state over a bound of 2: %v, want ErrTooManySessions", err)
	}
	other := e.replica(t).(ConsoleStore)
	if n, err := other.TakeOIDCState(ctx, h("s1"), day0.Add(time.Minute)); err != nil || n != "n1" {
		t.Errorf("TakeOIDCState on a replica = %q, %v; want n1", n, err)
	}
	if _, err := db.TakeOIDCState(ctx, h("s1"), day0.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("taking a state twice: %v, want ErrNotFound", err)
	}
	if _, err := db.TakeOIDCState(ctx, h("s2"), day0.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("taking an expired state: %v, want ErrNotFound", err)
	}
	if err := db.AddOIDCState(ctx, h("s3"), "n3", day0.Add(time.Hour), 2); err != nil {
		t.Errorf("a state after the others went: %v", err)
	}
}

// The console's audit log is read newest first, bounded.
func testConsoleAudit(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(ConsoleStore)
	e.clk.set(day0)
	for i, a := range []store.ConsoleAction{
		{At: day0.Add(-time.Hour), Actor: "admin", Action: "sign-in", Remote: "192.0.2.1"},
		{Actor: "slack:T1:U1", Action: "deny", Target: "slack:T1:U2 <b>", Remote: "192.0.2.2"}, // At defaults to now
		{At: day0.Add(time.Hour), Actor: "admin", Action: "sign-out"},
	} {
		if err := db.AddConsoleAction(ctx, a); err != nil {
			t.Fatalf("action %d: %v", i, err)
		}
	}
	got, err := e.reopen(t).(ConsoleStore).ConsoleActions(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ConsoleAction{
		{At: day0.Add(time.Hour), Actor: "admin", Action: "sign-out"},
		{At: day0, Actor: "slack:T1:U1", Action: "deny", Target: "slack:T1:U2 <b>", Remote: "192.0.2.2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ConsoleActions(2) (-want +got):\n%s", diff)
	}
}

// The vault's audit log is filtered by user, name, host, tool, result and
// time, newest first.
func testVaultAuditFilter(t *testing.T, e *env) {
	ctx := context.Background()
	vs := e.vault()
	ev := func(min int, user, name, host string, allowed bool) vault.AuditEvent {
		r := vault.ReasonInjected
		if !allowed {
			r = vault.ReasonHostNotBound
		}
		return vault.AuditEvent{Time: day0.Add(time.Duration(min) * time.Minute), User: user, Name: name, Host: host, Tool: "fetch", Allowed: allowed, Reason: r}
	}
	events := []vault.AuditEvent{
		ev(0, "slack:T1:U1", "gh", "api.github.com", true),
		ev(1, "slack:T1:U1", "gh", "evil.example", false),
		ev(2, "slack:T1:U2", "gh", "api.github.com", true),
		ev(3, "slack:T1:U1", "linear", "api.linear.app", true),
	}
	for _, a := range events {
		if err := vs.AppendAudit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	db := e.db.(ConsoleStore)
	for _, tt := range []struct {
		name  string
		f     store.VaultAuditFilter
		limit int
		want  []vault.AuditEvent
	}{
		{"all", store.VaultAuditFilter{}, 10, []vault.AuditEvent{events[3], events[2], events[1], events[0]}},
		{"limit", store.VaultAuditFilter{}, 1, []vault.AuditEvent{events[3]}},
		{"user", store.VaultAuditFilter{User: "slack:T1:U1"}, 10, []vault.AuditEvent{events[3], events[1], events[0]}},
		{"user and name", store.VaultAuditFilter{User: "slack:T1:U1", Name: "gh"}, 10, []vault.AuditEvent{events[1], events[0]}},
		{"host", store.VaultAuditFilter{Host: "api.github.com"}, 10, []vault.AuditEvent{events[2], events[0]}},
		{"tool", store.VaultAuditFilter{Tool: "shell"}, 10, nil},
		{"refused", store.VaultAuditFilter{Result: "refused"}, 10, []vault.AuditEvent{events[1]}},
		{"allowed", store.VaultAuditFilter{Result: "allowed", User: "slack:T1:U1"}, 10, []vault.AuditEvent{events[3], events[0]}},
		{"time", store.VaultAuditFilter{From: day0.Add(time.Minute), To: day0.Add(3 * time.Minute)}, 10, []vault.AuditEvent{events[2], events[1]}},
	} {
		got, err := db.VaultAudit(ctx, tt.f, tt.limit)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	if _, err := db.VaultAudit(ctx, store.VaultAuditFilter{Result: "maybe"}, 10); err == nil {
		t.Error("result maybe: no error")
	}
}
