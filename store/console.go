package store

import (
	"context"
	"fmt"
	"time"

	"github.com/talonhq/talon/agent"
)

// What the operator's console reads: usage per day, turns and tokens per
// time bucket, turn durations, and its own audit log. Every read runs on the
// read-only pool; times are UTC.

// UsageRow is the model calls of one UTC day for one principal in one
// channel with one model, with the tokens their providers reported.
type UsageRow struct {
	Day                                       time.Time
	Platform, Workspace, User, Channel, Model string
	Calls, InputTokens, OutputTokens          int64
}

const dayMS = int64(24 * time.Hour / time.Millisecond)

// Usage returns the usage of the model calls made in [from, to), by day
// (newest first), principal, channel and model.
func (db *DB) Usage(ctx context.Context, from, to time.Time) ([]UsageRow, error) {
	rows, err := db.r.QueryContext(ctx, `
		SELECT ts.created_at / ?3 AS day, p.platform, p.workspace, p.user, s.channel, ts.model,
			count(*), sum(ts.input_tokens), sum(ts.output_tokens)
		FROM turn_steps ts
		JOIN turns t ON t.id = ts.turn_id
		JOIN sessions s ON s.id = t.session_id
		JOIN principals p ON p.id = s.principal_id
		WHERE ts.created_at >= ?1 AND ts.created_at < ?2
		GROUP BY day, p.id, s.channel, ts.model
		ORDER BY day DESC, p.platform, p.workspace, p.user, s.channel, ts.model`,
		toMS(from), toMS(to), dayMS)
	if err != nil {
		return nil, fmt.Errorf("store: usage: %w", err)
	}
	defer rows.Close()
	var out []UsageRow
	for rows.Next() {
		var u UsageRow
		var day int64
		if err := rows.Scan(&day, &u.Platform, &u.Workspace, &u.User, &u.Channel, &u.Model,
			&u.Calls, &u.InputTokens, &u.OutputTokens); err != nil {
			return nil, fmt.Errorf("store: usage: %w", err)
		}
		u.Day = fromMS(day * dayMS)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: usage: %w", err)
	}
	return out, nil
}

// TokenBucket is the tokens of the model calls of one model in one time
// bucket starting at Start.
type TokenBucket struct {
	Start                     time.Time
	Model                     string
	InputTokens, OutputTokens int64
}

// TokensPer sums the tokens of the model calls made since from, per bucket
// (aligned on the Unix epoch, so a day is a UTC day) and model, oldest first.
func (db *DB) TokensPer(ctx context.Context, from time.Time, bucket time.Duration) ([]TokenBucket, error) {
	b := bucket.Milliseconds()
	if b <= 0 {
		return nil, fmt.Errorf("store: tokens per bucket: bucket %v is not positive", bucket)
	}
	rows, err := db.r.QueryContext(ctx, `
		SELECT created_at / ?2 AS b, model, sum(input_tokens), sum(output_tokens)
		FROM turn_steps WHERE created_at >= ?1
		GROUP BY b, model ORDER BY b, model`, toMS(from), b)
	if err != nil {
		return nil, fmt.Errorf("store: tokens per bucket: %w", err)
	}
	defer rows.Close()
	var out []TokenBucket
	for rows.Next() {
		var t TokenBucket
		var n int64
		if err := rows.Scan(&n, &t.Model, &t.InputTokens, &t.OutputTokens); err != nil {
			return nil, fmt.Errorf("store: tokens per bucket: %w", err)
		}
		t.Start = fromMS(n * b)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tokens per bucket: %w", err)
	}
	return out, nil
}

// TurnBucket is the turns started in one time bucket, and how many of them
// failed.
type TurnBucket struct {
	Start         time.Time
	Turns, Failed int64
}

