package cluster

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cluster/natstest"
)

// BenchmarkDispatchConcurrent announces messages from 100 goroutines at
// once, as a busy replica's Accepts do, on the in-process NATS server (or
// TALON_TEST_NATS): Dispatch against one synchronous JetStream publish
// per message (the reference, what Dispatch did before 2026-12-03), each
// waiting for its acknowledgement. On the in-process server its CPU is in
// the figure too.
//
//	go test ./cluster -run '^$' -bench DispatchConcurrent -count 3
func BenchmarkDispatchConcurrent(b *testing.B) {
	url, prefix := testNATS(b), "talon"
	if u := os.Getenv(natstest.EnvURL); u != "" {
		url, prefix = u, testPrefix(b, u)
	}
	ctx := context.Background()
	nc := connect(b, url)
	node, err := Open(ctx, nc, Config{Prefix: prefix, Replica: "bench"}, &agent.Runtime{}, noStore{}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(connect(b, url))
	if err != nil {
		b.Fatal(err)
	}
	purge := func(b *testing.B) {
		if s, err := js.Stream(ctx, node.stream); err == nil {
			_ = s.Purge(ctx)
		}
	}
	b.Run("sync_publish", func(b *testing.B) {
		purge(b)
		b.SetParallelism(max(1, 100/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				subj := prefix + ".in." + strconv.Itoa(i%DefaultPartitions)
				if _, err := js.Publish(ctx, subj, strconv.AppendInt(nil, int64(i), 10)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("dispatch", func(b *testing.B) {
		purge(b)
		b.SetParallelism(max(1, 100/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if err := node.Dispatch(ctx, agent.QueuedInbound{ID: agent.InboundID(i), Inbound: agent.Inbound{Key: key(i%100, 0)}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
