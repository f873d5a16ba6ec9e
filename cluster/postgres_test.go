package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store/postgres"
)

// postgresStore opens the PostgreSQL store in a fresh schema of the
// database TALON_TEST_POSTGRES names (dropped at the end), or skips.
func postgresStore(t *testing.T) *postgres.DB {
	t.Helper()
	base := os.Getenv("TALON_TEST_POSTGRES")
	if base == "" {
		t.Skip("set TALON_TEST_POSTGRES=postgres://root@127.0.0.1:5432/test?sslmode=disable to run this test on PostgreSQL")
	}
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "talon_cluster_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	db, err := postgres.Open(ctx, u.String())
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
