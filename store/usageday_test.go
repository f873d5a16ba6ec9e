package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

// A settled day's value in usage_days decodes to the rows it was made of,
// in their order; a value cut short or with a byte changed out of range
// is refused, never read as other rows.
func TestUsageDayValue(t *testing.T) {
	at := time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)
	ids := []int64{1, 1, 300, 7}
	rows := []store.UsageRow{
		{Day: at, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m1", Calls: 2, InputTokens: 150, OutputTokens: 15},
		{Day: at, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m2", Calls: 1, InputTokens: 7, OutputTokens: 1},
		{Day: at, Platform: "discord", User: "42", Channel: "D9", Model: "m1", Server: "S1", Calls: 1, InputTokens: 1 << 40, OutputTokens: 0},
		// A step taken back (calls 1, then 0 kept out by the query, but
		// the encoding holds negative figures too).
		{Day: at, Platform: "slack", Workspace: "T2", User: "Ü", Channel: "C\x00", Model: "", Calls: -1, InputTokens: -5, OutputTokens: -1},
	}
	b := store.EncodeUsageDay(rows, ids)
	got, gotIDs, err := store.DecodeUsageDay(at, b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rows, got); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids, gotIDs); diff != "" {
		t.Errorf("decoded ids (-want +got):\n%s", diff)
	}
	if got, _, err := store.DecodeUsageDay(at, store.EncodeUsageDay(nil, nil)); err != nil || len(got) != 0 {
		t.Errorf("a day without rows: %v, %v", got, err)
	}
	// Summed without decoding, as summed from the decoded rows.
	const dayN, todayN = 20577, 20577
	want, got2 := map[int64]store.UserTotal{5: {ID: 5, User: "x", Month: 1, LastDay: 20500}}, map[int64]store.UserTotal{5: {ID: 5, User: "x", Month: 1, LastDay: 20500}}
	store.AddUsageDayTotals(want, dayN, todayN, rows, ids)
	if err := store.AddUsageDayValue(got2, dayN, todayN, b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got2); diff != "" {
		t.Errorf("AddUsageDayValue (-AddUsageDayTotals +got):\n%s", diff)
	}
	decode := func(b []byte) ([]store.UsageRow, error) {
		rows, _, err := store.DecodeUsageDay(at, b)
		return rows, err
	}
	for n := range len(b) {
		if _, err := decode(b[:n]); !errors.Is(err, store.ErrUsageDayValue) {
			t.Fatalf("cut to %d of %d bytes: %v, want store.ErrUsageDayValue", n, len(b), err)
		}
		if err := store.AddUsageDayValue(map[int64]store.UserTotal{}, dayN, todayN, b[:n]); !errors.Is(err, store.ErrUsageDayValue) {
			t.Fatalf("summed cut to %d of %d bytes: %v, want store.ErrUsageDayValue", n, len(b), err)
		}
	}
	if _, err := decode(append(b, 0)); !errors.Is(err, store.ErrUsageDayValue) {
		t.Errorf("a byte after the rows: %v, want store.ErrUsageDayValue", err)
	}
	bad := append([]byte{2}, b[1:]...)
	if _, err := decode(bad); !errors.Is(err, store.ErrUsageDayValue) {
		t.Errorf("another format: %v, want store.ErrUsageDayValue", err)
	}
}
