package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// The daily sums (usage_daily) that Usage, TokensPerDay and the budgets
// read agree with the model calls recorded per step: for steps recorded
// before the sums existed (migration 0015 fills them), for a turn cut off
// by a crash after its first step and resumed the next day (its step
// recorded again moves to that day), and while the settled days are read
// from the cache.
func TestUsageDailyAgreesWithSteps(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "talon.db")
	all, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	var before []migration
	for _, m := range all {
		if m.name == "usage_daily" {
			break
		}
		before = append(before, m)
	}
	day0 := time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)
	w := rawWriter(t, path)
	if _, err := migrate(ctx, w, before, testClock); err != nil {
		t.Fatal(err)
	}
	// Before the sums existed: two users, three turns over two days, two
	// models.
	for _, q := range []string{
		`INSERT INTO principals (id, platform, workspace, user, created_at) VALUES (1, 'slack', 'T1', 'U1', 0), (2, 'slack', 'T1', 'U2', 0)`,
		`INSERT INTO sessions (id, principal_id, channel, created_at) VALUES (1, 1, 'C1', 0), (2, 2, 'C2', 0)`,
		`INSERT INTO inbound (id, dedupe_key, principal_id, channel, state, received_at, accepted_at) VALUES
			(1, 'a', 1, 'C1', 'done', 0, 0), (2, 'b', 1, 'C1', 'done', 0, 0), (3, 'c', 2, 'C2', 'done', 0, 0)`,
		`INSERT INTO turns (id, session_id, inbound_id, state, started_at, finished_at) VALUES (1, 1, 1, 'done', 0, 0), (2, 1, 2, 'done', 0, 0), (3, 2, 3, 'done', 0, 0)`,
	} {
		if _, err := w.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d int, h time.Duration) int64 { return day0.AddDate(0, 0, d).Add(h).UnixMilli() }
	for _, s := range []struct {
		turn, step, in, out int
		at                  int64
		model               string
	}{
		{1, 1, 100, 10, at(-3, time.Hour), "big"},
		{1, 2, 200, 20, at(-3, time.Hour), "big"},
		{2, 1, 40, 4, at(-2, 5*time.Hour), "small"},
		{3, 1, 7, 1, at(-2, 6*time.Hour), "big"},
	} {
		if _, err := w.Exec(`INSERT INTO turn_steps (turn_id, step, input_tokens, output_tokens, created_at, model) VALUES (?, ?, ?, ?, ?, ?)`,
			s.turn, s.step, s.in, s.out, s.at, s.model); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()

	now := day0.Add(-2 * time.Minute) // just before midnight
	open := func() *DB {
		t.Helper()
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		db.Now = func() time.Time { return now }
		return db
	}
	db := open()
	agrees := func(when string) {
		t.Helper()
		type key struct {
			day                  int64
			user, channel, model string
		}
		type sums struct{ calls, in, out int64 }
		// The steps as recorded, summed by the day each was recorded.
		want := map[key]sums{}
		rows, err := db.w.QueryContext(ctx, `
			SELECT ts.created_at / 86400000, p.user, s.channel, ts.model, count(*), sum(ts.input_tokens), sum(ts.output_tokens)
			FROM turn_steps ts JOIN turns t ON t.id = ts.turn_id JOIN sessions s ON s.id = t.session_id JOIN principals p ON p.id = s.principal_id
			GROUP BY 1, 2, 3, 4`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k key
			var v sums
			if err := rows.Scan(&k.day, &k.user, &k.channel, &k.model, &v.calls, &v.in, &v.out); err != nil {
				t.Fatal(err)
			}
			want[k] = v
		}
		rows.Close()
		wantModels := map[key]sums{}
		for k, v := range want {
			m := wantModels[key{day: k.day, model: k.model}]
			wantModels[key{day: k.day, model: k.model}] = sums{m.calls + v.calls, m.in + v.in, m.out + v.out}
		}
		usage, err := db.Usage(ctx, day0.AddDate(0, 0, -10), day0.AddDate(0, 0, 2))
		if err != nil {
			t.Fatal(err)
		}
		got := map[key]sums{}
		for _, u := range usage {
			got[key{dayOf(u.Day), u.User, u.Channel, u.Model}] = sums{u.Calls, u.InputTokens, u.OutputTokens}
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(key{}, sums{})); diff != "" {
			t.Errorf("%s: Usage against the steps (-steps +usage):\n%s", when, diff)
		}
		tokens, err := db.TokensPerDay(ctx, day0.AddDate(0, 0, -10))
		if err != nil {
			t.Fatal(err)
		}
		gotModels := map[key]sums{}
		for _, b := range tokens {
			gotModels[key{day: dayOf(b.Start), model: b.Model}] = sums{wantModels[key{day: dayOf(b.Start), model: b.Model}].calls, b.InputTokens, b.OutputTokens}
		}
		if diff := cmp.Diff(wantModels, gotModels, cmp.AllowUnexported(key{}, sums{})); diff != "" {
			t.Errorf("%s: TokensPerDay against the steps (-steps +tokens):\n%s", when, diff)
		}
	}
	agrees("after the migration")

	// A turn whose first model call is recorded just before midnight; the
	// gateway dies before the turn ends.
	p := agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}
	q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "k1", Key: agent.SessionKey{Principal: p, Conversation: agent.Conversation{Channel: "C1"}}, Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	tid, sess, _, err := db.StartTurn(ctx, q.ID, &user)
	if err != nil {
		t.Fatal(err)
	}
	step := func(n, in, out int) {
		t.Helper()
		if err := db.RecordStep(ctx, tid, agent.Step{Session: sess.ID, N: n, Model: "big", Usage: llm.Usage{InputTokens: in, OutputTokens: out}}); err != nil {
			t.Fatal(err)
		}
	}
	step(1, 1000, 100)
	agrees("after the first step")
	db.Close()

	// Restarted after midnight (and after the grace): yesterday is
	// settled, read and kept; the resumed turn records its first step
	// again, which moves it to today, then its second.
	now = day0.Add(30 * time.Minute)
	db = open()
	agrees("after the restart")
	if _, _, ok := db.usage.get(dayOf(day0) - 1); !ok {
		t.Fatal("yesterday is not kept after a read")
	}
	gen, _, _ := db.UsageSettled(ctx)
	step(1, 1500, 150)
	if g, _, _ := db.UsageSettled(ctx); g == gen {
		t.Error("UsageSettled's generation did not change when a settled day's usage did")
	}
	step(2, 50, 5)
	if _, err := db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "ok"}, nil); err != nil {
		t.Fatal(err)
	}
	agrees("after the resumed turn")
	if _, before, _ := db.UsageSettled(ctx); !before.Equal(day0) {
		t.Errorf("settled before %v, want %v", before, day0)
	}
}
