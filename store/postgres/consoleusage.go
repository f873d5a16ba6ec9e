package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/store"
)

// The usage of settled days, kept encoded one day a value in usage_days
// (migration 0028) under the usage generation: the console's first load of
// a period (Usage, its CSV, UsersByUsage at a month's end) reads a value a
// day rather than every principal's rows of every day, which PostgreSQL
// sorted and joined at 200–340 ms for 30 days of 10,000 users.

// usageDay is the usage rows of a settled day and their principals' ids
// (ids[i] is rows[i]'s).
type usageDay struct {
	rows []store.UsageRow
	ids  []int64
}

// settledDays returns the usage rows of the settled days from first to the
// one before end, by day, each day's in the order of Usage (principal,
// channel, model): settledDayValues decoded.
func (db *DB) settledDays(ctx context.Context, first, end int64) (map[int64]usageDay, error) {
	values, err := db.settledDayValues(ctx, first, end)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]usageDay, len(values))
	for day, v := range values {
		rows, ids, err := store.DecodeUsageDay(fromMS(day*dayMS), v)
		if err != nil {
			return nil, err
		}
		out[day] = usageDay{rows, ids}
	}
	return out, nil
}

// settledDayValues returns the values (store.EncodeUsageDay) of the
// settled days from first to the one before end, by day. Days kept in
// usage_days under the current generation are read there; the others are
// read from usage_daily and kept.
func (db *DB) settledDayValues(ctx context.Context, first, end int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, max(0, end-first))
	if first >= end {
		return out, nil
	}
	// The generation is read before any row: a day read after it and
	// kept under it holds while it does (as UsageSettled says).
	var gen int64
	if err := db.pool.QueryRow(ctx, `SELECT n FROM usage_generation`).Scan(&gen); err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, `SELECT day, data FROM usage_days WHERE day >= $1 AND day < $2 AND gen = $3`, first, end, gen)
	if err != nil {
		return nil, err
	}
	var day int64
	var data []byte
	if _, err := pgx.ForEachRow(rows, []any{&day, &data}, func() error {
		out[day] = data
		data = nil // a new slice for the next row
		return nil
	}); err != nil {
		return nil, err
	}
	var missing []int64
	for d := first; d < end; d++ {
		if _, ok := out[d]; !ok {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err = db.pool.Query(ctx, `
		SELECT u.day, u.principal_id, p.platform, p.workspace, p."user", u.channel, u.model, u.server, u.calls, u.input_tokens, u.output_tokens
		FROM usage_daily u JOIN principals p ON p.id = u.principal_id
		WHERE u.day >= $1 AND u.day <= $2 AND u.day = ANY($3) AND u.calls > 0
		ORDER BY u.day, u.principal_id, u.channel COLLATE "C", u.model COLLATE "C"`, missing[0], missing[len(missing)-1], missing)
	if err != nil {
		return nil, err
	}
	read := map[int64]usageDay{}
	var r store.UsageRow
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&day, &id, &r.Platform, &r.Workspace, &r.User, &r.Channel, &r.Model, &r.Server, &r.Calls, &r.InputTokens, &r.OutputTokens}, func() error {
		d := read[day]
		d.rows, d.ids = append(d.rows, r), append(d.ids, id)
		read[day] = d
		return nil
	}); err != nil {
		return nil, err
	}
	values := make([][]byte, len(missing))
	for i, d := range missing {
		values[i] = store.EncodeUsageDay(read[d].rows, read[d].ids)
		out[d] = values[i]
	}
	// Another reader may keep the same days at once: the newest
	// generation's stay.
	if _, err := db.pool.Exec(ctx, `
		INSERT INTO usage_days (day, gen, data) SELECT d, $2, v FROM unnest($1::BIGINT[], $3::BYTEA[]) AS t (d, v)
		ON CONFLICT (day) DO UPDATE SET gen = excluded.gen, data = excluded.data WHERE usage_days.gen < excluded.gen`,
		missing, gen, values); err != nil {
		return nil, err
	}
	return out, nil
}
