package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// VaultEntry is a sealed credential as stored: the store never sees a value
// in clear. Injection is the JSON of the vault's injection rule.
type VaultEntry struct {
	User, Name string
	Version    int
	Hosts      []string
	Injection  string
	KeyID      []byte
	Salt       []byte
	Nonce      []byte
	Ciphertext []byte
	CreatedAt  time.Time
	LastUsed   time.Time
}

// VaultAudit is one recorded use or refusal of a credential.
type VaultAudit struct {
	At                     time.Time
	User, Name, Host, Tool string
	Allowed                bool
	Reason                 string
}

const vaultCols = `user, name, version, hosts, injection, key_id, salt, nonce, ciphertext, created_at, last_used_at`

func scanVault(r rowScanner) (VaultEntry, error) {
	var (
		e             VaultEntry
		hosts         string
		created, used int64
	)
	if err := r.Scan(&e.User, &e.Name, &e.Version, &hosts, &e.Injection, &e.KeyID, &e.Salt, &e.Nonce, &e.Ciphertext, &created, &used); err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(hosts), &e.Hosts); err != nil {
		return e, fmt.Errorf("decode hosts: %w", err)
	}
	e.CreatedAt, e.LastUsed = fromMS(created), fromMS(used)
	return e, nil
}

func putVault(ctx context.Context, x interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, e VaultEntry) error {
	hosts, err := json.Marshal(e.Hosts)
	if err != nil {
		return err
	}
	_, err = x.ExecContext(ctx, `INSERT INTO vault_entries (`+vaultCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
		ON CONFLICT (user, name) DO UPDATE SET version = excluded.version, hosts = excluded.hosts,
			injection = excluded.injection, key_id = excluded.key_id, salt = excluded.salt, nonce = excluded.nonce,
			ciphertext = excluded.ciphertext, created_at = excluded.created_at`,
		e.User, e.Name, e.Version, string(hosts), e.Injection, e.KeyID, e.Salt, e.Nonce, e.Ciphertext, toMS(e.CreatedAt))
	return err
}

// PutVaultEntry inserts or replaces the entry (user, name).
func (db *DB) PutVaultEntry(ctx context.Context, e VaultEntry) error {
	if err := putVault(ctx, db.w, e); err != nil {
		return fmt.Errorf("store: put vault entry: %w", err)
	}
	return nil
}

// GetVaultEntry returns an entry or an error wrapping ErrNotFound.
func (db *DB) GetVaultEntry(ctx context.Context, user, name string) (VaultEntry, error) {
	e, err := scanVault(db.r.QueryRowContext(ctx, `SELECT `+vaultCols+` FROM vault_entries WHERE user = ? AND name = ?`, user, name))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("store: vault entry: %w", ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("store: vault entry: %w", err)
	}
	return e, nil
}

// ListVaultEntries returns the entries of user, or everyone's when user is "".
func (db *DB) ListVaultEntries(ctx context.Context, user string) ([]VaultEntry, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+vaultCols+` FROM vault_entries WHERE ? = '' OR user = ? ORDER BY user, name`, user, user)
	if err != nil {
		return nil, fmt.Errorf("store: list vault entries: %w", err)
	}
	defer rows.Close()
	var out []VaultEntry
	for rows.Next() {
		e, err := scanVault(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list vault entries: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteVaultEntry removes an entry and reports whether it existed.
func (db *DB) DeleteVaultEntry(ctx context.Context, user, name string) (bool, error) {
	res, err := db.w.ExecContext(ctx, `DELETE FROM vault_entries WHERE user = ? AND name = ?`, user, name)
	if err != nil {
		return false, fmt.Errorf("store: delete vault entry: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// ReplaceVaultEntries swaps every entry and the key check in one
// transaction (key rotation).
func (db *DB) ReplaceVaultEntries(ctx context.Context, entries []VaultEntry, keyCheck []byte) error {
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM vault_entries`); err != nil {
			return err
		}
		for _, e := range entries {
			if err := putVault(ctx, tx, e); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO vault_meta (k, v) VALUES ('key_check', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, keyCheck)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: replace vault entries: %w", err)
	}
	return nil
}

// VaultKeyCheck returns the stored key check, or nil when none is stored.
func (db *DB) VaultKeyCheck(ctx context.Context) ([]byte, error) {
	var v []byte
	err := db.w.QueryRowContext(ctx, `SELECT v FROM vault_meta WHERE k = 'key_check'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: vault key check: %w", err)
	}
	return v, nil
}

// SetVaultKeyCheck stores the key check.
func (db *DB) SetVaultKeyCheck(ctx context.Context, check []byte) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO vault_meta (k, v) VALUES ('key_check', ?)
		ON CONFLICT (k) DO UPDATE SET v = excluded.v`, check)
	if err != nil {
		return fmt.Errorf("store: set vault key check: %w", err)
	}
	return nil
}

// AppendVaultAudit records a credential use or refusal.
func (db *DB) AppendVaultAudit(ctx context.Context, a VaultAudit) error {
	allowed := 0
	if a.Allowed {
		allowed = 1
	}
	_, err := db.w.ExecContext(ctx, `INSERT INTO vault_audit (at, user, name, host, tool, allowed, reason)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, toMS(a.At), a.User, a.Name, a.Host, a.Tool, allowed, a.Reason)
	if err != nil {
		return fmt.Errorf("store: append vault audit: %w", err)
	}
	return nil
}

// RecentVaultAudit returns up to limit audit events, newest first.
func (db *DB) RecentVaultAudit(ctx context.Context, limit int) ([]VaultAudit, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT at, user, name, host, tool, allowed, reason FROM vault_audit
		ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: vault audit: %w", err)
	}
	defer rows.Close()
	var out []VaultAudit
	for rows.Next() {
		var (
			a  VaultAudit
			at int64
		)
		if err := rows.Scan(&at, &a.User, &a.Name, &a.Host, &a.Tool, &a.Allowed, &a.Reason); err != nil {
			return nil, fmt.Errorf("store: vault audit: %w", err)
		}
		a.At = fromMS(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

// TouchVaultEntry records when an entry was last used.
func (db *DB) TouchVaultEntry(ctx context.Context, user, name string, at time.Time) error {
	if _, err := db.w.ExecContext(ctx, `UPDATE vault_entries SET last_used_at = ? WHERE user = ? AND name = ?`, toMS(at), user, name); err != nil {
		return fmt.Errorf("store: touch vault entry: %w", err)
	}
	return nil
}
