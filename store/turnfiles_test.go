package store_test

import (
	"context"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// A turn's files are listed in the order recorded, a call's file recorded
// again replaces it, they survive reopening, and a file for an unknown
// turn or without a hash is refused.
func TestTurnFiles(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	q := accept(t, db, inbound("1", alice))
	turn, _ := startTurn(t, db, q.ID, nil)
	for _, f := range []agent.TurnFile{
		{CallID: "c1", Name: "a.csv", MediaType: "text/csv", Hash: "h1", Size: 3},
		{CallID: "c2", Name: "b.png", Hash: "h2", Size: 5},
		{CallID: "c1", Name: "a.csv", MediaType: "text/csv", Hash: "h3", Size: 4}, // c1 ran again
	} {
		if err := db.RecordTurnFile(ctx, turn, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.RecordTurnFile(ctx, agent.TurnID(9999), agent.TurnFile{CallID: "c", Name: "x", Hash: "h", Size: 1}); err == nil {
		t.Error("a file of an unknown turn was recorded")
	}
	if err := db.RecordTurnFile(ctx, turn, agent.TurnFile{CallID: "c", Name: "x"}); err == nil {
		t.Error("a file without a hash was recorded")
	}
	db.Close()
	db2, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	got, err := db2.TurnFiles(ctx, turn)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("files %+v, want 2", got)
	}
	byCall := map[string]agent.TurnFile{got[0].CallID: got[0], got[1].CallID: got[1]}
	if byCall["c1"].Hash != "h3" || byCall["c1"].Size != 4 || byCall["c2"].Name != "b.png" {
		t.Errorf("files %+v", got)
	}
	if other, err := db2.TurnFiles(ctx, agent.TurnID(9999)); err != nil || len(other) != 0 {
		t.Errorf("files of an unknown turn: %v, %v", other, err)
	}
}
