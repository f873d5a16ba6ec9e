package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/talonhq/talon/agent"
)

// BenchmarkTurnFiles times the read of a reply's files that every
// delivery makes, for a turn without files (most): prepared (TurnFiles)
// and, in the same run, the same query prepared at each call as it was
// before.
//
//	go test ./store -run '^$' -bench TurnFiles -count 4
func BenchmarkTurnFiles(b *testing.B) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "talon.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const turn = agent.TurnID(1)
	b.Run("prepared", func(b *testing.B) {
		for b.Loop() {
			if files, err := db.TurnFiles(ctx, turn); err != nil || len(files) != 0 {
				b.Fatalf("files=%v err=%v", files, err)
			}
		}
	})
	b.Run("each-call", func(b *testing.B) {
		for b.Loop() {
			rows, err := db.r.QueryContext(quick(ctx), turnFilesQuery, turn)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Close(); err != nil || n != 0 {
				b.Fatalf("rows=%d err=%v", n, err)
			}
		}
	})
}
