package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/store"
)

// The MCP authorization flow's persistence (mcp.OAuthStore, wired by cmd),
// as the SQLite store keeps it: connect links (states) bound to a
// principal and a server, started once and taken once on whichever
// replica; the clients registered with authorization servers; and each
// user's connections, without their tokens (the vault holds them).

// PutOAuthState stores a new state.
func (db *DB) PutOAuthState(ctx context.Context, s store.OAuthState) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO oauth_states (id, principal, server, verifier, issuer, auth_url, token_url, revoke_url,
		client_id, resource, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		text(s.ID), text(s.Principal), text(s.Server), text(s.Verifier), text(s.Issuer), text(s.AuthURL), text(s.TokenURL),
		text(s.RevokeURL), text(s.ClientID), text(s.Resource), text(s.Scopes), toMS(s.CreatedAt), toMS(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("postgres: put oauth state: %w", err)
	}
	return nil
}

const oauthStateCols = `id, principal, server, verifier, issuer, auth_url, token_url, revoke_url, client_id, resource, scopes, browser, created_at, started_at, expires_at`

func scanOAuthState(r pgx.Row) (store.OAuthState, error) {
	var (
		s                         store.OAuthState
		created, started, expires int64
	)
	err := r.Scan(&s.ID, &s.Principal, &s.Server, &s.Verifier, &s.Issuer, &s.AuthURL, &s.TokenURL, &s.RevokeURL, &s.ClientID,
		&s.Resource, &s.Scopes, &s.Browser, &created, &started, &expires)
	s.CreatedAt, s.StartedAt, s.ExpiresAt = fromMS(created), fromMS(started), fromMS(expires)
	return s, err
}