// TurnsPer counts the turns started since from per bucket, oldest first.
func (db *DB) TurnsPer(ctx context.Context, from time.Time, bucket time.Duration) ([]TurnBucket, error) {
	b := bucket.Milliseconds()
	if b <= 0 {
		return nil, fmt.Errorf("store: turns per bucket: bucket %v is not positive", bucket)
	}
	rows, err := db.r.QueryContext(ctx, `
		SELECT started_at / ?2 AS b, count(*), sum(state = 'failed')
		FROM turns WHERE started_at >= ?1
		GROUP BY b ORDER BY b`, toMS(from), b)
	if err != nil {
		return nil, fmt.Errorf("store: turns per bucket: %w", err)
	}
	defer rows.Close()
	var out []TurnBucket
	for rows.Next() {
		var t TurnBucket
		var n int64
		if err := rows.Scan(&n, &t.Turns, &t.Failed); err != nil {
			return nil, fmt.Errorf("store: turns per bucket: %w", err)
		}
		t.Start = fromMS(n * b)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: turns per bucket: %w", err)
	}
	return out, nil
}

// TurnDurations returns how long each turn started since from took, for
// the turns that have finished, shortest first.
func (db *DB) TurnDurations(ctx context.Context, from time.Time) ([]time.Duration, error) {
	rows, err := db.r.QueryContext(ctx, `
		SELECT finished_at - started_at AS d FROM turns
		WHERE started_at >= ? AND finished_at IS NOT NULL ORDER BY d`, toMS(from))
	if err != nil {
		return nil, fmt.Errorf("store: turn durations: %w", err)
	}
	defer rows.Close()
	var out []time.Duration
	for rows.Next() {
		var ms int64
		if err := rows.Scan(&ms); err != nil {
			return nil, fmt.Errorf("store: turn durations: %w", err)
		}
		out = append(out, time.Duration(ms)*time.Millisecond)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: turn durations: %w", err)
	}
	return out, nil
}

// ConsoleAction is one entry of the console's audit log: who did what to
// what, from where.
type ConsoleAction struct {
	At                    time.Time
	Actor, Action, Target string
	Remote                string
}

// AddConsoleAction appends a to the console's audit log (At defaults to now).
func (db *DB) AddConsoleAction(ctx context.Context, a ConsoleAction) error {
	at := toMS(a.At)
	if at == 0 {
		at = db.now()
	}
	if _, err := db.execSQL(ctx, `INSERT INTO console_audit (at, actor, action, target, remote) VALUES (?, ?, ?, ?, ?)`,
		at, a.Actor, a.Action, a.Target, a.Remote); err != nil {
		return fmt.Errorf("store: console audit: %w", err)
	}
	return nil
}

// ConsoleActions returns the latest limit entries of the console's audit
// log, newest first.
func (db *DB) ConsoleActions(ctx context.Context, limit int) ([]ConsoleAction, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT at, actor, action, target, remote FROM console_audit ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: console audit: %w", err)
	}
	defer rows.Close()
	var out []ConsoleAction
	for rows.Next() {
		var a ConsoleAction
		var at int64
		if err := rows.Scan(&at, &a.Actor, &a.Action, &a.Target, &a.Remote); err != nil {
			return nil, fmt.Errorf("store: console audit: %w", err)
		}
		a.At = fromMS(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: console audit: %w", err)
	}
	return out, nil
}

// PrincipalTokens sums the tokens (input and output) of p's model calls
// made since since.
func (db *DB) PrincipalTokens(ctx context.Context, p agent.Principal, since time.Time) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `
		SELECT coalesce(sum(ts.input_tokens + ts.output_tokens), 0)
		FROM principals p
		JOIN sessions s ON s.principal_id = p.id
		JOIN turns t ON t.session_id = s.id
		JOIN turn_steps ts ON ts.turn_id = t.id
		WHERE p.platform = ? AND p.workspace = ? AND p.user = ? AND ts.created_at >= ?`,
		p.Platform, p.Workspace, p.User, toMS(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: principal tokens: %w", err)
	}
	return n, nil
}

// WorkspaceTokens sums the tokens of the model calls of every principal of
// one workspace since since.
func (db *DB) WorkspaceTokens(ctx context.Context, platform, workspace string, since time.Time) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `
		SELECT coalesce(sum(ts.input_tokens + ts.output_tokens), 0)
		FROM turn_steps ts
		JOIN turns t ON t.id = ts.turn_id
		JOIN sessions s ON s.id = t.session_id
		JOIN principals p ON p.id = s.principal_id
		WHERE ts.created_at >= ? AND p.platform = ? AND p.workspace = ?`,
		toMS(since), platform, workspace).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: workspace tokens: %w", err)
	}
	return n, nil
}

var _ agent.UsageMeter = (*DB)(nil)
