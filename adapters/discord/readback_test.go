package discord

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

var _ CursorStore = (*store.DB)(nil)

// at is t as a message timestamp.
func at(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Messages sent while Talon was stopped are answered after the next start,
// once each: the channels seen before the stop are remembered in the
// database and read back at the first READY, a message older than the
// backfill window is not answered, and one that also arrives from the
// gateway gives one turn.
func TestMessagesSentWhileStoppedAnsweredAfterRestart(t *testing.T) {
	f := newFake(t)
	clock := newTestClock()
	t0 := clock.Now()
	o := options{fakeDiscord: f, now: clock.Now, cursors: true, dbPath: filepath.Join(t.TempDir(), "t.db")}
	e := start(t, o)
	dm := dmFrom("1000041", "7", "hello")
	dm.Timestamp = at(t0)
	e.f.dispatch("MESSAGE_CREATE", dm)
	guild := inGuild("1000051", channelID, "7", "<@100> hi there", true)
	guild.Timestamp = at(t0)
	e.f.dispatch("MESSAGE_CREATE", guild)
	e.replies(2)
	e.stop()

	// While Talon is stopped: a message that will be older than the window
	// at the next start, and fresh ones, in the DM and in the channel.
	stale := dmFrom("1000042", "7", "stale")
	stale.Timestamp = at(t0.Add(5 * time.Minute))
	fresh := dmFrom("1000043", "7", "fresh")
	fresh.Timestamp = at(t0.Add(90 * time.Minute))
	inChannel := inGuild("1000052", channelID, "8", "<@100> fresh in the channel", true)
	inChannel.Timestamp = at(t0.Add(95 * time.Minute))
	notForUs := inGuild("1000053", channelID, "8", "chatter without a mention", false)
	notForUs.Timestamp = at(t0.Add(96 * time.Minute))
	f.mu.Lock()
	f.history[dmChannel] = []msg{dm, stale, fresh}
	f.history[channelID] = []msg{guild, inChannel, notForUs}
	f.mu.Unlock()
	clock.advance(100 * time.Minute) // the window is 1 h: stale is 95 min old

	e = run(t, o)
	// The gateway delivers one of them too.
	e.f.dispatch("MESSAGE_CREATE", fresh)
	waitFor(t, "both channels read back", func() bool {
		return strings.Count(e.logs.String(), "channel read back after a gap") == 2
	})
	got := e.replies(4)
	slices.Sort(got)
	want := []string{"echo: fresh", "echo: fresh in the channel", "echo: hello", "echo: hi there"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies across the restart (-want +got):\n%s", diff)
	}

	// The cursors moved past what was read back, and were saved when the
	// adapter stopped: a later start reads only what is newer.
	e.stop()
	db, err := store.Open(t.Context(), o.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var cursors []string
	if err := db.ChannelCursors(t.Context(), Platform, 0, func(_, channel, lastID string, _ time.Time) {
		cursors = append(cursors, channel+"@"+lastID)
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(cursors)
	if diff := cmp.Diff([]string{dmChannel + "@1000043", channelID + "@1000053"}, cursors); diff != "" {
		t.Errorf("cursors saved (-want +got):\n%s", diff)
	}
}

// Without a store, a restart reads nothing back: the first READY of a
// process has no channels to read (the in-memory behaviour, kept when
// Cursors is nil).
func TestNoCursorsNoReadBackAtStart(t *testing.T) {
	f := newFake(t)
	o := options{fakeDiscord: f, dbPath: filepath.Join(t.TempDir(), "t.db")}
	e := start(t, o)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hello"))
	e.replies(1)
	e.stop()
	f.mu.Lock()
	f.history[dmChannel] = []msg{dmFrom("41", "7", "hello"), dmFrom("42", "7", "missed")}
	f.mu.Unlock()
	e = run(t, o)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("43", "7", "live"))
	got := e.replies(2)
	if diff := cmp.Diff([]string{"echo: hello", "echo: live"}, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestMessageTime(t *testing.T) {
	t.Parallel()
	// 175928847299117063 is Discord's documented example: 2016-04-30
	// 11:18:25.796 UTC.
	m := &discordgo.Message{ID: "175928847299117063"}
	if got, want := messageTime(m), time.Date(2016, 4, 30, 11, 18, 25, 796e6, time.UTC); !got.Equal(want) {
		t.Errorf("time of %s = %v, want %v", m.ID, got, want)
	}
	ts := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	m.Timestamp = ts
	if got := messageTime(m); !got.Equal(ts) {
		t.Errorf("with a timestamp: %v, want %v", got, ts)
	}
	if got := snowflakeTime("not a number"); !got.IsZero() {
		t.Errorf("time of a bad id = %v", got)
	}
}

// With allowed_roles, a message read back after a gap is judged by its
// author's roles like one from the gateway, although Discord's REST
// messages carry no member: a role holder's message is answered, not
// silently refused and lost; one without the role is still refused, and
// each author's roles are asked for once per read back.
func TestReadBackKnowsAllowedRoles(t *testing.T) {
	e := start(t, options{config: func(c *Config) { c.AllowedRoles = []string{"900"} }})
	first := inGuild("1000051", channelID, "7", "<@100> hi", true)
	first.Member = &struct {
		Roles []string `json:"roles"`
	}{Roles: []string{"900"}}
	e.f.dispatch("MESSAGE_CREATE", first)
	e.replies(1)

	// Missed while the connection was down: REST messages have no member.
	e.f.mu.Lock()
	e.f.members["8"] = []string{"900"}
	e.f.members["9"] = []string{"901"}
	e.f.history[channelID] = []msg{
		first,
		inGuild("1000052", channelID, "8", "<@100> from a role holder", true),
		inGuild("1000053", channelID, "9", "<@100> from someone without the role", true),
		inGuild("1000054", channelID, "8", "<@100> again from the role holder", true),
	}
	e.f.mu.Unlock()
	e.f.sendOp(7, nil)
	waitFor(t, "the channel read back", func() bool {
		return strings.Contains(e.logs.String(), "channel read back after a gap")
	})
	got := e.replies(3)
	slices.Sort(got)
	want := []string{"echo: again from the role holder", "echo: from a role holder", "echo: hi"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	e.f.mu.Lock()
	gets := e.f.memberGets
	e.f.mu.Unlock()
	if gets != 2 {
		t.Errorf("%d member look-ups, want 2 (one per author)", gets)
	}
}
