package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ConsoleSession is a console sign-in as stored: the SHA-256 of its cookie
// value (never the value), who signed in, and when it expires.
type ConsoleSession struct {
	Hash    [32]byte
	Who     string
	Created time.Time
	Expires time.Time
}

// AddConsoleSession stores a new sign-in after deleting the expired ones,
// unless max sessions are open (then it returns ErrTooManySessions).
func (db *DB) AddConsoleSession(ctx context.Context, s ConsoleSession, max int) error {
	return db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		now := db.now()
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE expires_at <= ?`, now); err != nil {
			return fmt.Errorf("store: console session: %w", err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM console_sessions`).Scan(&n); err != nil {
			return fmt.Errorf("store: console session: %w", err)
		}
		if n >= max {
			return ErrTooManySessions
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO console_sessions (id_hash, who, created_at, expires_at) VALUES (?, ?, ?, ?)`,
			s.Hash[:], s.Who, toMS(s.Created), toMS(s.Expires)); err != nil {
			return fmt.Errorf("store: console session: %w", err)
		}
		return nil
	})
}

// ErrTooManySessions is AddConsoleSession's answer when the bound of open
// sessions is reached.
var ErrTooManySessions = errors.New("store: too many console sessions")

// ConsoleSession returns the sign-in whose cookie value hashes to hash if
// it has not expired by now; otherwise ErrNotFound.
func (db *DB) ConsoleSession(ctx context.Context, hash [32]byte, now time.Time) (ConsoleSession, error) {
	s := ConsoleSession{Hash: hash}
	var created, expires int64
	err := db.r.QueryRowContext(ctx, `SELECT who, created_at, expires_at FROM console_sessions WHERE id_hash = ? AND expires_at > ?`,
		hash[:], toMS(now)).Scan(&s.Who, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return ConsoleSession{}, ErrNotFound
	}
	if err != nil {
		return ConsoleSession{}, fmt.Errorf("store: console session: %w", err)
	}
	s.Created, s.Expires = fromMS(created), fromMS(expires)
	return s, nil
}

// DeleteConsoleSession ends a sign-in (sign-out); ending one that is not
// there is not an error.
func (db *DB) DeleteConsoleSession(ctx context.Context, hash [32]byte) error {
	if _, err := db.execSQL(ctx, `DELETE FROM console_sessions WHERE id_hash = ?`, hash[:]); err != nil {
		return fmt.Errorf("store: console session: %w", err)
	}
	return nil
}

// AddOIDCState stores a started sign-in (the SHA-256 of its state, its
// nonce) until expires, after deleting the expired ones, unless max are
// pending (then ErrTooManySessions).
func (db *DB) AddOIDCState(ctx context.Context, hash [32]byte, nonce string, expires time.Time, max int) error {
	return db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_oidc_states WHERE expires_at <= ?`, db.now()); err != nil {
			return fmt.Errorf("store: oidc state: %w", err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM console_oidc_states`).Scan(&n); err != nil {
			return fmt.Errorf("store: oidc state: %w", err)
		}
		if n >= max {
			return ErrTooManySessions
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO console_oidc_states (state_hash, nonce, expires_at) VALUES (?, ?, ?)`,
			hash[:], nonce, toMS(expires)); err != nil {
			return fmt.Errorf("store: oidc state: %w", err)
		}
		return nil
	})
}

// TakeOIDCState removes the started sign-in whose state hashes to hash and
// returns its nonce if it had not expired by now; otherwise ErrNotFound.
// A state is taken once: a second take finds nothing.
func (db *DB) TakeOIDCState(ctx context.Context, hash [32]byte, now time.Time) (string, error) {
	var nonce string
	var expires int64
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		return tx.QueryRowContext(ctx, `DELETE FROM console_oidc_states WHERE state_hash = ? RETURNING nonce, expires_at`, hash[:]).Scan(&nonce, &expires)
	})
	if errors.Is(err, sql.ErrNoRows) || err == nil && expires <= toMS(now) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("store: oidc state: %w", err)
	}
	return nonce, nil
}
