package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

var _ agent.AccessList = (*DB)(nil)

// Denied reports whether p has been denied.
func (db *DB) Denied(ctx context.Context, p agent.Principal) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM denied_principals WHERE platform = $1 AND workspace = $2 AND "user" = $3)`,
		text(p.Platform), text(p.Workspace), text(p.User)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("postgres: denied: %w", err)
	}
	return ok, nil
}

// SetDenied denies p (denied true) or allows them again, and records the
// change in the console's audit log (a.At, a.Actor and a.Remote; Action
// and Target are filled in) in the same transaction. It reports whether
// anything changed: denying a denied principal changes nothing and is not
// audited.
func (db *DB) SetDenied(ctx context.Context, p agent.Principal, denied bool, a store.ConsoleAction) (bool, error) {
	if p.Platform == "" || p.User == "" {
		return false, fmt.Errorf("postgres: set denied: %q is not a principal", p.String())
	}
	at := toMS(a.At)
	if at == 0 {
		at = db.now()
	}
	a.Target = p.String()
	a.Action = "allow user"
	if denied {
		a.Action = "deny user"
	}
	changed := false
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		var n int64
		if denied {
			tag, e := tx.Exec(ctx, `INSERT INTO denied_principals (platform, workspace, "user", at, by) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT DO NOTHING`, text(p.Platform), text(p.Workspace), text(p.User), at, text(a.Actor))
			n, err = tag.RowsAffected(), e
		} else {
			tag, e := tx.Exec(ctx, `DELETE FROM denied_principals WHERE platform = $1 AND workspace = $2 AND "user" = $3`,
				text(p.Platform), text(p.Workspace), text(p.User))
			n, err = tag.RowsAffected(), e
		}
		if err != nil || n == 0 {
			return err
		}
		changed = true
		_, err = tx.Exec(ctx, `INSERT INTO console_audit (at, actor, action, target, remote) VALUES ($1, $2, $3, $4, $5)`,
			at, text(a.Actor), a.Action, text(a.Target), text(a.Remote))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: set denied: %w", err)
	}
	return changed, nil
}

// DeniedPrincipals lists the denied principals, most recently denied
// first.
func (db *DB) DeniedPrincipals(ctx context.Context) ([]store.DeniedPrincipal, error) {
	rows, err := db.pool.Query(ctx, `SELECT platform, workspace, "user", at, by FROM denied_principals
		ORDER BY at DESC, platform COLLATE "C", workspace COLLATE "C", "user" COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("postgres: denied principals: %w", err)
	}
	defer rows.Close()
	var out []store.DeniedPrincipal
	for rows.Next() {
		var d store.DeniedPrincipal
		var at int64
		if err := rows.Scan(&d.Principal.Platform, &d.Principal.Workspace, &d.Principal.User, &at, &d.By); err != nil {
			return nil, fmt.Errorf("postgres: denied principals: %w", err)
		}
		d.At = fromMS(at)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: denied principals: %w", err)
	}
	return out, nil
}
