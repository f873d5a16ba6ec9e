package store

import (
	"context"
	"fmt"
)

// Ping checks that the database answers reads and writes.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.r.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping readers: %w", err)
	}
	if err := db.w.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping writer: %w", err)
	}
	return nil
}
