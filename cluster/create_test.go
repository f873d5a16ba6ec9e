package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cluster/natstest"
)

// TestReplicasStartingTogether: replicas started at once (systemd, a
// compose file's replicas) all make the deployment's stream and buckets at
// the same moment, and every one must start. On the machine's NATS when
// TALON_TEST_NATS is set (nats-server 2.9 crashed under this before the
// lookups came first: create.go), else on the in-process server.
func TestReplicasStartingTogether(t *testing.T) {
	url := testNATS(t)
	if os.Getenv(natstest.EnvURL) != "" {
		url = realNATS(t)
	}
	f := newFixture(t, url, "talon")
	for round := range 20 {
		prefix := testPrefix(t, url)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := range 4 {
			wg.Go(func() {
				nc := connect(t, url)
				rt := &agent.Runtime{Store: f.db, LLM: echo{}, Log: zerolog.Nop()}
				replica := fmt.Sprint("r", i)
				_, err := Open(context.Background(), nc, Config{Partitions: 8, Prefix: prefix, LeaseTTL: testTTL, Replica: replica}, rt, f.db, zerolog.Nop())
				if err == nil {
					_, err = OpenShards(context.Background(), nc, ShardsConfig{Replica: replica, LeaseTTL: testTTL, Prefix: prefix}, zerolog.Nop())
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: a replica starting with three others: %v", round, err)
			}
		}
	}
}

// TestReplicasStartingTogetherWithOtherConfigs: of two replicas started at
// the same instant with other tools, or other settings, at least one is
// refused, although neither was running when the other read the
// deployment's replicas; and the one that runs sees no refused replica's
// key.
func TestReplicasStartingTogetherWithOtherConfigs(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	for round := range 20 {
		prefix := testPrefix(t, url)
		cfgs := []Config{{Tools: "aaaaaaaaaaaaaaaa1111"}, {Tools: "bbbbbbbbbbbbbbbb2222"}}
		want := "with other tools than this one"
		if round%2 == 1 {
			cfgs = []Config{{Settings: map[string]string{"limits.max_turns_per_user": "2"}}, {Settings: map[string]string{"limits.max_turns_per_user": "3"}}}
			want = "limits.max_turns_per_user is"
		}
		var wg sync.WaitGroup
		nodes, errs := make([]*Node, 2), make([]error, 2)
		start := make(chan struct{})
		for i := range cfgs {
			cfg := cfgs[i]
			cfg.Partitions, cfg.Prefix, cfg.LeaseTTL, cfg.Replica = 8, prefix, testTTL, fmt.Sprint("r", i)
			nc := connect(t, url)
			wg.Go(func() {
				<-start
				rt := &agent.Runtime{Store: f.db, LLM: echo{}, Log: zerolog.Nop()}
				nodes[i], errs[i] = Open(context.Background(), nc, cfg, rt, f.db, zerolog.Nop())
			})
		}
		close(start)
		wg.Wait()
		refused := 0
		for i, err := range errs {
			switch {
			case err == nil:
				defer nodes[i].Abandon()
			case strings.Contains(err.Error(), want):
				refused++
			default:
				t.Fatalf("round %d: replica r%d: %v, want nil or an error saying %q", round, i, err, want)
			}
		}
		if refused == 0 {
			t.Fatalf("round %d: two replicas started together with other configurations, and neither was refused", round)
		}
		if refused == 1 {
			// The refused one's starting key is gone: a third replica with
			// the running one's configuration is welcome.
			ok := 0
			if errs[0] != nil {
				ok = 1
			}
			cfg := cfgs[ok]
			cfg.Partitions, cfg.Prefix, cfg.LeaseTTL, cfg.Replica = 8, prefix, testTTL, "r2"
			rt := &agent.Runtime{Store: f.db, LLM: echo{}, Log: zerolog.Nop()}
			n, err := Open(context.Background(), connect(t, url), cfg, rt, f.db, zerolog.Nop())
			if err != nil {
				t.Fatalf("round %d: a replica with the configuration of the one that runs: %v", round, err)
			}
			n.Abandon()
		}
	}
}

// TestCreateLeavesAMatchingStreamAlone: a bucket or stream made by
// createKV or createStream is found with the settings asked for (so the
// next start does not update it), and one whose settings changed is
// updated.
func TestCreateLeavesAMatchingStreamAlone(t *testing.T) {
	url := testNATS(t)
	if os.Getenv(natstest.EnvURL) != "" {
		url = realNATS(t)
	}
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prefix := testPrefix(t, url)
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), prefix+"_S") })
	cfg := jetstream.KeyValueConfig{Bucket: prefix + "_test", Description: "d", TTL: time.Minute, Storage: jetstream.MemoryStorage}
	if _, err := createKV(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := kv.Status(ctx)
	if got := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config; !sameKV(got, cfg) {
		t.Errorf("the bucket made: %+v, not found the same as asked (%+v): every start would update it", got, cfg)
	}
	cfg.TTL = 2 * time.Minute
	if _, err := createKV(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if st, _ := kv.Status(ctx); st.TTL() != 2*time.Minute {
		t.Errorf("TTL after a change: %s, want 2m", st.TTL())
	}
	scfg := jetstream.StreamConfig{Name: prefix + "_S", Description: "d", Subjects: []string{prefix + ".s.*"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, MaxAge: time.Hour, Replicas: 1}
	s, err := createStream(ctx, js, scfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; !sameStream(got, scfg) {
		t.Errorf("the stream made: %+v, not found the same as asked (%+v): every start would update it", got, scfg)
	}
	created := s.CachedInfo().Created
	scfg.MaxAge = 2 * time.Hour
	if s, err = createStream(ctx, js, scfg); err != nil || s.CachedInfo().Config.MaxAge != 2*time.Hour || !s.CachedInfo().Created.Equal(created) {
		t.Errorf("stream after a change: %+v, %v; want it updated in place", s.CachedInfo(), err)
	}
}
