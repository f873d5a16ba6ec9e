package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
)

// What the operator's console reads: usage per day, turns and tokens per
// time bucket, turn durations, and its own audit log. Every read runs on the
// read-only pool; times are UTC.

// UsageRow is the model calls of one UTC day for one principal in one
// channel with one model, with the tokens their providers reported.
type UsageRow struct {
	Day                                       time.Time
	Platform, Workspace, User, Channel, Model string
	// Server is the Discord server the channel lies in ("" in a DM, on
	// Slack, and for usage recorded before servers were).
	Server                           string
	Calls, InputTokens, OutputTokens int64
}

const dayMS = int64(24 * time.Hour / time.Millisecond)

// Usage returns the usage of the model calls made on the UTC days from
// from's to the one before to's, by day (newest first), principal, channel
// and model (principals in the order they were first seen). Settled days
// (UsageSettled) are read once and kept (usageCache); later days are always
// read.
func (db *DB) Usage(ctx context.Context, from, to time.Time) ([]UsageRow, error) {
	settled := db.settledDay()
	days := make([][]UsageRow, 0, max(0, dayOf(to)-dayOf(from)))
	n := 0
	for d := dayOf(to) - 1; d >= dayOf(from); d-- {
		day, err := db.usageDay(ctx, d, d < settled)
		if err != nil {
			return nil, fmt.Errorf("store: usage: %w", err)
		}
		days = append(days, day.rows)
		n += len(day.rows)
	}
	out := make([]UsageRow, 0, n)
	for _, rows := range days {
		out = append(out, rows...)
	}
	return out, nil
}

// usageGrace is how long after a UTC day ends its usage is taken as
// settled: long enough for a step recorded just before midnight to have
// committed.
const usageGrace = time.Minute

// settledDay is the first UTC day whose usage is not settled yet.
func (db *DB) settledDay() int64 { return dayOf(db.Now().Add(-usageGrace)) }

// UsageSettled returns a generation and the time before which usage is
// settled: what Usage returns for the days before before, read after
// UsageSettled returned gen, holds as long as UsageSettled returns gen
// again. (It changes when a resumed turn records again a step of a settled
// day.) A reader can keep what it derives from settled days under gen.
func (db *DB) UsageSettled(context.Context) (gen uint64, before time.Time, err error) {
	before = fromMS(db.settledDay() * dayMS)
	return db.usage.generation(), before, nil
}

// usageDayRows is the usage of one day: its rows, their principals' ids
// (ids[i] is rows[i]'s) and their sums per model.
type usageDayRows struct {
	rows   []UsageRow
	ids    []int64
	models []TokenBucket
}

// usageDay reads the usage of one day, from the cache when cache is set (a
// settled day) and it holds it, else from usage_days (migration 0030) when
// it holds it, else from usage_daily; a settled day read from there is
// kept in usage_days too.
func (db *DB) usageDay(ctx context.Context, day int64, cache bool) (usageDayRows, error) {
	gen, cached, ok := db.usage.get(day)
	if cache && ok {
		return cached, nil
	}
	at := fromMS(day * dayMS)
	var d usageDayRows
	kept := false
	if cache {
		var data []byte
		switch err := db.r.QueryRowContext(ctx, `SELECT data FROM usage_days WHERE day = ?`, day).Scan(&data); {
		case err == nil:
			if d.rows, d.ids, err = DecodeUsageDay(at, data); err != nil {
				return usageDayRows{}, err
			}
			kept = true
		case !errors.Is(err, sql.ErrNoRows):
			return usageDayRows{}, err
		}
	}
	if !kept {
		rs, err := db.r.QueryContext(ctx, `
			SELECT u.principal_id, p.platform, p.workspace, p.user, u.channel, u.model, u.server, u.calls, u.input_tokens, u.output_tokens
			FROM usage_daily u JOIN principals p ON p.id = u.principal_id
			WHERE u.day = ? AND u.calls > 0
			ORDER BY u.principal_id, u.channel, u.model`, day)
		if err != nil {
			return usageDayRows{}, err
		}
		defer rs.Close()
		for rs.Next() {
			u := UsageRow{Day: at}
			var id int64
			if err := rs.Scan(&id, &u.Platform, &u.Workspace, &u.User, &u.Channel, &u.Model, &u.Server, &u.Calls, &u.InputTokens, &u.OutputTokens); err != nil {
				return usageDayRows{}, err
			}
			d.rows, d.ids = append(d.rows, u), append(d.ids, id)
		}
		if err := rs.Err(); err != nil {
			return usageDayRows{}, err
		}
	}
	if cache {
		if !kept {
			if err := db.keepUsageDay(ctx, day, gen, EncodeUsageDay(d.rows, d.ids)); err != nil {
				return usageDayRows{}, err
			}
		}
		d.models = modelSums(at, d.rows)
		db.usage.put(day, gen, d)
	}
	return d, nil
}

