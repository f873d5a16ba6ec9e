package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/store"
)

// SeeMCPTool records t as last seen and returns the approved hash: t.Hash
// for a tool never seen before (approved on first sight), otherwise the
// hash approved before. A tool seen unchanged is not written again.
func (db *DB) SeeMCPTool(ctx context.Context, t store.MCPTool) (string, error) {
	var hash, approved string
	err := db.pool.QueryRow(ctx, `SELECT hash, approved FROM mcp_tools WHERE server = $1 AND tool = $2`, t.Server, t.Tool).Scan(&hash, &approved)
	switch {
	case err == nil && hash == t.Hash:
		return approved, nil
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("postgres: read mcp tool: %w", err)
	}
	err = db.pool.QueryRow(ctx, `INSERT INTO mcp_tools (server, tool, hash, approved, description, read_only, seen_at)
		VALUES ($1, $2, $3, $3, $4, $5, $6)
		ON CONFLICT (server, tool) DO UPDATE SET hash = excluded.hash, description = excluded.description,
			read_only = excluded.read_only, seen_at = excluded.seen_at
		RETURNING approved`, text(t.Server), text(t.Tool), text(t.Hash), text(t.Description), t.ReadOnly, toMS(t.SeenAt)).Scan(&approved)
	if err != nil {
		return "", fmt.Errorf("postgres: record mcp tool: %w", err)
	}
	return approved, nil
}

// ApproveMCPTools approves the hash last seen of every tool of server and
// returns how many tools changed.
func (db *DB) ApproveMCPTools(ctx context.Context, server string) (int, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE mcp_tools SET approved = hash WHERE server = $1 AND approved <> hash`, server)
	if err != nil {
		return 0, fmt.Errorf("postgres: approve mcp tools: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// MCPTools lists the tools of server as last seen, by name.
func (db *DB) MCPTools(ctx context.Context, server string) ([]store.MCPTool, error) {
	rows, err := db.pool.Query(ctx, `SELECT server, tool, hash, approved, description, read_only, seen_at
		FROM mcp_tools WHERE server = $1 ORDER BY tool COLLATE "C"`, server)
	if err != nil {
		return nil, fmt.Errorf("postgres: list mcp tools: %w", err)
	}
	defer rows.Close()
	var out []store.MCPTool
	for rows.Next() {
		var (
			t    store.MCPTool
			seen int64
		)
		if err := rows.Scan(&t.Server, &t.Tool, &t.Hash, &t.Approved, &t.Description, &t.ReadOnly, &seen); err != nil {
			return nil, fmt.Errorf("postgres: list mcp tools: %w", err)
		}
		t.SeenAt = fromMS(seen)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list mcp tools: %w", err)
	}
	return out, nil
}
