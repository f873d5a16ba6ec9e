package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// discordThread is a Discord thread (a channel of its own) followed for a
// user.
func discordThread(guild, thread, user string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    agent.Principal{Platform: "discord", Workspace: guild, User: user},
		Conversation: agent.Conversation{Channel: thread},
	}
}

func following(tb testing.TB, db *store.DB, key agent.SessionKey, since time.Time) bool {
	tb.Helper()
	ok, err := db.FollowingThread(context.Background(), key, since)
	if err != nil {
		tb.Fatal(err)
	}
	return ok
}

func followedRows(tb testing.TB, db *store.DB) int {
	tb.Helper()
	return store.CountRows(tb, db)["followed_threads"]
}

func TestFollowThread(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	day := 24 * time.Hour
	if following(t, db, alice, t0.Add(-day)) {
		t.Fatal("a thread never followed is followed")
	}
	if err := db.FollowThread(ctx, alice, t0); err != nil {
		t.Fatal(err)
	}
	if !following(t, db, alice, t0.Add(-day)) {
		t.Error("the thread just followed is not followed")
	}
	// Per user, per thread, per workspace, per platform.
	others := map[string]agent.SessionKey{"another user": bob}
	k := alice
	k.Conversation.Thread = "1700.2"
	others["another thread"] = k
	k = alice
	k.Principal.Workspace = "T2"
	others["another workspace"] = k
	k = alice
	k.Principal.Platform = "discord"
	others["another platform"] = k
	for name, k := range others {
		if following(t, db, k, t0.Add(-day)) {
			t.Errorf("%s: followed", name)
		}
	}

	// Expiry is decided on read: quiet since before since means not
	// followed, pruned or not; since is inclusive.
	if !following(t, db, alice, t0) {
		t.Error("not followed with since = its last activity")
	}
	if following(t, db, alice, t0.Add(time.Millisecond)) {
		t.Error("followed with since after its last activity")
	}

	// New activity moves the time forward, an older one never back.
	if err := db.FollowThread(ctx, alice, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.FollowThread(ctx, alice, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !following(t, db, alice, t0.Add(time.Hour)) || following(t, db, alice, t0.Add(time.Hour+time.Millisecond)) {
		t.Error("the last activity is not the newest recorded")
	}
	if n := followedRows(t, db); n != 1 {
		t.Errorf("%d rows for one thread followed three times, want 1", n)
	}

	// A zero time is the clock's.
	if err := db.FollowThread(ctx, bob, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !following(t, db, bob, t0) || following(t, db, bob, t0.Add(time.Millisecond)) {
		t.Error("a zero time is not recorded as the clock's time")
	}

	if err := db.FollowThread(ctx, agent.SessionKey{Principal: agent.Principal{Platform: "slack", User: "U1"}}, t0); err == nil ||
		!strings.Contains(err.Error(), "required") {
		t.Errorf("follow without a channel: err = %v, want an error", err)
	}
}

func TestFollowedThreadsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	th := discordThread("300", "41", "7")
	if err := db.FollowThread(ctx, alice, t0); err != nil {
		t.Fatal(err)
	}
	if err := db.FollowThread(ctx, th, t0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openAt(t, path)
	for _, k := range []agent.SessionKey{alice, th} {
		if !following(t, db, k, t0.Add(-time.Hour)) {
			t.Errorf("%s not followed after reopening", k)
		}
	}
	if following(t, db, bob, t0.Add(-time.Hour)) {
		t.Error("a thread never followed is followed after reopening")
	}
}

func TestForgetThreads(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	// Ten Discord threads, one a minute (thread i active at t0 + i min),
	// and one Slack thread, old.
	var threads []agent.SessionKey
	for i := range 10 {
		k := discordThread("300", string(rune('a'+i)), "7")
		threads = append(threads, k)
		if err := db.FollowThread(ctx, k, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FollowThread(ctx, alice, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}

	// Quiet since before t0 + 2 min: threads 0 and 1 go; Slack's stay.
	n, err := db.ForgetThreads(ctx, "discord", t0.Add(2*time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("forgot %d quiet threads, want 2", n)
	}
	if following(t, db, threads[0], time.Time{}) || following(t, db, threads[1], time.Time{}) || !following(t, db, threads[2], time.Time{}) {
		t.Error("the quiet threads were not the ones forgotten")
	}
	if !following(t, db, alice, time.Time{}) {
		t.Error("another platform's thread was forgotten")
	}

	// The bound: keep the 3 most recently active (7, 8 and 9).
	n, err = db.ForgetThreads(ctx, "discord", t0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("forgot %d threads beyond the bound, want 5", n)
	}
	for i, k := range threads {
		if got, want := following(t, db, k, time.Time{}), i >= 7; got != want {
			t.Errorf("thread %d followed = %v after the bound, want %v", i, got, want)
		}
	}
	if n := followedRows(t, db); n != 4 {
		t.Errorf("%d rows left, want 4 (3 Discord, 1 Slack)", n)
	}

	// Under the bound and nothing quiet: nothing goes.
	if n, err := db.ForgetThreads(ctx, "discord", t0, 3); err != nil || n != 0 {
		t.Errorf("ForgetThreads with nothing to forget = %d, %v; want 0, nil", n, err)
	}
}

// The read the adapters make for every thread message they may follow is
// a lookup of the primary key, and the prune walks the age index.
func TestFollowedThreadsQueryPlans(t *testing.T) {
	db, _ := open(t)
	var detail string
	var id, parent, notused int
	store.QueryRow(t, db, `EXPLAIN QUERY PLAN SELECT count(*) FROM followed_threads
		WHERE platform = 'slack' AND workspace = 'T1' AND channel = 'C1' AND thread = '1' AND user = 'U1' AND active_at >= 0`,
		nil, &id, &parent, &notused, &detail)
	if !strings.Contains(detail, "PRIMARY KEY") {
		t.Errorf("following reads with %q, want the primary key", detail)
	}
	store.QueryRow(t, db, `EXPLAIN QUERY PLAN DELETE FROM followed_threads WHERE platform = 'slack' AND active_at < 5`,
		nil, &id, &parent, &notused, &detail)
	if !strings.Contains(detail, "followed_threads_age") {
		t.Errorf("the prune deletes with %q, want the followed_threads_age index", detail)
	}
}