// StartOAuthState marks the state id started by the browser whose cookie
// hashes to browser, once: it returns the state and true the first time,
// the state and false after (the link was used already, here or on
// another replica), and an error wrapping store.ErrNotFound when there is
// no such state.
func (db *DB) StartOAuthState(ctx context.Context, id, browser string, at time.Time) (store.OAuthState, bool, error) {
	s, err := scanOAuthState(db.pool.QueryRow(ctx, `UPDATE oauth_states SET started_at = $2, browser = $3
		WHERE id = $1 AND started_at = 0 RETURNING `+oauthStateCols, text(id), max(toMS(at), 1), text(browser)))
	if err == nil {
		return s, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.OAuthState{}, false, fmt.Errorf("postgres: start oauth state: %w", err)
	}
	s, err = scanOAuthState(db.pool.QueryRow(ctx, `SELECT `+oauthStateCols+` FROM oauth_states WHERE id = $1`, text(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.OAuthState{}, false, fmt.Errorf("postgres: oauth state: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.OAuthState{}, false, fmt.Errorf("postgres: start oauth state: %w", err)
	}
	return s, false, nil
}

// TakeOAuthState returns the state id and deletes it, so that it is used
// once; the error wraps store.ErrNotFound when there is none (never
// issued, used already, or swept).
func (db *DB) TakeOAuthState(ctx context.Context, id string) (store.OAuthState, error) {
	s, err := scanOAuthState(db.pool.QueryRow(ctx, `DELETE FROM oauth_states WHERE id = $1 RETURNING `+oauthStateCols, text(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.OAuthState{}, fmt.Errorf("postgres: oauth state: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.OAuthState{}, fmt.Errorf("postgres: take oauth state: %w", err)
	}
	return s, nil
}

// SweepOAuthStates deletes the states that expired before before and
// returns how many.
func (db *DB) SweepOAuthStates(ctx context.Context, before time.Time) (int, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM oauth_states WHERE expires_at < $1`, toMS(before))
	if err != nil {
		return 0, fmt.Errorf("postgres: sweep oauth states: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// GetOAuthClient returns the client registered for server with issuer; the
// error wraps store.ErrNotFound when there is none.
func (db *DB) GetOAuthClient(ctx context.Context, server, issuer string) (store.OAuthClient, error) {
	c := store.OAuthClient{Server: server, Issuer: issuer}
	var at int64
	err := db.pool.QueryRow(ctx, `SELECT client_id, client_secret, registered_at FROM oauth_clients WHERE server = $1 AND issuer = $2`,
		text(server), text(issuer)).Scan(&c.ClientID, &c.ClientSecret, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.OAuthClient{}, fmt.Errorf("postgres: oauth client: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.OAuthClient{}, fmt.Errorf("postgres: oauth client: %w", err)
	}
	c.RegisteredAt = fromMS(at)
	return c, nil
}

// PutOAuthClient stores (or replaces) a registered client.
func (db *DB) PutOAuthClient(ctx context.Context, c store.OAuthClient) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO oauth_clients (server, issuer, client_id, client_secret, registered_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (server, issuer) DO UPDATE SET client_id = excluded.client_id, client_secret = excluded.client_secret,
			registered_at = excluded.registered_at`, text(c.Server), text(c.Issuer), text(c.ClientID), text(c.ClientSecret), toMS(c.RegisteredAt))
	if err != nil {
		return fmt.Errorf("postgres: put oauth client: %w", err)
	}
	return nil
}

const oauthConnCols = `server, principal, issuer, client_id, token_url, revoke_url, resource, scopes, expires_at, connected_at, refreshed_at`

func scanOAuthConn(r pgx.Row) (store.OAuthConnection, error) {
	var (
		c                    store.OAuthConnection
		exp, conn, refreshed int64
	)
	err := r.Scan(&c.Server, &c.Principal, &c.Issuer, &c.ClientID, &c.TokenURL, &c.RevokeURL, &c.Resource, &c.Scopes, &exp, &conn, &refreshed)
	c.ExpiresAt, c.ConnectedAt, c.RefreshedAt = fromMS(exp), fromMS(conn), fromMS(refreshed)
	return c, err
}

// PutOAuthConnection stores (or replaces) a connection.
func (db *DB) PutOAuthConnection(ctx context.Context, c store.OAuthConnection) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO oauth_connections (`+oauthConnCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (server, principal) DO UPDATE SET issuer = excluded.issuer, client_id = excluded.client_id,
			token_url = excluded.token_url, revoke_url = excluded.revoke_url, resource = excluded.resource, scopes = excluded.scopes,
			expires_at = excluded.expires_at, connected_at = excluded.connected_at, refreshed_at = excluded.refreshed_at`,
		text(c.Server), text(c.Principal), text(c.Issuer), text(c.ClientID), text(c.TokenURL), text(c.RevokeURL), text(c.Resource),
		text(c.Scopes), toMS(c.ExpiresAt), toMS(c.ConnectedAt), toMS(c.RefreshedAt))
	if err != nil {
		return fmt.Errorf("postgres: put oauth connection: %w", err)
	}
	return nil
}

// GetOAuthConnection returns principal's connection to server; the error
// wraps store.ErrNotFound when there is none.
func (db *DB) GetOAuthConnection(ctx context.Context, server, principal string) (store.OAuthConnection, error) {
	c, err := scanOAuthConn(db.pool.QueryRow(ctx, `SELECT `+oauthConnCols+` FROM oauth_connections WHERE server = $1 AND principal = $2`,
		text(server), text(principal)))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.OAuthConnection{}, fmt.Errorf("postgres: oauth connection: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.OAuthConnection{}, fmt.Errorf("postgres: oauth connection: %w", err)
	}
	return c, nil
}

// DeleteOAuthConnection removes principal's connection to server and
// reports whether there was one.
func (db *DB) DeleteOAuthConnection(ctx context.Context, server, principal string) (bool, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM oauth_connections WHERE server = $1 AND principal = $2`, text(server), text(principal))
	if err != nil {
		return false, fmt.Errorf("postgres: delete oauth connection: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// OAuthConnections lists the connections to server ("" for every server),
// or those of principal when it is not "", by server and principal.
func (db *DB) OAuthConnections(ctx context.Context, server, principal string) ([]store.OAuthConnection, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+oauthConnCols+` FROM oauth_connections
		WHERE ($1 = '' OR server = $1) AND ($2 = '' OR principal = $2) ORDER BY server COLLATE "C", principal COLLATE "C"`, text(server), text(principal))
	if err != nil {
		return nil, fmt.Errorf("postgres: list oauth connections: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.OAuthConnection, error) { return scanOAuthConn(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list oauth connections: %w", err)
	}
	return out, nil
}
