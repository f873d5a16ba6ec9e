package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/talonhq/talon/agent"
)

// Who may talk to Talon beyond what the configuration allows: principals
// an operator denied. Changed only through SetDenied, which audits.

// DeniedPrincipal is a principal an operator denied, when and by whom.
type DeniedPrincipal struct {
	Principal agent.Principal
	At        time.Time
	By        string
}

// Denied reports whether p has been denied.
func (db *DB) Denied(ctx context.Context, p agent.Principal) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM denied_principals WHERE platform = ? AND workspace = ? AND user = ?`,
		p.Platform, p.Workspace, p.User).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: denied: %w", err)
	}
	return true, nil
}

// SetDenied denies p (denied true) or allows them again, and records the
// change in the console's audit log (a.At, a.Actor and a.Remote; Action
// and Target are filled in) in the same transaction. It reports whether
// anything changed: denying a denied principal changes nothing and is not
// audited.
func (db *DB) SetDenied(ctx context.Context, p agent.Principal, denied bool, a ConsoleAction) (bool, error) {
	if p.Platform == "" || p.User == "" {
		return false, fmt.Errorf("store: set denied: %q is not a principal", p.String())
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
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var res sql.Result
		var err error
		if denied {
			res, err = tx.ExecContext(ctx, `INSERT INTO denied_principals (platform, workspace, user, at, by) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT DO NOTHING`, p.Platform, p.Workspace, p.User, at, a.Actor)
		} else {
			res, err = tx.ExecContext(ctx, `DELETE FROM denied_principals WHERE platform = ? AND workspace = ? AND user = ?`,
				p.Platform, p.Workspace, p.User)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		changed = true
		_, err = tx.ExecContext(ctx, `INSERT INTO console_audit (at, actor, action, target, remote) VALUES (?, ?, ?, ?, ?)`,
			at, a.Actor, a.Action, a.Target, a.Remote)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: set denied: %w", err)
	}
	return changed, nil
}

// DeniedPrincipals lists the denied principals, most recently denied
// first.
func (db *DB) DeniedPrincipals(ctx context.Context) ([]DeniedPrincipal, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT platform, workspace, user, at, by FROM denied_principals ORDER BY at DESC, platform, workspace, user`)
	if err != nil {
		return nil, fmt.Errorf("store: denied principals: %w", err)
	}
	defer rows.Close()
	var out []DeniedPrincipal
	for rows.Next() {
		var d DeniedPrincipal
		var at int64
		if err := rows.Scan(&d.Principal.Platform, &d.Principal.Workspace, &d.Principal.User, &at, &d.By); err != nil {
			return nil, fmt.Errorf("store: denied principals: %w", err)
		}
		d.At = fromMS(at)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: denied principals: %w", err)
	}
	return out, nil
}
