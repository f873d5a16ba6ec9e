package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/talonhq/talon/store"
)

// The usage of settled days, kept encoded one day a value in usage_days
// (migration 0028) under the usage generation: the console's first load of
// a period (Usage, its CSV, UsersByUsage at a month's end) reads a value a
// day rather than every principal's rows of every day, which PostgreSQL
// sorted and joined at 200–340 ms for 30 days of 10,000 users.

// dayRow is one usage row of a settled day, with its principal's id.
type dayRow struct {
	principal int64
	store.UsageRow
}

// settledDays returns the usage rows of the settled days from first to the
// one before end, by day, each day's in the order of Usage (principal,
// channel, model). Days kept in usage_days under the current generation
// are decoded; the others are read from usage_daily and kept.
func (db *DB) settledDays(ctx context.Context, first, end int64) (map[int64][]dayRow, error) {
	out := make(map[int64][]dayRow, max(0, end-first))
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
		d, err := decodeDay(day, data)
		out[day] = d
		return err
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
	var r dayRow
	if _, err := pgx.ForEachRow(rows, []any{&day, &r.principal, &r.Platform, &r.Workspace, &r.User, &r.Channel, &r.Model, &r.Server, &r.Calls, &r.InputTokens, &r.OutputTokens}, func() error {
		r.Day = fromMS(day * dayMS)
		out[day] = append(out[day], r)
		return nil
	}); err != nil {
		return nil, err
	}
	data2 := make([][]byte, len(missing))
	for i, d := range missing {
		data2[i] = encodeDay(out[d])
	}
	// Another reader may keep the same days at once: the newest
	// generation's stay.
	if _, err := db.pool.Exec(ctx, `
		INSERT INTO usage_days (day, gen, data) SELECT d, $2, v FROM unnest($1::BIGINT[], $3::BYTEA[]) AS t (d, v)
		ON CONFLICT (day) DO UPDATE SET gen = excluded.gen, data = excluded.data WHERE usage_days.gen < excluded.gen`,
		missing, gen, data2); err != nil {
		return nil, err
	}
	return out, nil
}

// A day's value: version 1, its strings (uvarint count, then each as
// uvarint length and bytes), then its rows (uvarint count, then each as
// the principal's id, the indexes of platform, workspace, user, channel,
// model and server among the strings, and calls, input and output tokens
// as varints).
const dayFormat = 1

func encodeDay(rows []dayRow) []byte {
	index := map[string]uint64{}
	var strs []string
	idx := func(s string) uint64 {
		i, ok := index[s]
		if !ok {
			i = uint64(len(strs))
			index[s] = i
			strs = append(strs, s)
		}
		return i
	}
	body := make([]byte, 0, 24*len(rows))
	for _, r := range rows {
		body = binary.AppendUvarint(body, uint64(r.principal))
		for _, s := range [...]string{r.Platform, r.Workspace, r.User, r.Channel, r.Model, r.Server} {
			body = binary.AppendUvarint(body, idx(s))
		}
		body = binary.AppendVarint(body, r.Calls)
		body = binary.AppendVarint(body, r.InputTokens)
		body = binary.AppendVarint(body, r.OutputTokens)
	}
	b := []byte{dayFormat}
	b = binary.AppendUvarint(b, uint64(len(strs)))
	for _, s := range strs {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(rows)))
	return append(b, body...)
}

var errDayValue = errors.New("a day's value in usage_days does not decode")

func decodeDay(day int64, b []byte) ([]dayRow, error) {
	if len(b) == 0 || b[0] != dayFormat {
		return nil, fmt.Errorf("%w (day %d)", errDayValue, day)
	}
	b = b[1:]
	bad := false
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	sv := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	ns := uv()
	if bad || ns > uint64(len(b)) {
		return nil, fmt.Errorf("%w (day %d)", errDayValue, day)
	}
	strs := make([]string, ns)
	for i := range strs {
		l := uv()
		if bad || l > uint64(len(b)) {
			return nil, fmt.Errorf("%w (day %d)", errDayValue, day)
		}
		strs[i], b = string(b[:l]), b[l:]
	}
	nr := uv()
	if bad || nr > uint64(len(b)) {
		return nil, fmt.Errorf("%w (day %d)", errDayValue, day)
	}
	at := fromMS(day * dayMS)
	out := make([]dayRow, nr)
	str := func() string {
		i := uv()
		if i >= uint64(len(strs)) {
			bad = true
			return ""
		}
		return strs[i]
	}
	for i := range out {
		r := &out[i]
		r.Day = at
		r.principal = int64(uv())
		r.Platform, r.Workspace, r.User, r.Channel, r.Model, r.Server = str(), str(), str(), str(), str(), str()
		r.Calls, r.InputTokens, r.OutputTokens = sv(), sv(), sv()
		if bad {
			return nil, fmt.Errorf("%w (day %d)", errDayValue, day)
		}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w (day %d)", errDayValue, day)
	}
	return out, nil
}
