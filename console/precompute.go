package console

import (
	"context"
	"time"
)

// precomputeAfter is how long after a UTC midnight Precompute first asks
// the store whether the day before is settled; precomputeRetry how long it
// waits to ask again while it is not (the store's grace: a minute on
// SQLite, ten on PostgreSQL) and after a failure. Variables for the tests.
var (
	precomputeAfter = time.Minute
	precomputeRetry = time.Minute
)

// Precompute derives the default period's settled days (what the Usage
// page and its CSV show without ?days=: their sums and CSV lines) and keeps
// them, in memory and, when the store keeps periods (keptUsage), in the
// store, as a page load does: once now, and again each time the store
// settles a new day (shortly after each UTC midnight, once the store's
// grace has passed, which it learns by asking UsageSettled). So the first
// load of a day, on this replica or on one opened later, reads one kept
// value instead of the 30 days; and has the store sum the month's settled
// days for the Users page (kept in the store's memory). It returns when ctx ends; run it in its
// own goroutine, after Handler (it does not hold up serving: a page load meanwhile
// derives the period as it would without it).
func (s *Server) Precompute(ctx context.Context) {
	if _, ok := s.Store.(settledUsage); !ok || s.Now == nil {
		return // nothing to keep (every load reads the rows), or no Handler yet
	}
	var done usagePeriod // the period kept last
	for {
		wait := precomputeRetry
		p, err := s.periodOf(ctx, defaultUsageDays)
		if err == nil && !(done.ok && done.gen == p.gen && done.from.Equal(p.from) && done.settled.Equal(p.settled)) {
			if err = s.precompute(ctx, p); err == nil {
				done = p
			}
		}
		switch today := p.to.AddDate(0, 0, -1); {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			s.Log.Warn().Err(err).Msg("console: pre-compute the usage of settled days")
		case !p.settled.Before(today):
			// Every day before today is settled: the next one after
			// midnight.
			wait = p.to.Sub(s.Now()) + precomputeAfter
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// precompute derives and keeps p's settled days' sums and CSV lines, by
// the code a page load runs, and has the store sum the month's settled
// days for the Users page as its load does (both stores keep those totals
// in memory only: this warms this process's store, not usage_periods).
func (s *Server) precompute(ctx context.Context, p usagePeriod) error {
	if !p.ok || !p.settled.After(p.from) {
		return nil
	}
	if _, err := s.settledSums(ctx, p); err != nil {
		return err
	}
	if _, err := s.settledCSV(ctx, p); err != nil {
		return err
	}
	now := s.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	_, _, err := s.Store.UsersByUsage(ctx, month, now.Truncate(24*time.Hour), "", 1)
	return err
}
