package slack

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
	key := after.ad.followKey(callback{TeamID: team}, "C1", "2.000100", "", "U1")
	if ok, err := after.db.FollowingThread(context.Background(), key, time.Time{}); err != nil || ok {
		t.Errorf("thread in the database without Follows: %v, %v; want false, nil", ok, err)
	}
}