// keepUsageDay keeps a settled day's value in usage_days, read after the
// usage cache's generation was gen, unless a step of some day has been
// replaced since (the writer that replaces one moves the generation on
// before it deletes the day's value, in its transaction).
func (db *DB) keepUsageDay(ctx context.Context, day int64, gen uint64, data []byte) error {
	return db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if db.usage.generation() != gen {
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO usage_days (day, data) VALUES (?, ?)`, day, data)
		return err
	})
}

// modelSums sums the tokens of rows (one day's, starting at day) per
// model, in the order of the models' names.
func modelSums(day time.Time, rows []UsageRow) []TokenBucket {
	var out []TokenBucket
	for _, u := range rows {
		i, found := slices.BinarySearchFunc(out, u.Model, func(t TokenBucket, m string) int { return strings.Compare(t.Model, m) })
		if !found {
			out = slices.Insert(out, i, TokenBucket{Start: day, Model: u.Model})
		}
		out[i].InputTokens += u.InputTokens
		out[i].OutputTokens += u.OutputTokens
	}
	return out
}

// usageCache keeps the usage of settled days, which changes only when a
// resumed turn records a step of that day again: stepTx drops the day when
// it replaces such a step, and again once its transaction has ended, and a
// read that overlapped either drop does not store what it read.
type usageCache struct {
	mu sync.Mutex
	// gen counts drops; days holds the usage by day, at most
	// maxUsageCacheDays; guarded by mu.
	gen  uint64
	days map[int64]usageDayRows
}

const maxUsageCacheDays = 400

func (c *usageCache) get(day int64) (gen uint64, d usageDayRows, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok = c.days[day]
	return c.gen, d, ok
}

func (c *usageCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *usageCache) put(day int64, gen uint64, d usageDayRows) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.days == nil || len(c.days) >= maxUsageCacheDays {
		c.days = map[int64]usageDayRows{}
	}
	c.days[day] = d
}

func (c *usageCache) drop(day int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.days, day)
}

func (c *usageCache) dropAfterCommit(day int64) {
	if day >= 0 {
		c.drop(day)
	}
}

// TokenBucket is the tokens of the model calls of one model in one time
// bucket starting at Start.
type TokenBucket struct {
	Start                     time.Time
	Model                     string
	InputTokens, OutputTokens int64
}

// TokensPerDay sums the tokens of the model calls made since from's UTC
// day, per day and model, oldest first. Settled days come from the usage
// cache (as Usage's do), when they are few enough to be kept.
func (db *DB) TokensPerDay(ctx context.Context, from time.Time) ([]TokenBucket, error) {
	first, settled := dayOf(from), db.settledDay()
	var out []TokenBucket
	if settled-first <= maxUsageCacheDays/2 {
		for ; first < settled; first++ {
			day, err := db.usageDay(ctx, first, true)
			if err != nil {
				return nil, fmt.Errorf("store: tokens per day: %w", err)
			}
			out = append(out, day.models...)
		}
	}
	rows, err := db.r.QueryContext(ctx, `
		SELECT day, model, sum(input_tokens), sum(output_tokens)
		FROM usage_daily WHERE day >= ? AND calls > 0
		GROUP BY day, model ORDER BY day, model`, first)
	if err != nil {
		return nil, fmt.Errorf("store: tokens per day: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t TokenBucket
		var n int64
		if err := rows.Scan(&n, &t.Model, &t.InputTokens, &t.OutputTokens); err != nil {
			return nil, fmt.Errorf("store: tokens per day: %w", err)
		}
		t.Start = fromMS(n * dayMS)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tokens per day: %w", err)
	}
	return out, nil
}

// dayOf is the UTC day number of t (unix days).
func dayOf(t time.Time) int64 { return t.UnixMilli() / dayMS }

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

// RecordModelUse adds one model call made for session s outside a turn's
// steps (a summary) to the daily usage sums, under the session's principal
// and channel, today.
func (db *DB) RecordModelUse(ctx context.Context, s agent.SessionID, model string, u llm.Usage) error {
	_, err := db.execSQL(ctx, `INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens, server)
		SELECT ?1 / 86400000, s.principal_id, s.channel, ?2, 1, ?3, ?4, s.server FROM sessions s WHERE s.id = ?5
		ON CONFLICT (day, principal_id, channel, model) DO UPDATE SET calls = calls + 1,
			input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
			server = CASE WHEN excluded.server != '' THEN excluded.server ELSE usage_daily.server END`,
		db.now(), model, u.InputTokens, u.OutputTokens, s)
	if err != nil {
		return fmt.Errorf("store: record model use: %w", err)
	}
	return nil
}

// PrincipalTokens sums the tokens (input and output) of p's model calls
// made since since's UTC day began.
func (db *DB) PrincipalTokens(ctx context.Context, p agent.Principal, since time.Time) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `
		SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0)
		FROM principals p JOIN usage_daily u ON u.principal_id = p.id
		WHERE p.platform = ? AND p.workspace = ? AND p.user = ? AND u.day >= ?`,
		p.Platform, p.Workspace, p.User, dayOf(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: principal tokens: %w", err)
	}
	return n, nil
}

// WorkspaceTokens sums the tokens of the model calls of every principal of
// one workspace since since's UTC day began.
func (db *DB) WorkspaceTokens(ctx context.Context, platform, workspace string, since time.Time) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `
		SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0)
		FROM principals p JOIN usage_daily u ON u.principal_id = p.id
		WHERE p.platform = ? AND p.workspace = ? AND u.day >= ?`,
		platform, workspace, dayOf(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: workspace tokens: %w", err)
	}
	return n, nil
}

// ServerTokens sums the tokens of the model calls of the sessions run in
// a Discord server since since's UTC day began (see migration 0026).
func (db *DB) ServerTokens(ctx context.Context, server string, since time.Time) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `
		SELECT coalesce(sum(input_tokens + output_tokens), 0)
		FROM usage_daily WHERE server = ? AND server != '' AND day >= ?`,
		server, dayOf(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: server tokens: %w", err)
	}
	return n, nil
}

var (
	_ agent.UsageMeter  = (*DB)(nil)
	_ agent.ServerMeter = (*DB)(nil)
)

// UserUsage is one principal's use of the model this month and today, and
// the last day they used it.
type UserUsage struct {
	Platform, Workspace, User string
	Month, Today              int64
	LastDay                   time.Time
}

// UsersByUsage returns the principals who used the model since month's UTC
// day, most tokens first, at most limit, narrowed to those whose
// "platform:workspace:user" contains match (when not ""; ASCII letters in
// either case); and how many matched in all. The sums of the settled days
// are kept under the usage generation (UsageSettled), so a load sums only
// the days since.
func (db *DB) UsersByUsage(ctx context.Context, month, today time.Time, match string, limit int) ([]UserUsage, int, error) {
	first, todayDay := dayOf(month), dayOf(today)
	gen, settled := db.usage.generation(), db.settledDay()
	from := first
	totals := map[int64]UserTotal{}
	if first < settled && settled <= todayDay {
		old, ok := db.users.Get(gen, first, settled)
		if !ok {
			old = map[int64]UserTotal{}
			for d := first; d < settled; d++ {
				day, err := db.usageDay(ctx, d, true)
				if err != nil {
					return nil, 0, fmt.Errorf("store: users by usage: %w", err)
				}
				AddUsageDayTotals(old, d, todayDay, day.rows, day.ids)
			}
			db.users.Put(gen, first, settled, old)
		}
		maps.Copy(totals, old)
		from = settled
	}
	recent, err := db.userTotals(ctx, from, -1, todayDay)
	if err != nil {
		return nil, 0, fmt.Errorf("store: users by usage: %w", err)
	}
	AddUserTotals(totals, recent)
	out, total := RankUsers(totals, match, limit)
	return out, total, nil
}

// userTotals sums each principal's model calls of the days from from to
// the one before to (to < 0: no end), today's from todayDay on. The days
// are read by the primary key's range and summed before the principals
// are joined: grouped by the principal index instead, SQLite read every
// day's entries and looked up each row (a month of 10,000 users: 127–147
// ms).
func (db *DB) userTotals(ctx context.Context, from, to, todayDay int64) (map[int64]UserTotal, error) {
	if to < 0 {
		to = math.MaxInt64
	}
	rows, err := db.r.QueryContext(ctx, `
		SELECT u.principal_id, p.platform, p.workspace, p.user, u.month, u.today, u.last
		FROM (SELECT principal_id, sum(input_tokens + output_tokens) AS month,
				sum(CASE WHEN day >= ?3 THEN input_tokens + output_tokens ELSE 0 END) AS today, max(day) AS last
			FROM usage_daily WHERE day >= ?1 AND day < ?2 AND calls > 0 GROUP BY +principal_id) u
		JOIN principals p ON p.id = u.principal_id`, from, to, todayDay)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]UserTotal{}
	for rows.Next() {
		var t UserTotal
		if err := rows.Scan(&t.ID, &t.Platform, &t.Workspace, &t.User, &t.Month, &t.Today, &t.LastDay); err != nil {
			return nil, err
		}
		out[t.ID] = t
	}
	return out, rows.Err()
}

// UserTotal is one principal's tokens over some days, for RankUsers.
type UserTotal struct {
	// ID is the principal's id in its store: principals with as many
	// tokens rank in the order they were first seen.
	ID                        int64
	Platform, Workspace, User string
	// Month and Today are the tokens of the days summed and of today;
	// LastDay is the last of those days with a model call (unix day).
	Month, Today, LastDay int64
}

// AddUserTotals adds the figures of add to those of totals, by principal.
func AddUserTotals(totals, add map[int64]UserTotal) {
	for id, t := range add {
		o, ok := totals[id]
		if !ok {
			totals[id] = t
			continue
		}
		o.Month += t.Month
		o.Today += t.Today
		o.LastDay = max(o.LastDay, t.LastDay)
		totals[id] = o
	}
}

// RankUsers returns what UsersByUsage does from the principals' totals:
// those whose "platform:workspace:user" contains match (ASCII letters in
// either case, as SQL's LIKE), most tokens first, then in the order they
// were first seen, at most limit; and how many matched.
func RankUsers(totals map[int64]UserTotal, match string, limit int) ([]UserUsage, int) {
	match = asciiLower(match)
	list := make([]UserTotal, 0, len(totals))
	for _, t := range totals {
		if match == "" || strings.Contains(asciiLower(t.Platform+":"+t.Workspace+":"+t.User), match) {
			list = append(list, t)
		}
	}
	slices.SortFunc(list, func(a, b UserTotal) int {
		if a.Month != b.Month {
			return cmp.Compare(b.Month, a.Month)
		}
		return cmp.Compare(a.ID, b.ID)
	})
	out := make([]UserUsage, 0, min(len(list), max(limit, 0)))
	for _, t := range list[:min(len(list), max(limit, 0))] {
		out = append(out, UserUsage{Platform: t.Platform, Workspace: t.Workspace, User: t.User, Month: t.Month, Today: t.Today, LastDay: fromMS(t.LastDay * dayMS)})
	}
	return out, len(list)
}

// asciiLower lowers the ASCII letters of s, as SQLite's LIKE compares them.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// UsersCache keeps the principals' totals of the settled days of a month
// under the usage generation (UsageSettled), for UsersByUsage: one month,
// the one asked last. Its zero value is empty.
type UsersCache struct {
	mu sync.Mutex
	// gen, first and settled say which totals are kept; guarded by mu.
	gen            uint64
	first, settled int64
	totals         map[int64]UserTotal
}

// Get returns the totals kept for these days under gen.
func (c *UsersCache) Get(gen uint64, first, settled int64) (map[int64]UserTotal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.totals == nil || c.gen != gen || c.first != first || c.settled != settled {
		return nil, false
	}
	return c.totals, true
}

// Put keeps totals (never changed after) for these days under gen, read
// after gen was.
func (c *UsersCache) Put(gen uint64, first, settled int64, totals map[int64]UserTotal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen, c.first, c.settled, c.totals = gen, first, settled, totals
}

// ToolStat is how one tool was called since a time.
type ToolStat struct {
	Name          string
	Calls, Errors int64
	Last          time.Time
}

// ToolStats counts the calls of each tool started since since, and its
// calls that ended in an error.
func (db *DB) ToolStats(ctx context.Context, since time.Time) ([]ToolStat, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT name, count(*), sum(is_error), max(started_at) FROM tool_calls
		WHERE started_at >= ? GROUP BY name ORDER BY name`, toMS(since))
	if err != nil {
		return nil, fmt.Errorf("store: tool stats: %w", err)
	}
	defer rows.Close()
	var out []ToolStat
	for rows.Next() {
		var s ToolStat
		var last int64
		if err := rows.Scan(&s.Name, &s.Calls, &s.Errors, &last); err != nil {
			return nil, fmt.Errorf("store: tool stats: %w", err)
		}
		s.Last = fromMS(last)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tool stats: %w", err)
	}
	return out, nil
}
