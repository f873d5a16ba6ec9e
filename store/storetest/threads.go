package storetest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

var threadTests = []test{
	{"FollowThread", testFollowThread},
	{"FollowedThreadsSurviveReopen", testFollowedThreadsSurviveReopen},
	{"ForgetThreads", testForgetThreads},
	{"ChannelCursors", testChannelCursors},
	{"ForgetChannelCursors", testForgetChannelCursors},
	{"ChannelCursorsSurviveReopen", testChannelCursorsSurviveReopen},
}

// discordThread is a Discord thread (a channel of its own) followed for a
// user.
func discordThread(guild, thread, user string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    agent.Principal{Platform: "discord", Workspace: guild, User: user},
		Conversation: agent.Conversation{Channel: thread},
	}
}

func following(tb testing.TB, db Store, key agent.SessionKey, since time.Time) bool {
	tb.Helper()
	ok, err := db.FollowingThread(context.Background(), key, since)
	if err != nil {
		tb.Fatal(err)
	}
	return ok
}

func testFollowThread(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	if n := e.count(t, "followed_threads"); n != 1 {
		t.Errorf("%d rows for one thread followed three times, want 1", n)
	}

	// A zero time is the clock's.
	if err := db.FollowThread(ctx, bob, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !following(t, db, bob, t0) || following(t, db, bob, t0.Add(time.Millisecond)) {
		t.Error("a zero time is not recorded as the clock's time")
	}

	if err := db.FollowThread(ctx, agent.SessionKey{Principal: agent.Principal{Platform: "slack", User: "U1"}}, t0); err == nil {
		t.Error("follow without a channel succeeded")
	}
}

func testFollowedThreadsSurviveReopen(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	th := discordThread("300", "41", "7")
	if err := db.FollowThread(ctx, alice, t0); err != nil {
		t.Fatal(err)
	}
	if err := db.FollowThread(ctx, th, t0); err != nil {
		t.Fatal(err)
	}
	db = e.reopen(t)
	for _, k := range []agent.SessionKey{alice, th} {
		if !following(t, db, k, t0.Add(-time.Hour)) {
			t.Errorf("%s not followed after reopening", k)
		}
	}
	if following(t, db, bob, t0.Add(-time.Hour)) {
		t.Error("a thread never followed is followed after reopening")
	}
}

func testForgetThreads(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
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
	if n := e.count(t, "followed_threads"); n != 4 {
		t.Errorf("%d rows left, want 4 (3 Discord, 1 Slack)", n)
	}

	// Under the bound and nothing quiet: nothing goes.
	if n, err := db.ForgetThreads(ctx, "discord", t0, 3); err != nil || n != 0 {
		t.Errorf("ForgetThreads with nothing to forget = %d, %v; want 0, nil", n, err)
	}
}

type cursor struct {
	Workspace, Channel, LastID string
	At                         time.Time
}

func cursors(tb testing.TB, db Store, platform string, limit int) []cursor {
	tb.Helper()
	var out []cursor
	err := db.ChannelCursors(context.Background(), platform, limit, func(workspace, channel, lastID string, at time.Time) {
		out = append(out, cursor{workspace, channel, lastID, at})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func testChannelCursors(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	if got := cursors(t, db, "discord", 0); len(got) != 0 {
		t.Fatalf("cursors of an empty store = %v", got)
	}
	save := func(workspace, channel, id string, at time.Time) {
		t.Helper()
		if err := db.SaveChannelCursor(ctx, "discord", workspace, channel, id, at); err != nil {
			t.Fatal(err)
		}
	}
	save("300", "500", "1000000000000000041", t0)
	save("", "400", "99", t0.Add(time.Minute)) // a DM
	// Forward only: a newer id (longer, or same length and greater) and
	// a later time move it; an older id or time does not.
	save("300", "500", "1000000000000000042", t0.Add(2*time.Minute))
	save("300", "500", "999999999999999999", t0.Add(time.Minute)) // shorter: older
	save("300", "500", "1000000000000000040", t0.Add(time.Minute))
	// Another platform's channel of the same id is another row.
	if err := db.SaveChannelCursor(ctx, "slack", "T1", "500", "1700000000.000100", t0); err != nil {
		t.Fatal(err)
	}

	want := []cursor{
		{"300", "500", "1000000000000000042", t0.Add(2 * time.Minute)},
		{"", "400", "99", t0.Add(time.Minute)},
	}
	if diff := cmp.Diff(want, cursors(t, db, "discord", 0)); diff != "" {
		t.Errorf("cursors, newest first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[:1], cursors(t, db, "discord", 1)); diff != "" {
		t.Errorf("cursors, limit 1 (-want +got):\n%s", diff)
	}
	if got := cursors(t, db, "slack", 0); len(got) != 1 || got[0].LastID != "1700000000.000100" {
		t.Errorf("slack cursors = %v", got)
	}

	for _, bad := range [][3]string{{"", "1", "2"}, {"discord", "", "2"}, {"discord", "1", ""}} {
		if err := db.SaveChannelCursor(ctx, bad[0], "", bad[1], bad[2], t0); err == nil {
			t.Errorf("SaveChannelCursor(%q) succeeded", bad)
		}
	}
}

func testForgetChannelCursors(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	// Ten channels, one a minute (channel i active at t0 + i min), and
	// one of another platform.
	for i := range 10 {
		if err := db.SaveChannelCursor(ctx, "discord", "300", strconv.Itoa(500+i), "42", t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SaveChannelCursor(ctx, "slack", "T1", "C1", "1.0", t0); err != nil {
		t.Fatal(err)
	}
	// Active before t0 + 2 min: channels 0 and 1 go; then only the 5
	// most recent stay.
	n, err := db.ForgetChannelCursors(ctx, "discord", t0.Add(2*time.Minute), 5)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("forgot %d, want 5", n)
	}
	var got []string
	for _, c := range cursors(t, db, "discord", 0) {
		got = append(got, c.Channel)
	}
	if diff := cmp.Diff([]string{"509", "508", "507", "506", "505"}, got); diff != "" {
		t.Errorf("channels kept (-want +got):\n%s", diff)
	}
	if len(cursors(t, db, "slack", 0)) != 1 {
		t.Error("another platform's cursor was forgotten")
	}
}

// The cursors survive closing and opening the database: they are what a
// restart reads back.
func testChannelCursorsSurviveReopen(t *testing.T, e *env) {
	if err := e.db.SaveChannelCursor(context.Background(), "discord", "", "400", "41", t0); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]cursor{{"", "400", "41", t0}}, cursors(t, e.reopen(t), "discord", 0)); diff != "" {
		t.Errorf("after reopening (-want +got):\n%s", diff)
	}
}
