package store

import (
	"context"
	"fmt"

	"github.com/talonhq/talon/agent"
)

// RecordTurnFile records f, a file a tool of turn t returned for the user
// (its bytes are in the FileDir under f.Hash); recording the file of the
// same call again replaces it. An unknown turn is an error.
func (db *DB) RecordTurnFile(ctx context.Context, t agent.TurnID, f agent.TurnFile) error {
	if f.Name == "" || f.Hash == "" || f.Size < 0 {
		return fmt.Errorf("store: record a file of turn %d: a file needs a name, a hash and a size", t)
	}
	_, err := db.execSQL(ctx, `INSERT INTO turn_files (turn_id, call_id, name, media_type, hash, size, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (turn_id, call_id) DO UPDATE SET name = excluded.name, media_type = excluded.media_type,
			hash = excluded.hash, size = excluded.size, created_at = excluded.created_at`,
		t, f.CallID, f.Name, f.MediaType, f.Hash, f.Size, db.now())
	if err != nil {
		return fmt.Errorf("store: record a file of turn %d: %w", t, err)
	}
	return nil
}

const turnFilesQuery = `SELECT f.call_id, f.name, f.media_type, f.hash, f.size FROM turn_files f
	LEFT JOIN tool_calls c ON c.turn_id = f.turn_id AND c.call_id = f.call_id
	WHERE f.turn_id = ? ORDER BY c.step, c.id, f.created_at, f.call_id`

// TurnFiles lists the files recorded for turn t, in the order their tool
// calls started (then the order they were recorded).
func (db *DB) TurnFiles(ctx context.Context, t agent.TurnID) ([]agent.TurnFile, error) {
	rows, err := db.rs.turnFiles.QueryContext(quick(ctx), t)
	if err != nil {
		return nil, fmt.Errorf("store: files of turn %d: %w", t, err)
	}
	defer rows.Close()
	var out []agent.TurnFile
	for rows.Next() {
		var f agent.TurnFile
		if err := rows.Scan(&f.CallID, &f.Name, &f.MediaType, &f.Hash, &f.Size); err != nil {
			return nil, fmt.Errorf("store: files of turn %d: %w", t, err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: files of turn %d: %w", t, err)
	}
	return out, nil
}

var _ agent.TurnFileStore = (*DB)(nil)
