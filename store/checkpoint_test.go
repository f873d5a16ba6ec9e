package store_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/talonhq/talon/store"
)

// TestCheckpointsOffTheWriter checks that committed pages reach the database
// file without the writer's automatic checkpoint (whose threshold these few
// writes stay far below): the checkpointer copies them on its own.
func TestCheckpointsOffTheWriter(t *testing.T) {
	db, path := open(t)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	if n := store.CheckpointerConnections(db); n != 0 {
		t.Errorf("checkpointer has %d connections before any write, want 0 (it connects on its first checkpoint)", n)
	}
	for i := range 20 {
		accept(t, db, inbound(fmt.Sprint(i), alice))
	}
	deadline := time.Now().Add(10 * time.Second)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes 10 s after the writes: nothing was checkpointed", before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := store.CheckpointerConnections(db); n != 1 {
		t.Errorf("checkpointer has %d connections after checkpointing, want 1", n)
	}
}
