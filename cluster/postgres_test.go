package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
)

// postgresStore opens the PostgreSQL store in a fresh schema of the
// database TALON_TEST_POSTGRES names (dropped at the end), or skips.
func postgresStore(t *testing.T) *postgres.DB {
	t.Helper()
	u := pgtest.URL(t)
	ctx := context.Background()
	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestNodeOnPostgres: three replicas on the PostgreSQL store answer every
// message once, in order per session.
func TestNodeOnPostgres(t *testing.T) {
	db := postgresStore(t)
	f := newFixtureOn(t, testNATS(t), "talon", db)
	rs := []*replica{f.start("a"), f.start("b"), f.start("c")}
	eventually(t, 10*testTTL, "8 partitions held", func() bool {
		n := 0
		for _, r := range rs {
			n += len(r.node.Held())
		}
		return n == 8
	})
	var ids []agent.InboundID
	for i := range 60 {
		q, err := rs[i%3].rt.Accept(context.Background(), agent.Inbound{DedupeKey: fmt.Sprint("pg", i), Key: key(i%7, 0), Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, q.ID)
	}
	f.checkAnswered(ids, 60*time.Second)
}
