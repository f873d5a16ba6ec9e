package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// OAuthState is one connect link of the MCP authorization flow: bound to
// a principal and a server, started once, consumed once, refused after
// ExpiresAt. ID is the SHA-256 of the state (hex), never the state.
type OAuthState struct {
	ID, Principal, Server string
	// Verifier is the PKCE code verifier; the link without the code the
	// provider sends to the callback is useless.
	Verifier                                                         string
	Issuer, AuthURL, TokenURL, RevokeURL, ClientID, Resource, Scopes string
	// Browser is the hash of the cookie the start page set, "" before.
	Browser                         string
	CreatedAt, StartedAt, ExpiresAt time.Time
}

// PutOAuthState stores a new state.
func (db *DB) PutOAuthState(ctx context.Context, s OAuthState) error {
	_, err := db.execSQL(ctx, `INSERT INTO oauth_states (id, principal, server, verifier, issuer, auth_url, token_url, revoke_url,
		client_id, resource, scopes, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.Principal, s.Server, s.Verifier, s.Issuer, s.AuthURL, s.TokenURL, s.RevokeURL, s.ClientID, s.Resource, s.Scopes,
		toMS(s.CreatedAt), toMS(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("store: put oauth state: %w", err)
	}
	return nil
}

const oauthStateCols = `id, principal, server, verifier, issuer, auth_url, token_url, revoke_url, client_id, resource, scopes, browser, created_at, started_at, expires_at`

func scanOAuthState(sc interface{ Scan(...any) error }) (OAuthState, error) {
	var (
		s                OAuthState
		created, started int64
		expires          int64
	)
	err := sc.Scan(&s.ID, &s.Principal, &s.Server, &s.Verifier, &s.Issuer, &s.AuthURL, &s.TokenURL, &s.RevokeURL, &s.ClientID,
		&s.Resource, &s.Scopes, &s.Browser, &created, &started, &expires)
	s.CreatedAt, s.StartedAt, s.ExpiresAt = fromMS(created), fromMS(started), fromMS(expires)
	return s, err
}

// StartOAuthState marks the state id started by the browser whose cookie
// hashes to browser, once: it returns the state and true the first time,
// the state and false after (the link was used already), and an error
// wrapping ErrNotFound when there is no such state.
func (db *DB) StartOAuthState(ctx context.Context, id, browser string, at time.Time) (OAuthState, bool, error) {
	var (
		s     OAuthState
		first bool
	)
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var err error
		s, err = scanOAuthState(tx.QueryRowContext(ctx, `SELECT `+oauthStateCols+` FROM oauth_states WHERE id = ?`, id))
		if err != nil {
			return err
		}
		if !s.StartedAt.IsZero() {
			return nil
		}
		first = true
		s.StartedAt, s.Browser = fromMS(toMS(at)), browser
		_, err = tx.ExecContext(ctx, `UPDATE oauth_states SET started_at = ?, browser = ? WHERE id = ?`, toMS(at), browser, id)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthState{}, false, fmt.Errorf("store: oauth state: %w", ErrNotFound)
	}
	if err != nil {
		return OAuthState{}, false, fmt.Errorf("store: start oauth state: %w", err)
	}
	return s, first, nil
}

// TakeOAuthState returns the state id and deletes it, so that it is used
// once; the error wraps ErrNotFound when there is none (never issued,
// used already, or swept).
func (db *DB) TakeOAuthState(ctx context.Context, id string) (OAuthState, error) {
	var s OAuthState
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		var err error
		s, err = scanOAuthState(tx.QueryRowContext(ctx, `DELETE FROM oauth_states WHERE id = ? RETURNING `+oauthStateCols, id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthState{}, fmt.Errorf("store: oauth state: %w", ErrNotFound)
	}
	if err != nil {
		return OAuthState{}, fmt.Errorf("store: take oauth state: %w", err)
	}
	return s, nil
}

// SweepOAuthStates deletes the states that expired before now and returns
// how many.
func (db *DB) SweepOAuthStates(ctx context.Context, before time.Time) (int, error) {
	res, err := db.execSQL(ctx, `DELETE FROM oauth_states WHERE expires_at < ?`, toMS(before))
	if err != nil {
		return 0, fmt.Errorf("store: sweep oauth states: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// OAuthClient is a client Talon registered with an authorization server.
type OAuthClient struct {
	Server, Issuer, ClientID, ClientSecret string
	RegisteredAt                           time.Time
}

// GetOAuthClient returns the client registered for server with issuer; the
// error wraps ErrNotFound when there is none.
func (db *DB) GetOAuthClient(ctx context.Context, server, issuer string) (OAuthClient, error) {
	c := OAuthClient{Server: server, Issuer: issuer}
	var at int64
	err := db.r.QueryRowContext(ctx, `SELECT client_id, client_secret, registered_at FROM oauth_clients WHERE server = ? AND issuer = ?`,
		server, issuer).Scan(&c.ClientID, &c.ClientSecret, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthClient{}, fmt.Errorf("store: oauth client: %w", ErrNotFound)
	}
	if err != nil {
		return OAuthClient{}, fmt.Errorf("store: oauth client: %w", err)
	}
	c.RegisteredAt = fromMS(at)
	return c, nil
}

// PutOAuthClient stores (or replaces) a registered client.
func (db *DB) PutOAuthClient(ctx context.Context, c OAuthClient) error {
	_, err := db.execSQL(ctx, `INSERT INTO oauth_clients (server, issuer, client_id, client_secret, registered_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (server, issuer) DO UPDATE SET client_id = excluded.client_id, client_secret = excluded.client_secret,
			registered_at = excluded.registered_at`, c.Server, c.Issuer, c.ClientID, c.ClientSecret, toMS(c.RegisteredAt))
	if err != nil {
		return fmt.Errorf("store: put oauth client: %w", err)
	}
	return nil
}

// OAuthConnection is a user's connection to an MCP server, without its
// tokens (the vault holds them).
type OAuthConnection struct {
	Server, Principal, Issuer, ClientID, TokenURL, RevokeURL, Resource, Scopes string
	ExpiresAt, ConnectedAt, RefreshedAt                                        time.Time
}

const oauthConnCols = `server, principal, issuer, client_id, token_url, revoke_url, resource, scopes, expires_at, connected_at, refreshed_at`

func scanOAuthConn(sc interface{ Scan(...any) error }) (OAuthConnection, error) {
	var (
		c                    OAuthConnection
		exp, conn, refreshed int64
	)
	err := sc.Scan(&c.Server, &c.Principal, &c.Issuer, &c.ClientID, &c.TokenURL, &c.RevokeURL, &c.Resource, &c.Scopes, &exp, &conn, &refreshed)
	c.ExpiresAt, c.ConnectedAt, c.RefreshedAt = fromMS(exp), fromMS(conn), fromMS(refreshed)
	return c, err
}

// PutOAuthConnection stores (or replaces) a connection.
func (db *DB) PutOAuthConnection(ctx context.Context, c OAuthConnection) error {
	_, err := db.execSQL(ctx, `INSERT INTO oauth_connections (`+oauthConnCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (server, principal) DO UPDATE SET issuer = excluded.issuer, client_id = excluded.client_id,
			token_url = excluded.token_url, revoke_url = excluded.revoke_url, resource = excluded.resource, scopes = excluded.scopes,
			expires_at = excluded.expires_at, connected_at = excluded.connected_at, refreshed_at = excluded.refreshed_at`,
		c.Server, c.Principal, c.Issuer, c.ClientID, c.TokenURL, c.RevokeURL, c.Resource, c.Scopes,
		toMS(c.ExpiresAt), toMS(c.ConnectedAt), toMS(c.RefreshedAt))
	if err != nil {
		return fmt.Errorf("store: put oauth connection: %w", err)
	}
	return nil
}

// GetOAuthConnection returns principal's connection to server; the error
// wraps ErrNotFound when there is none.
func (db *DB) GetOAuthConnection(ctx context.Context, server, principal string) (OAuthConnection, error) {
	c, err := scanOAuthConn(db.r.QueryRowContext(ctx, `SELECT `+oauthConnCols+` FROM oauth_connections WHERE server = ? AND principal = ?`, server, principal))
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthConnection{}, fmt.Errorf("store: oauth connection: %w", ErrNotFound)
	}
	if err != nil {
		return OAuthConnection{}, fmt.Errorf("store: oauth connection: %w", err)
	}
	return c, nil
}

// DeleteOAuthConnection removes principal's connection to server and
// reports whether there was one.
func (db *DB) DeleteOAuthConnection(ctx context.Context, server, principal string) (bool, error) {
	res, err := db.execSQL(ctx, `DELETE FROM oauth_connections WHERE server = ? AND principal = ?`, server, principal)
	if err != nil {
		return false, fmt.Errorf("store: delete oauth connection: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// OAuthConnections lists the connections to server ("" for every server),
// or those of principal when it is not "".
func (db *DB) OAuthConnections(ctx context.Context, server, principal string) ([]OAuthConnection, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+oauthConnCols+` FROM oauth_connections
		WHERE (? = '' OR server = ?) AND (? = '' OR principal = ?) ORDER BY server, principal`, server, server, principal, principal)
	if err != nil {
		return nil, fmt.Errorf("store: list oauth connections: %w", err)
	}
	defer rows.Close()
	var out []OAuthConnection
	for rows.Next() {
		c, err := scanOAuthConn(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list oauth connections: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
