package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/talonhq/talon/vault"
)

// VaultAuditFilter selects events of the vault's audit log; a zero field
// selects all.
type VaultAuditFilter struct {
	// User, Name, Host and Tool match exactly.
	User, Name, Host, Tool string
	// Result is "allowed" or "refused" ("" both).
	Result string
	// From and To bound the time: From <= at < To.
	From, To time.Time
}

// VaultAudit returns up to limit events of the vault's audit log that f
// selects, newest first.
func (db *DB) VaultAudit(ctx context.Context, f VaultAuditFilter, limit int) ([]vault.AuditEvent, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{{"user", f.User}, {"name", f.Name}, {"host", f.Host}, {"tool", f.Tool}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	switch f.Result {
	case "":
	case "allowed", "refused":
		where = append(where, "allowed = ?")
		args = append(args, f.Result == "allowed")
	default:
		return nil, fmt.Errorf("store: vault audit: result %q: want allowed or refused", f.Result)
	}
	if !f.From.IsZero() {
		where = append(where, "at >= ?")
		args = append(args, toMS(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "at < ?")
		args = append(args, toMS(f.To))
	}
	q := `SELECT at, user, name, host, tool, allowed, reason FROM vault_audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: vault audit: %w", err)
	}
	defer rows.Close()
	var out []vault.AuditEvent
	for rows.Next() {
		var (
			a      vault.AuditEvent
			at     int64
			reason string
		)
		if err := rows.Scan(&at, &a.User, &a.Name, &a.Host, &a.Tool, &a.Allowed, &reason); err != nil {
			return nil, fmt.Errorf("store: vault audit: %w", err)
		}
		a.Time, a.Reason = fromMS(at), vault.Reason(reason)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: vault audit: %w", err)
	}
	return out, nil
}
