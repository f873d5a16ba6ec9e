package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// What the console derives from a period's settled days, kept in
// usage_periods (migration 0029) under a name it chooses and the usage
// generation, so that a console with nothing in memory (a restart, another
// replica) reads one value instead of the period's rows.

// KeptUsagePeriod returns the value kept under name for the settled days
// from from's UTC day to the one before end's, when it was derived after
// UsageSettled returned gen (nil when none was).
func (db *DB) KeptUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time) ([]byte, error) {
	var data []byte
	err := db.pool.QueryRow(ctx, `SELECT data FROM usage_periods WHERE name = $1 AND first_day = $2 AND end_day = $3 AND gen = $4`,
		name, dayOf(from), dayOf(end), int64(gen)).Scan(&data)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("postgres: kept usage period: %w", err)
	}
	return data, nil
}

// KeepUsagePeriod keeps data under name and gen for the settled days from
// from's UTC day to the one before end's, derived from what Usage returned
// after UsageSettled returned gen (a value of an older generation is
// replaced, a newer one stays). The periods kept that end before end are
// deleted: no page asks for them again.
func (db *DB) KeepUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time, data []byte) error {
	first, last := dayOf(from), dayOf(end)
	if last > dayOf(db.Now().Add(-usageGrace)) || first >= last {
		return fmt.Errorf("postgres: keep usage period: %v to %v is not a period of settled days", from, end)
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM usage_periods WHERE end_day < $1`, last)
	b.Queue(`INSERT INTO usage_periods (name, first_day, end_day, gen, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name, first_day, end_day) DO UPDATE SET gen = excluded.gen, data = excluded.data WHERE usage_periods.gen < excluded.gen`,
		name, first, last, int64(gen), data)
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: keep usage period: %w", err)
	}
	return nil
}
