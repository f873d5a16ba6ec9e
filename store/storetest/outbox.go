package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

var outboxTests = []test{
	{"Outbox", testOutbox},
	{"UndeliveredSurvivesARestart", testUndeliveredSurvivesARestart},
	{"OutboxRecordsPostedParts", testOutboxRecordsPostedParts},
}

// replies finishes n inbound messages of alice without a turn and returns
// their replies as Undelivered lists them.
func replies(tb testing.TB, db Store, n int) []agent.Reply {
	tb.Helper()
	ctx := context.Background()
	for i := range n {
		q := accept(tb, db, inbound(fmt.Sprintf("r%d", i), alice))
		if _, err := db.FinishTurn(ctx, q.ID, 0, agent.TurnDone, agent.Reply{Key: alice, Kind: agent.ReplyNotice, Text: fmt.Sprint(i)}, nil); err != nil {
			tb.Fatal(err)
		}
	}
	rs, err := db.Undelivered(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}

type replyRow struct {
	State, PlatformID, Reason string
	Attempts                  int64
	DeliveredAt               *int64
}

func (e *env) readReply(tb testing.TB, id agent.ReplyID) replyRow {
	tb.Helper()
	var r replyRow
	e.query(tb, "SELECT state, platform_id, reason, attempts, delivered_at FROM outbound WHERE id = ?",
		[]any{int64(id)}, &r.State, &r.PlatformID, &r.Reason, &r.Attempts, &r.DeliveredAt)
	return r
}

func testOutbox(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	rs := replies(t, db, 3)
	if len(rs) != 3 {
		t.Fatalf("%d undelivered replies, want 3", len(rs))
	}
	for i, r := range rs {
		if r.Text != fmt.Sprint(i) {
			t.Errorf("reply %d is %q: not oldest first", i, r.Text)
		}
	}

	if err := db.MarkDelivered(ctx, rs[1].ID, "1700.5"); err != nil {
		t.Fatal(err)
	}
	// A second delivery report changes nothing.
	e.clk.set(t0.Add(time.Hour))
	if err := db.MarkDelivered(ctx, rs[1].ID, "other"); err != nil {
		t.Errorf("second MarkDelivered: %v", err)
	}
	ms := t0.UnixMilli()
	if diff := cmp.Diff(replyRow{State: "delivered", PlatformID: "1700.5", Attempts: 1, DeliveredAt: &ms}, e.readReply(t, rs[1].ID)); diff != "" {
		t.Errorf("delivered reply (-want +got):\n%s", diff)
	}

	if err := db.MarkFailed(ctx, rs[2].ID, "channel gone"); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkFailed(ctx, rs[2].ID, "again"); err != nil {
		t.Errorf("second MarkFailed: %v", err)
	}
	if diff := cmp.Diff(replyRow{State: "failed", Reason: "channel gone", Attempts: 1}, e.readReply(t, rs[2].ID)); diff != "" {
		t.Errorf("failed reply (-want +got):\n%s", diff)
	}
	// A failure reported after the delivery leaves it delivered.
	if err := db.MarkFailed(ctx, rs[1].ID, "late"); err != nil {
		t.Errorf("MarkFailed of a delivered reply: %v", err)
	}
	if got := e.readReply(t, rs[1].ID).State; got != "delivered" {
		t.Errorf("delivered reply marked failed is %s", got)
	}

	got, err := db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rs[:1], got); diff != "" {
		t.Errorf("Undelivered (-want +got):\n%s", diff)
	}

	unknown := rs[2].ID + 100
	if err := db.MarkDelivered(ctx, unknown, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkDelivered of an unknown reply: got %v, want ErrNotFound", err)
	}
	if err := db.MarkFailed(ctx, unknown, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkFailed of an unknown reply: got %v, want ErrNotFound", err)
	}
}

func testUndeliveredSurvivesARestart(t *testing.T, e *env) {
	ctx := context.Background()
	rs := replies(t, e.db, 2)
	got, err := e.reopen(t).Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rs, got); diff != "" {
		t.Errorf("Undelivered after reopening (-want +got):\n%s", diff)
	}
}

// The parts of a reply recorded as posted come back with it from
// Undelivered, in order, across a restart; a preview recorded for its
// inbound is its part 0 until part 0 itself is recorded; a delivered reply
// is no longer listed.
func testOutboxRecordsPostedParts(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	rs := replies(t, db, 3)
	for _, p := range []agent.PostedPart{{N: 1, PlatformID: "m2"}, {N: 0, PlatformID: "m1"}, {N: 1, PlatformID: "m2b"}} {
		if err := db.RecordPart(ctx, rs[0].ID, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.RecordPreview(ctx, rs[1].Inbound, "preview-1"); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPreview(ctx, rs[2].Inbound, "preview-2"); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPart(ctx, rs[2].ID, agent.PostedPart{N: 0, PlatformID: "preview-2"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPart(ctx, rs[2].ID, agent.PostedPart{N: 1, PlatformID: "m3"}); err != nil {
		t.Fatal(err)
	}
	db = e.reopen(t)

	got, err := db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]agent.PostedPart{
		{{N: 0, PlatformID: "m1"}, {N: 1, PlatformID: "m2b"}},
		{{N: 0, PlatformID: "preview-1", Preview: true}},
		{{N: 0, PlatformID: "preview-2"}, {N: 1, PlatformID: "m3"}},
	}
	if len(got) != 3 {
		t.Fatalf("%d undelivered replies, want 3", len(got))
	}
	for i, r := range got {
		if diff := cmp.Diff(want[i], r.Posted); diff != "" {
			t.Errorf("reply %d's posted parts (-want +got):\n%s", i, diff)
		}
	}

	if err := db.MarkDelivered(ctx, rs[0].ID, "m1"); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Undelivered(ctx); err != nil || len(got) != 2 || got[0].ID != rs[1].ID {
		t.Errorf("Undelivered after a delivery: %v, %v; want the other two", got, err)
	}

	if err := db.RecordPart(ctx, rs[2].ID+100, agent.PostedPart{N: 0, PlatformID: "x"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordPart of an unknown reply: %v, want ErrNotFound", err)
	}
	if err := db.RecordPreview(ctx, rs[2].Inbound+100, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordPreview of an unknown inbound: %v, want ErrNotFound", err)
	}
	if err := db.RecordPart(ctx, rs[1].ID, agent.PostedPart{N: -1}); err == nil {
		t.Error("a negative part number was recorded")
	}
}
