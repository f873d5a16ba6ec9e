package store_test

import (
	"strings"
	"testing"

	"github.com/talonhq/talon/store"
)

// The read the adapters make for every thread message they may follow is
// a lookup of the primary key, and the prune walks the age index.
func TestFollowedThreadsQueryPlans(t *testing.T) {
	db, _ := open(t)
	var detail string
	var id, parent, notused int
	store.QueryRow(t, db, `EXPLAIN QUERY PLAN SELECT count(*) FROM followed_threads
		WHERE platform = 'slack' AND workspace = 'T1' AND channel = 'C1' AND thread = '1' AND user = 'U1' AND active_at >= 0`,
		nil, &id, &parent, &notused, &detail)
	if !strings.Contains(detail, "PRIMARY KEY") {
		t.Errorf("following reads with %q, want the primary key", detail)
	}
	store.QueryRow(t, db, `EXPLAIN QUERY PLAN DELETE FROM followed_threads WHERE platform = 'slack' AND active_at < 5`,
		nil, &id, &parent, &notused, &detail)
	if !strings.Contains(detail, "followed_threads_age") {
		t.Errorf("the prune deletes with %q, want the followed_threads_age index", detail)
	}
}
