package discord

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
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
				ok, err := after.db.FollowingThread(context.Background(), followKey(guildID, "41", "7"), clock.Now())
				if err != nil || !ok {
					t.Errorf("followed now in the database = %v, %v; want true", ok, err)
				}
			}
		})
	}
}

// fakeFollows is a FollowStore in memory that counts its calls.
type fakeFollows struct {
	rows                  map[agent.SessionKey]time.Time
	reads, writes, prunes int
	err                   error
}

func (f *fakeFollows) FollowThread(_ context.Context, key agent.SessionKey, at time.Time) error {
	f.writes++
	if f.err != nil {
		return f.err
	}
	f.rows[key] = at
	return nil
}

func (f *fakeFollows) FollowingThread(_ context.Context, key agent.SessionKey, since time.Time) (bool, error) {
	f.reads++
	if f.err != nil {
		return false, f.err
	}
	at, ok := f.rows[key]
	return ok && !at.Before(since), nil
}

func (f *fakeFollows) ForgetThreads(_ context.Context, _ string, before time.Time, _ int) (int, error) {
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
// most once per followPruneEvery; expiry is evaluated on read.
func TestFollowingCachesTheStore(t *testing.T) {
	clock := newTestClock()
	fs := &fakeFollows{rows: map[agent.SessionKey]time.Time{}}
	a := &Adapter{Follows: fs, Now: clock.Now}
	a.init()
	ctx := context.Background()
	old, fresh, none := followKey(guildID, "41", "7"), followKey(guildID, "42", "7"), followKey(guildID, "43", "7")
	fs.rows[old] = clock.Now() // from before a restart

	for range 3 {
		if !a.following(ctx, old) {
			t.Fatal("a thread in the store is not followed")
		}
		if a.following(ctx, none) {
			t.Fatal("a thread nobody follows is followed")
		}
	}
	if fs.reads != 4 {
		t.Errorf("%d reads, want 4 (3 for the thread only the store holds, 1 for the one nobody follows)", fs.reads)
	}

	fs.reads = 0
	a.follow(ctx, fresh)
	a.follow(ctx, none)
	clock.advance(followPruneEvery / 2)
	a.follow(ctx, old)
	for _, k := range []agent.SessionKey{old, fresh, none} {
		if !a.following(ctx, k) {
			t.Errorf("%s not followed after follow", k)
		}
	}
	if fs.reads != 0 || fs.writes != 3 || fs.prunes != 1 {
		t.Errorf("reads, writes, prunes = %d, %d, %d; want 0, 3, 1", fs.reads, fs.writes, fs.prunes)
	}
	clock.advance(followPruneEvery / 2)
	a.follow(ctx, fresh)
	if fs.prunes != 2 {
		t.Errorf("%d prunes after %s, want 2", fs.prunes, followPruneEvery)
	}

	clock.advance(followQuiet)
	if !a.following(ctx, fresh) {
		t.Error("a thread active exactly a quiet period ago is not followed")
	}
	clock.advance(time.Millisecond)
	if a.following(ctx, fresh) || a.following(ctx, old) {
		t.Error("a thread quiet for longer than the quiet period is followed")
	}
}

// Without a store the memory alone decides, with the same expiry.
func TestFollowingInMemory(t *testing.T) {
	clock := newTestClock()
	a := &Adapter{Now: clock.Now}
	a.init()
	ctx := context.Background()
	k := followKey(guildID, "41", "7")
	if a.following(ctx, k) {
		t.Fatal("followed before follow")
	}
	a.follow(ctx, k)
	clock.advance(followQuiet)
	if !a.following(ctx, k) {
		t.Error("not followed a quiet period later")
	}
	clock.advance(time.Millisecond)
	if a.following(ctx, k) {
		t.Error("followed after the quiet period")
	}
}

// A store that fails is logged and counts as not followed; the memory still
// follows what this process saw.
func TestFollowingWithAFailingStore(t *testing.T) {
	fs := &fakeFollows{rows: map[agent.SessionKey]time.Time{}, err: errors.New("disk I/O error")}
	logs := &syncBuffer{}
	a := &Adapter{Follows: fs, Log: zerolog.New(logs)}
	a.init()
	ctx := context.Background()
	k := followKey(guildID, "41", "7")
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
