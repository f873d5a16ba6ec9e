package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/vault"
)

// VaultStorage keeps the credential vault's sealed entries, its key check
// and its audit log in the database. It never sees a value in clear: an
// entry's value exists only inside its ciphertext, stored as the vault
// sealed it.
type VaultStorage struct{ db *DB }

var _ vault.Storage = VaultStorage{}

// VaultStorage returns the vault's storage in db.
func (db *DB) VaultStorage() VaultStorage { return VaultStorage{db} }

const vaultCols = `"user", name, version, hosts, injection, key_id, salt, nonce, ciphertext, created_at, last_used_at`

// scanVault reads one row. A row whose injection rule does not decode is
// returned with an empty rule: the rule is bound by the AEAD, so the entry
// fails to open and is reported, never used.
func scanVault(r pgx.Row) (vault.SealedEntry, error) {
	var (
		e                      vault.SealedEntry
		hosts, inj             string
		version, created, used int64
	)
	if err := r.Scan(&e.User, &e.Name, &version, &hosts, &inj, &e.KeyID, &e.Salt, &e.Nonce, &e.Ciphertext, &created, &used); err != nil {
		return e, err
	}
	e.Version = int(version)
	if err := json.Unmarshal([]byte(hosts), &e.Hosts); err != nil {
		return e, fmt.Errorf("decode hosts: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(inj))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e.Injection); err != nil {
		e.Injection = vault.Injection{}
	}
	e.CreatedAt, e.LastUsed = fromMS(created), fromMS(used)
	return e, nil
}

// putVault inserts or replaces the entry (user, name). A replaced entry
// keeps its last use unless e has a later one.
func putVault(ctx context.Context, tx pgx.Tx, e vault.SealedEntry) error {
	hosts, err := json.Marshal(e.Hosts)
	if err != nil {
		return err
	}
	inj, err := json.Marshal(e.Injection)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO vault_entries (`+vaultCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT ("user", name) DO UPDATE SET version = excluded.version, hosts = excluded.hosts,
			injection = excluded.injection, key_id = excluded.key_id, salt = excluded.salt, nonce = excluded.nonce,
			ciphertext = excluded.ciphertext, created_at = excluded.created_at,
			last_used_at = GREATEST(vault_entries.last_used_at, excluded.last_used_at)`,
		e.User, e.Name, e.Version, string(hosts), string(inj), e.KeyID, e.Salt, e.Nonce, e.Ciphertext, toMS(e.CreatedAt), toMS(e.LastUsed))
	return err
}

// PutEntry inserts or replaces the entry (user, name).
func (s VaultStorage) PutEntry(ctx context.Context, e vault.SealedEntry) error {
	if err := s.db.inTx(ctx, func(tx pgx.Tx) error { return putVault(ctx, tx, e) }); err != nil {
		return fmt.Errorf("postgres: put vault entry: %w", err)
	}
	return nil
}

// GetEntry returns an entry or an error wrapping vault.ErrNotFound.
func (s VaultStorage) GetEntry(ctx context.Context, user, name string) (vault.SealedEntry, error) {
	e, err := scanVault(s.db.pool.QueryRow(ctx, `SELECT `+vaultCols+` FROM vault_entries WHERE "user" = $1 AND name = $2`, user, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, fmt.Errorf("postgres: vault entry %q: %w", name, vault.ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("postgres: vault entry: %w", err)
	}
	return e, nil
}

// ListEntries returns the entries of user, or everyone's when user is "",
// ordered by user and name (bytewise, as SQLite orders them).
func (s VaultStorage) ListEntries(ctx context.Context, user string) ([]vault.SealedEntry, error) {
	rows, err := s.db.pool.Query(ctx, `SELECT `+vaultCols+` FROM vault_entries WHERE $1 = '' OR "user" = $1
		ORDER BY "user" COLLATE "C", name COLLATE "C"`, user)
	if err != nil {
		return nil, fmt.Errorf("postgres: list vault entries: %w", err)
	}
	defer rows.Close()
	var out []vault.SealedEntry
	for rows.Next() {
		e, err := scanVault(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list vault entries: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list vault entries: %w", err)
	}
	return out, nil
}

// DeleteEntry removes an entry and reports whether it existed.
func (s VaultStorage) DeleteEntry(ctx context.Context, user, name string) (bool, error) {
	tag, err := s.db.pool.Exec(ctx, `DELETE FROM vault_entries WHERE "user" = $1 AND name = $2`, user, name)
	if err != nil {
		return false, fmt.Errorf("postgres: delete vault entry: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

const setKeyCheck = `INSERT INTO vault_meta (k, v) VALUES ('key_check', $1) ON CONFLICT (k) DO UPDATE SET v = excluded.v`

// ReplaceAll swaps every entry and the key check in one transaction (key
// rotation).
func (s VaultStorage) ReplaceAll(ctx context.Context, entries []vault.SealedEntry, keyCheck []byte) error {
	err := s.db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM vault_entries`); err != nil {
			return err
		}
		for _, e := range entries {
			if err := putVault(ctx, tx, e); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, setKeyCheck, keyCheck)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: replace vault entries: %w", err)
	}
	return nil
}

// Rewrite removes, stores and audits in one transaction (see
// vault.Storage). An entry of remove that is gone or whose nonce changed
// makes it write nothing and return an error wrapping vault.ErrConflict;
// the entries to remove are locked while it runs.
func (s VaultStorage) Rewrite(ctx context.Context, remove, add []vault.SealedEntry, events []vault.AuditEvent) error {
	err := s.db.inTx(ctx, func(tx pgx.Tx) error {
		for _, e := range remove {
			var nonce []byte
			err := tx.QueryRow(ctx, `SELECT nonce FROM vault_entries WHERE "user" = $1 AND name = $2 FOR UPDATE`, e.User, e.Name).Scan(&nonce)
			if errors.Is(err, pgx.ErrNoRows) || err == nil && !bytes.Equal(nonce, e.Nonce) {
				return fmt.Errorf("entry %q of %s: %w", e.Name, e.User, vault.ErrConflict)
			}
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM vault_entries WHERE "user" = $1 AND name = $2`, e.User, e.Name); err != nil {
				return err
			}
		}
		for _, e := range add {
			if err := putVault(ctx, tx, e); err != nil {
				return err
			}
		}
		for _, ev := range events {
			if err := appendAudit(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: rewrite vault entries: %w", err)
	}
	return nil
}

// KeyCheck returns the stored key check, or nil when none is stored.
func (s VaultStorage) KeyCheck(ctx context.Context) ([]byte, error) {
	var v []byte
	err := s.db.pool.QueryRow(ctx, `SELECT v FROM vault_meta WHERE k = 'key_check'`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: vault key check: %w", err)
	}
	return v, nil
}

// SetKeyCheck stores the key check.
func (s VaultStorage) SetKeyCheck(ctx context.Context, check []byte) error {
	if _, err := s.db.pool.Exec(ctx, setKeyCheck, check); err != nil {
		return fmt.Errorf("postgres: set vault key check: %w", err)
	}
	return nil
}

func appendAudit(ctx context.Context, tx pgx.Tx, a vault.AuditEvent) error {
	_, err := tx.Exec(ctx, `INSERT INTO vault_audit (at, "user", name, host, tool, allowed, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		toMS(a.Time), text(a.User), text(a.Name), text(a.Host), text(a.Tool), a.Allowed, string(a.Reason))
	return err
}

// AppendAudit records a credential use or refusal.
func (s VaultStorage) AppendAudit(ctx context.Context, a vault.AuditEvent) error {
	if err := s.db.inTx(ctx, func(tx pgx.Tx) error { return appendAudit(ctx, tx, a) }); err != nil {
		return fmt.Errorf("postgres: append vault audit: %w", err)
	}
	return nil
}

// RecentAudit returns up to limit audit events, newest first.
func (s VaultStorage) RecentAudit(ctx context.Context, limit int) ([]vault.AuditEvent, error) {
	rows, err := s.db.pool.Query(ctx, `SELECT at, "user", name, host, tool, allowed, reason FROM vault_audit
		ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: vault audit: %w", err)
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
			return nil, fmt.Errorf("postgres: vault audit: %w", err)
		}
		a.Time, a.Reason = fromMS(at), vault.Reason(reason)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: vault audit: %w", err)
	}
	return out, nil
}

// Touch records when an entry was last used.
func (s VaultStorage) Touch(ctx context.Context, user, name string, at time.Time) error {
	if _, err := s.db.pool.Exec(ctx, `UPDATE vault_entries SET last_used_at = $1 WHERE "user" = $2 AND name = $3`, toMS(at), user, name); err != nil {
		return fmt.Errorf("postgres: touch vault entry: %w", err)
	}
	return nil
}
