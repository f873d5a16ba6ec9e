package slack

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

var _ FollowStore = (*store.DB)(nil)

// A thread followed before a restart is still followed by the new adapter
// on the same database, until it has been quiet for followQuiet.
func TestSocketThreadFollowedAcrossRestart(t *testing.T) {
	cases := []struct {
		name     string
		quiet    time.Duration // between the mention and the follow-up, across the restart
		followed bool
	}{
		{"within the quiet period", 6 * 24 * time.Hour, true},
		{"quiet for longer", followQuiet + time.Minute, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "talon.db")
			clock := newFakeClock(0)
			withClock := func(a *Adapter) { a.Now, a.Sleep = clock.Now, clock.Sleep }

			before := startHarness(t, harnessOptions{mode: ModeSocket, dbPath: path, follows: true, tweak: withClock})
			before.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "2.000100", "", "<@UBOT> what is up?")))
			before.fs.waitAcks(t, "e1")
			before.idle(t)
			if diff := cmp.Diff([]posted{{Channel: "C1", Thread: "2.000100", Text: "echo: what is up?"}}, replies(before.fs)); diff != "" {
				t.Fatalf("replies before the restart (-want +got):\n%s", diff)
			}
			before.stop()

			clock.Sleep(context.Background(), c.quiet)
			after := startHarness(t, harnessOptions{mode: ModeSocket, dbPath: path, follows: true, tweak: withClock})
			// The follow-up, without a mention; another user's message in
			// the thread starts nothing either way.
			after.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("message", "U1", "2.000200", "2.000100", "and then?")))
			after.fs.send(eventsEnvelope("e3", "Ev3", channelMsg("message", "U2", "2.000300", "2.000100", "me too")))
			after.fs.waitAcks(t, "e2", "e3")
			after.idle(t)
			var want []posted
			if c.followed {
				want = []posted{{Channel: "C1", Thread: "2.000100", Text: "echo: and then?"}}
			}
			if diff := cmp.Diff(want, replies(after.fs)); diff != "" {
				t.Errorf("replies after the restart (-want +got):\n%s", diff)
			}

			// The follow-up moved the thread's time on; a thread quiet for
			// too long stays forgotten.
			key := agent.SessionKey{
				Principal:    agent.Principal{Platform: Platform, Workspace: team, User: "U1"},
				Conversation: agent.Conversation{Channel: "C1", Thread: "2.000100"},
			}
			got, err := after.db.FollowingThread(context.Background(), key, clock.peek())
			if err != nil {
				t.Fatal(err)
			}
			if got != c.followed {
				t.Errorf("followed now in the database = %v, want %v", got, c.followed)
			}
		})
	}
}

// Without Follows the threads followed are known in memory only: a new
// adapter needs a new mention.
func TestSocketThreadForgottenAcrossRestartWithoutStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talon.db")
	before := startHarness(t, harnessOptions{mode: ModeSocket, dbPath: path})
	before.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "2.000100", "", "<@UBOT> what is up?")))
	before.fs.waitAcks(t, "e1")
	before.idle(t)
	before.stop()

	after := startHarness(t, harnessOptions{mode: ModeSocket, dbPath: path})
	after.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("message", "U1", "2.000200", "2.000100", "and then?")))
	after.fs.waitAcks(t, "e2")
	after.idle(t)
	if got := replies(after.fs); len(got) != 0 {
		t.Errorf("replies after the restart = %v, want none", got)
	}
	key := followKey(callback{TeamID: team}, "C1", "2.000100", "U1")
	if ok, err := after.db.FollowingThread(context.Background(), key, time.Time{}); err != nil || ok {
		t.Errorf("thread in the database without Follows: %v, %v; want false, nil", ok, err)
	}
}

// unitConfig is a valid configuration for an adapter that is not run.
func unitConfig() Config {
	c := DefaultConfig()
	c.BotToken, c.AppToken, c.AllowedTeams = "xoxb-test", "xapp-test", []string{team}
	return c
}

// countingFollows is a FollowStore in memory that counts its calls.
type countingFollows struct {
	rows    map[agent.SessionKey]time.Time
	reads   int
	writes  int
	prunes  int
	failing error
}

