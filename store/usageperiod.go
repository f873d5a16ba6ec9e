package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// What the console derives from a period's settled days, kept in
// usage_periods (migration 0031) under a name it chooses, so that a console
// with nothing in memory reads one value instead of the period's rows.

// KeptUsagePeriod returns the value kept under name for the settled days
// from from's UTC day to the one before end's, when it was derived after
// UsageSettled returned gen and still holds (nil when none does).
func (db *DB) KeptUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time) ([]byte, error) {
	// On SQLite a value that no longer holds is not there: the resumed
	// turn that changes one of its days deletes it in its transaction.
	var data []byte
	err := db.r.QueryRowContext(ctx, `SELECT data FROM usage_periods WHERE name = ? AND first_day = ? AND end_day = ?`, name, dayOf(from), dayOf(end)).Scan(&data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("store: kept usage period: %w", err)
	}
	return data, nil
}

// KeepUsagePeriod keeps data under name for the settled days from from's UTC
// day to the one before end's, derived from what Usage returned after
// UsageSettled returned gen, unless a settled day's step has been replaced
// since. The periods kept that end before end are deleted: no page asks
// for them again.
func (db *DB) KeepUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time, data []byte) error {
	first, last := dayOf(from), dayOf(end)
	if last > db.settledDay() || first >= last {
		return fmt.Errorf("store: keep usage period: %v to %v is not a period of settled days", from, end)
	}
	err := db.inTx(ctx, func(ctx context.Context, tx *wtx) error {
		if db.usage.generation() != gen {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM usage_periods WHERE end_day < ?`, last); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO usage_periods (name, first_day, end_day, data) VALUES (?, ?, ?, ?)`, name, first, last, data)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: keep usage period: %w", err)
	}
	return nil
}
