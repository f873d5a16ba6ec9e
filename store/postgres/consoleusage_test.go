package postgres

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
)

// A settled day's value in usage_days decodes to the rows it was made of,
// in their order; a value cut short or with a byte changed out of range
// is refused, never read as other rows.
func TestUsageDayValue(t *testing.T) {
	const day = 20580
	at := fromMS(day * dayMS)
	rows := []dayRow{
		{1, store.UsageRow{Day: at, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m1", Calls: 2, InputTokens: 150, OutputTokens: 15}},
		{1, store.UsageRow{Day: at, Platform: "slack", Workspace: "T1", User: "U1", Channel: "C1", Model: "m2", Calls: 1, InputTokens: 7, OutputTokens: 1}},
		{300, store.UsageRow{Day: at, Platform: "discord", User: "42", Channel: "D9", Model: "m1", Server: "S1", Calls: 1, InputTokens: 1 << 40, OutputTokens: 0}},
		// A step taken back (calls 1, then 0 kept out by the query, but
		// the encoding holds negative figures too).
		{7, store.UsageRow{Day: at, Platform: "slack", Workspace: "T2", User: "Ü", Channel: "C\x00", Model: "", Calls: -1, InputTokens: -5, OutputTokens: -1}},
	}
	b := encodeDay(rows)
	got, err := decodeDay(day, b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rows, got, cmp.AllowUnexported(dayRow{})); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
	if got, err := decodeDay(day, encodeDay(nil)); err != nil || len(got) != 0 {
		t.Errorf("a day without rows: %v, %v", got, err)
	}
	for n := range len(b) {
		if _, err := decodeDay(day, b[:n]); !errors.Is(err, errDayValue) {
			t.Fatalf("cut to %d of %d bytes: %v, want errDayValue", n, len(b), err)
		}
	}
	if _, err := decodeDay(day, append(b, 0)); !errors.Is(err, errDayValue) {
		t.Errorf("a byte after the rows: %v, want errDayValue", err)
	}
	bad := append([]byte{2}, b[1:]...)
	if _, err := decodeDay(day, bad); !errors.Is(err, errDayValue) {
		t.Errorf("another format: %v, want errDayValue", err)
	}
}
