package store_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

type cursor struct {
	Workspace, Channel, LastID string
	At                         time.Time
}

func cursors(tb testing.TB, db *store.DB, platform string, limit int) []cursor {
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

func TestChannelCursors(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
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

func TestForgetChannelCursors(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
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
func TestChannelCursorsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db := openAt(t, path)
	if err := db.SaveChannelCursor(context.Background(), "discord", "", "400", "41", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, path)
	if diff := cmp.Diff([]cursor{{"", "400", "41", t0}}, cursors(t, db, "discord", 0)); diff != "" {
		t.Errorf("after reopening (-want +got):\n%s", diff)
	}
}
