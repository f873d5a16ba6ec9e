package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// MCPTool is one tool of an MCP server as last seen, with the hash the
// operator approved.
type MCPTool struct {
	Server, Tool string
	// Hash is of the tool as last seen; Approved is the hash approved.
	Hash, Approved string
	Description    string
	ReadOnly       bool
	SeenAt         time.Time
}

// SeeMCPTool records t as last seen and returns the approved hash: t.Hash
// for a tool never seen before (approved on first sight), otherwise the
// hash approved before, which differs from t.Hash when the tool changed.
// A tool seen unchanged is not written again.
func (db *DB) SeeMCPTool(ctx context.Context, t MCPTool) (string, error) {
	var hash, approved string
	err := db.r.QueryRowContext(ctx, `SELECT hash, approved FROM mcp_tools WHERE server = ? AND tool = ?`, t.Server, t.Tool).Scan(&hash, &approved)
	switch {
	case err == nil && hash == t.Hash:
		return approved, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("store: read mcp tool: %w", err)
	}
	err = db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO mcp_tools (server, tool, hash, approved, description, read_only, seen_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (server, tool) DO UPDATE SET hash = excluded.hash, description = excluded.description,
				read_only = excluded.read_only, seen_at = excluded.seen_at
			RETURNING approved`,
			t.Server, t.Tool, t.Hash, t.Hash, t.Description, t.ReadOnly, toMS(t.SeenAt)).Scan(&approved)
	})
	if err != nil {
		return "", fmt.Errorf("store: record mcp tool: %w", err)
	}
	return approved, nil
}

// ApproveMCPTools approves the hash last seen of every tool of server and
// returns how many tools changed.
func (db *DB) ApproveMCPTools(ctx context.Context, server string) (int, error) {
	res, err := db.execSQL(ctx, `UPDATE mcp_tools SET approved = hash WHERE server = ? AND approved != hash`, server)
	if err != nil {
		return 0, fmt.Errorf("store: approve mcp tools: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// MCPTools lists the tools of server as last seen, by name.
func (db *DB) MCPTools(ctx context.Context, server string) ([]MCPTool, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT server, tool, hash, approved, description, read_only, seen_at
		FROM mcp_tools WHERE server = ? ORDER BY tool`, server)
	if err != nil {
		return nil, fmt.Errorf("store: list mcp tools: %w", err)
	}
	defer rows.Close()
	var out []MCPTool
	for rows.Next() {
		var (
			t    MCPTool
			seen int64
		)
		if err := rows.Scan(&t.Server, &t.Tool, &t.Hash, &t.Approved, &t.Description, &t.ReadOnly, &seen); err != nil {
			return nil, fmt.Errorf("store: list mcp tools: %w", err)
		}
		t.SeenAt = fromMS(seen)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list mcp tools: %w", err)
	}
	return out, nil
}