func (f *countingFollows) FollowThread(_ context.Context, key agent.SessionKey, at time.Time) error {
	f.writes++
	if f.failing != nil {
		return f.failing
	}
	f.rows[key] = at
	return nil
}

func (f *countingFollows) FollowingThread(_ context.Context, key agent.SessionKey, since time.Time) (bool, error) {
	f.reads++
	if f.failing != nil {
		return false, f.failing
	}
	at, ok := f.rows[key]
	return ok && !at.Before(since), nil
}

func (f *countingFollows) ForgetThreads(_ context.Context, _ string, before time.Time, _ int) (int, error) {
	f.prunes++
	n := 0
	for k, at := range f.rows {
		if at.Before(before) {
			delete(f.rows, k)
			n++
		}
	}
	return n, nil
}

// The memory stands in front of the store: a thread followed in this
// process, or known not to be, is not read again; the store is pruned at
// most once per followPruneEvery.
func TestFollowingCachesTheStore(t *testing.T) {
	clock := newFakeClock(0)
	fs := &countingFollows{rows: map[agent.SessionKey]time.Time{}}
	a := &Adapter{Config: unitConfig(), Follows: fs, Now: clock.Now}
	if err := a.setup(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cb := callback{TeamID: team}
	old := followKey(cb, "C1", "1.000100", "U1")
	fresh := followKey(cb, "C1", "2.000100", "U1")
	none := followKey(cb, "C1", "3.000100", "U1")
	fs.rows[old] = clock.peek() // from before a restart

	for range 3 {
		if !a.following(ctx, old) {
			t.Fatal("a thread in the store is not followed")
		}
	}
	if fs.reads != 3 {
		t.Errorf("%d reads for a thread only the store holds, want 3 (it is cached once followed again)", fs.reads)
	}
	fs.reads = 0
	for range 3 {
		if a.following(ctx, none) {
			t.Fatal("a thread nobody follows is followed")
		}
	}
	if fs.reads != 1 {
		t.Errorf("%d reads for a thread nobody follows, want 1", fs.reads)
	}

	fs.reads = 0
	a.follow(ctx, fresh)
	a.follow(ctx, none)
	clock.Sleep(ctx, followPruneEvery/2)
	a.follow(ctx, old)
	for _, k := range []agent.SessionKey{old, fresh, none} {
		if !a.following(ctx, k) {
			t.Errorf("%s not followed after follow", k)
		}
	}
	if fs.reads != 0 || fs.writes != 3 || fs.prunes != 1 {
		t.Errorf("reads, writes, prunes = %d, %d, %d; want 0, 3, 1", fs.reads, fs.writes, fs.prunes)
	}
	clock.Sleep(ctx, followPruneEvery/2)
	a.follow(ctx, fresh)
	if fs.prunes != 2 {
		t.Errorf("%d prunes after %s, want 2", fs.prunes, followPruneEvery)
	}

	// Expiry is evaluated on read, in memory as in the store.
	clock.Sleep(ctx, followQuiet)
	if !a.following(ctx, fresh) {
		t.Error("a thread active exactly a quiet period ago is not followed")
	}
	clock.Sleep(ctx, time.Millisecond)
	if a.following(ctx, fresh) || a.following(ctx, old) {
		t.Error("a thread quiet for longer than the quiet period is followed")
	}
}

// A store that fails is logged and counts as not followed; the memory still
// follows what this process saw.
func TestFollowingWithAFailingStore(t *testing.T) {
	fs := &countingFollows{rows: map[agent.SessionKey]time.Time{}, failing: context.DeadlineExceeded}
	logs := &syncBuffer{}
	a := &Adapter{Config: unitConfig(), Follows: fs, Log: zerolog.New(logs)}
	if err := a.setup(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := followKey(callback{TeamID: team}, "C1", "1.000100", "U1")
	if a.following(ctx, k) {
		t.Error("followed when the store cannot be read")
	}
	a.follow(ctx, k)
	if !a.following(ctx, k) {
		t.Error("not followed after follow, with a store that cannot be written")
	}
	for _, want := range []string{"could not read the threads followed", "could not remember a thread followed"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not say %q:\n%s", want, logs.String())
		}
	}
}
