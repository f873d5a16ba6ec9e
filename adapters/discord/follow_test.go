package discord

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

var _ FollowStore = (*store.DB)(nil)

// testClock is an adapter clock that moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// A thread the bot started on a mention is still followed by a new adapter
// on the same database, until it has been quiet for followQuiet; without a
// store it is forgotten at the restart.
func TestThreadFollowedAcrossRestart(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		follows  bool
		quiet    time.Duration // between the mention and the follow-up, across the restart
		followed bool
	}{
		{"within the quiet period", true, 23 * time.Hour, true},
		{"quiet for longer", true, followQuiet + time.Minute, false},
		{"without a store", false, time.Minute, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t)
			clock := newTestClock()
			o := options{
				config:      func(c *Config) { c.MessageContent = true },
				now:         clock.Now,
				fakeDiscord: f,
				dbPath:      filepath.Join(t.TempDir(), "talon.db"),
				follows:     c.follows,
			}
			before := run(t, o)
			before.guildWithChannel()
			before.f.dispatch("MESSAGE_CREATE", inGuild("41", channelID, "7", "<@100> plan a trip to Lisbon", true))
			before.replies(1)
			if th := f.threadsSnapshot(); len(th) != 1 || th[0].id != "41" {
				t.Fatalf("threads started = %v, want one on message 41", th)
			}
			before.stop()

			clock.advance(c.quiet)
			after := run(t, o)
			// On connecting, Discord sends the guild with its active
			// threads.
			f.dispatch("GUILD_CREATE", map[string]any{
				"id": guildID, "name": "g",
				"channels": []any{map[string]any{"id": channelID, "type": 0, "guild_id": guildID}},
				"threads":  []any{map[string]any{"id": "41", "type": 11, "parent_id": channelID, "guild_id": guildID}},
			})
			waitFor(t, "the thread in the gateway state", func() bool {
				ch, err := after.a.sess.State.Channel("41")
				return err == nil && ch != nil
			})
			// The follow-up without a mention, another user's message, then
			// a mention: events are handled in order, so once the mention
			// is answered the others have been handled too.
			f.dispatch("MESSAGE_CREATE", inGuild("42", "41", "7", "and back in June", false))
			f.dispatch("MESSAGE_CREATE", inGuild("43", "41", "8", "me too", false))
			f.dispatch("MESSAGE_CREATE", inGuild("44", "41", "7", "<@100> still there?", true))
			want := []string{"echo: plan a trip to Lisbon"}
			if c.followed {
				want = append(want, "echo: and back in June")
			}
			want = append(want, "echo: still there?")
			if diff := cmp.Diff(want, after.replies(len(want))); diff != "" {
				t.Fatalf("replies (-want +got):\n%s", diff)
			}
			for i, p := range f.postsSnapshot() {
				if p.channel != "41" {
					t.Errorf("reply %d posted in %s, want the thread 41", i+1, p.channel)
				}
			}
			if c.followed {
				// The follow-up moved the thread's time on.
				ok, err := after.db.FollowingThread(context.Background(), followKey("41", "7"), clock.Now())
				if err != nil || !ok {
					t.Errorf("followed now in the database = %v, %v; want true", ok, err)
				}
			}
		})
	}
}
