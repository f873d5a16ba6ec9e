package follow

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

const quiet = 24 * time.Hour

// clock moves only when told.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// fakeStore is a Store in memory that counts its calls.
type fakeStore struct {
	rows                  map[agent.SessionKey]time.Time
	reads, writes, prunes int
	err                   error
}

func (f *fakeStore) FollowThread(_ context.Context, key agent.SessionKey, at time.Time) error {
	f.writes++
	if f.err != nil {
		return f.err
	}
	f.rows[key] = at
	return nil
}

func (f *fakeStore) FollowingThread(_ context.Context, key agent.SessionKey, since time.Time) (bool, error) {
	f.reads++
	if f.err != nil {
		return false, f.err
	}
	at, ok := f.rows[key]
	return ok && !at.Before(since), nil
}

func (f *fakeStore) ForgetThreads(_ context.Context, _ string, before time.Time, _ int) (int, error) {
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

func key(thread string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    agent.Principal{Platform: "test", Workspace: "W1", User: "U1"},
		Conversation: agent.Conversation{Channel: "C1", Thread: thread},
	}
}

func newSet(st Store, c *clock, log zerolog.Logger) *Set {
	return &Set{Store: st, Platform: "test", Quiet: quiet, Max: 100, Now: c.Now, Log: log}
}

// The memory stands in front of the store: a thread followed in this
// process, or known not to be, is not read again; the store is pruned at
// most once per PruneEvery; expiry is evaluated on read.
func TestFollowingCachesTheStore(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	fs := &fakeStore{rows: map[agent.SessionKey]time.Time{}}
	s := newSet(fs, c, zerolog.Nop())
	ctx := context.Background()
	old, fresh, none := key("1"), key("2"), key("3")
	fs.rows[old] = c.Now() // from before a restart

	for range 3 {
		if !s.Following(ctx, old) {
			t.Fatal("a thread in the store is not followed")
		}
		if s.Following(ctx, none) {
			t.Fatal("a thread nobody follows is followed")
		}
	}
	if fs.reads != 4 {
		t.Errorf("%d reads, want 4 (3 for the thread only the store holds, 1 for the one nobody follows)", fs.reads)
	}

	fs.reads = 0
	s.Follow(ctx, fresh)
	s.Follow(ctx, none)
	c.advance(PruneEvery / 2)
	s.Follow(ctx, old)
	for _, k := range []agent.SessionKey{old, fresh, none} {
		if !s.Following(ctx, k) {
			t.Errorf("%s not followed after Follow", k)
		}
	}
	if fs.reads != 0 || fs.writes != 3 || fs.prunes != 1 {
		t.Errorf("reads, writes, prunes = %d, %d, %d; want 0, 3, 1", fs.reads, fs.writes, fs.prunes)
	}
	c.advance(PruneEvery / 2)
	s.Follow(ctx, fresh)
	if fs.prunes != 2 {
		t.Errorf("%d prunes after %s, want 2", fs.prunes, PruneEvery)
	}

	c.advance(quiet)
	if !s.Following(ctx, fresh) {
		t.Error("a thread active exactly a quiet period ago is not followed")
	}
	c.advance(time.Millisecond)
	if s.Following(ctx, fresh) || s.Following(ctx, old) {
		t.Error("a thread quiet for longer than the quiet period is followed")
	}
}

// Without a store the memory alone decides, with the same expiry.
func TestFollowingInMemory(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	s := newSet(nil, c, zerolog.Nop())
	ctx := context.Background()
	if s.Following(ctx, key("1")) {
		t.Fatal("followed before Follow")
	}
	s.Follow(ctx, key("1"))
	c.advance(quiet)
	if !s.Following(ctx, key("1")) {
		t.Error("not followed a quiet period later")
	}
	c.advance(time.Millisecond)
	if s.Following(ctx, key("1")) {
		t.Error("followed after the quiet period")
	}
}

// The memory is bounded: past Max, quiet threads are dropped.
func TestFollowingBounded(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	s := newSet(nil, c, zerolog.Nop())
	ctx := context.Background()
	for i := range 100 {
		s.Follow(ctx, key(string(rune('a'+i%26))+string(rune('a'+i/26))))
	}
	c.advance(quiet + time.Second)
	s.Follow(ctx, key("new"))
	s.mu.Lock()
	n := len(s.followed)
	s.mu.Unlock()
	if n != 1 {
		t.Errorf("%d threads in memory after the quiet ones were dropped, want 1", n)
	}

	// Active threads past Max: memory stays bounded, the newest is kept,
	// and the Store still answers for the others.
	fs := &fakeStore{rows: map[agent.SessionKey]time.Time{}}
	s = newSet(fs, c, zerolog.Nop())
	for i := range 150 {
		s.Follow(ctx, key(string(rune('a'+i%26))+string(rune('a'+i/26))))
	}
	s.mu.Lock()
	n = len(s.followed)
	s.mu.Unlock()
	if n > 100 {
		t.Errorf("%d threads in memory, want at most Max (100)", n)
	}
	last := key(string(rune('a'+149%26)) + string(rune('a'+149/26)))
	first := key("aa")
	if !s.Following(ctx, last) || !s.Following(ctx, first) {
		t.Error("a thread followed within the quiet period is not followed")
	}
}

// A store that fails is logged and counts as not followed; the memory still
// follows what this process saw.
func TestFollowingWithAFailingStore(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	fs := &fakeStore{rows: map[agent.SessionKey]time.Time{}, err: errors.New("disk I/O error")}
	var logs bytes.Buffer
	s := newSet(fs, c, zerolog.New(&logs))
	ctx := context.Background()
	if s.Following(ctx, key("1")) {
		t.Error("followed when the store cannot be read")
	}
	s.Follow(ctx, key("1"))
	if !s.Following(ctx, key("1")) {
		t.Error("not followed after Follow, with a store that cannot be written")
	}
	for _, want := range []string{"could not read the threads followed", "could not remember a thread followed"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not say %q:\n%s", want, logs.String())
		}
	}
}
