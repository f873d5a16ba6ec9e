package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/agent/llm/llmtest"

	"github.com/talonhq/talon/cluster/natstest"
	"github.com/talonhq/talon/cmd/talon/config"
)

// testNATS starts an in-process NATS server with JetStream in t.TempDir()
// and returns its URL.
func testNATS(t *testing.T) string {
	t.Helper()
	return natstest.Server(t)
}

// TestRunWithNATSAnswersThroughThePartitions runs the gateway with
// nats.url and Discord: every message is announced on its partition's
// subject, taken from there by the replica that holds the partition, and
// answered in order.
func TestRunWithNATSAnswersThroughThePartitions(t *testing.T) {
	const token = "test-discord-token-not-real"
	url := testNATS(t)
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	f := newFakeDiscordGateway(t, 0)
	dir := t.TempDir()
	addr := freeAddr(t)
	const prompt = "You answer as qx7-prompt."
	cfg := writeConfig(t, dir, strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1)+
		"  system_prompt: "+prompt+"\n"+ // under baseConfig's agent:
		"discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: "+f.srv.URL+"\n"+
		"nats:\n  url: ${TEST_NATS_URL}\n  partitions: 4\n  replica: test-1\n")
	// Everything published on the server, JetStream's API and the KV
	// buckets included, to check that no message text, reply, prompt or
	// token crosses NATS: only identifiers do, and the settings every
	// replica must share, without credentials or the prompt (SECURITY.md).
	tap, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	var (
		tapMu  sync.Mutex
		tapped []byte // guarded by tapMu
		msgs   int    // guarded by tapMu
	)
	if _, err := tap.Subscribe(">", func(m *nats.Msg) {
		tapMu.Lock()
		defer tapMu.Unlock()
		msgs++
		tapped = append(tapped, m.Subject...)
		tapped = append(tapped, m.Data...)
		for k, vs := range m.Header {
			tapped = append(tapped, k...)
			for _, v := range vs {
				tapped = append(tapped, v...)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := tap.Flush(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	stop := startRunEnv(t, cfg, addr, testEnv(map[string]string{"DISCORD_BOT_TOKEN": token, "TEST_NATS_URL": url}), &logs)
	waitUntil(t, func() bool { return f.sessions() == 1 })
	texts := []string{"one-qx7", "two-qx7", "three-qx7"}
	for i, text := range texts {
		f.dispatch("MESSAGE_CREATE", discordDM(fmt.Sprint(1000051+i), text))
	}
	waitUntil(t, func() bool { return len(f.postsSnapshot()) >= 3 })
	stop()
	if diff := cmp.Diff([]string{"400 echo: one-qx7", "400 echo: two-qx7", "400 echo: three-qx7"}, f.postsSnapshot()); diff != "" {
		t.Errorf("posts (-want +got):\n%s", diff)
	}
	_ = tap.Flush()
	tapMu.Lock()
	if !bytes.Contains(tapped, []byte("talon.in.")) || !bytes.Contains(tapped, []byte("$KV.talon_partitions.")) ||
		!bytes.Contains(tapped, []byte("$KV.talon_cluster.settings.")) {
		t.Errorf("the tap did not see the announcements, the leases and the settings (%d messages tapped)", msgs)
	}
	for _, secret := range append(texts, "echo: ", token, "qx7-prompt") {
		if bytes.Contains(tapped, []byte(secret)) {
			t.Errorf("%q crossed NATS (%d messages tapped)", secret, msgs)
		}
	}
	tapMu.Unlock()
	if !strings.Contains(logs.String(), "lease claimed") {
		t.Errorf("the log does not show a partition claimed:\n%s", logs.String())
	}

	// The messages went through the stream: the one consumer that took
	// them delivered and acknowledged three.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	st, err := js.Stream(ctx, "TALON_IN")
	if err != nil {
		t.Fatal(err)
	}
	var delivered uint64
	for p := range 4 {
		c, err := st.Consumer(ctx, "talon-p"+string(rune('0'+p)))
		if err != nil {
			continue // no message of this partition
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		delivered += info.AckFloor.Consumer
	}
	if delivered != 3 {
		t.Errorf("announcements taken and acknowledged: %d, want 3", delivered)
	}
	// The replica gave its leases up when it stopped.
	kv, err := js.KeyValue(ctx, "talon_partitions")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.Keys(ctx); err == nil && len(keys) > 0 {
		t.Errorf("leases left after the stop: %v", keys)
	}
	// So did it its lease on the Discord gateway's one shard, which it
	// had connected (only the shard count stays, until it expires).
	if !strings.Contains(logs.String(), "discord: connecting a shard") {
		t.Errorf("the log does not show the shard connected:\n%s", logs.String())
	}
	skv, err := js.KeyValue(ctx, "talon_shards")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := skv.Keys(ctx); err != nil || !cmp.Equal(keys, []string{"count"}) {
		t.Errorf("shard bucket keys after the stop: %v, %v; want only the count", keys, err)
	}
}

func TestDoctorChecksNATS(t *testing.T) {
	url := testNATS(t)
	srv := llmtest.NewServer(t, llmtest.Text("ok"))
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL)+"nats:\n  url: ${TEST_NATS_URL}\n")
	res := runMain(t, env{getenv: testEnv(map[string]string{"TEST_NATS_URL": url})}, "doctor", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "ok    nats "+strings.TrimPrefix(url, "nats://")) || !strings.Contains(res.stdout, "JetStream") {
		t.Errorf("doctor with NATS up: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	down := "nats://talon:s3cret@" + freeAddr(t)
	res = runMain(t, env{getenv: testEnv(map[string]string{"TEST_NATS_URL": down})}, "doctor", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  nats") {
		t.Errorf("doctor with NATS down: exit %d\n%s", res.code, res.stdout)
	}
	if strings.Contains(res.stdout+res.stderr, "s3cret") {
		t.Errorf("doctor shows the password of nats.url:\n%s%s", res.stdout, res.stderr)
	}
}

// A replica's connection tries again soon after its NATS server comes
// back: the client's default waits 2 s before its first try, which cut the
// replicas off for 2 to 4 s when a server restarted in 2 s, long enough for
// partition leases to lapse at a short lease_ttl.
func TestNATSReconnectsSoonAfterARestart(t *testing.T) {
	srv := natstest.NewRestartable(t)
	nc, err := natsConnect(config.NATS{URL: config.Secret(srv.URL())}, "talon test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	back := make(chan time.Time, 1)
	nc.SetReconnectHandler(func(*nats.Conn) { back <- time.Now() })
	srv.Stop()
	down := time.Now()
	srv.Start()
	select {
	case at := <-back:
		// The server is back within milliseconds; the first try comes
		// natsReconnectWait (plus up to 100 ms of jitter) after the loss.
		if d := at.Sub(down); d > 1500*time.Millisecond {
			t.Errorf("reconnected %s after the server went down and came straight back; want within 1.5 s", d.Round(time.Millisecond))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnection within 10 s of the server's restart")
	}
	if !nc.IsConnected() {
		t.Error("the connection is not connected after its reconnect handler ran")
	}
}

// talon run refuses a nats.lease_ttl other than the running replicas',
// and a second replica beside one on its own SQLite store, saying what to
// do.
func TestRunRefusesAMismatchedReplica(t *testing.T) {
	url := testNATS(t)
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	f := newFakeDiscordGateway(t, 0)
	replica := func(name, ttl string) (cfg, addr string) {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		addr = freeAddr(t)
		return writeConfig(t, dir, strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1)+
			"discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: "+f.srv.URL+"\n"+
			"nats:\n  url: ${TEST_NATS_URL}\n  partitions: 4\n  lease_ttl: "+ttl+"\n  replica: "+name+"\n"), addr
	}
	getenv := testEnv(map[string]string{"TEST_NATS_URL": url, "DISCORD_BOT_TOKEN": "test-discord-token-not-real"})
	cfgA, addrA := replica("a", "4s")
	var logs syncBuffer
	stop := startRunEnv(t, cfgA, addrA, getenv, &logs)
	defer stop()
	waitUntil(t, func() bool { return strings.Contains(logs.String(), "lease claimed") })
	cfgB, _ := replica("b", "2s")
	res := runMain(t, env{getenv: getenv}, "run", "--config", cfgB)
	const want = "nats.lease_ttl is 2s here but 4s for the replicas running now (bucket talon_partitions): every replica must use the same; " +
		"to change it, stop every replica, wait 4s, then start them with the new value"
	if res.code == 0 || !strings.Contains(res.stderr, want) {
		t.Errorf("a second replica with another lease_ttl: exit %d, stderr %s", res.code, res.stderr)
	}
	// Its messages would be announced to a's partitions, and a's store
	// does not have them.
	cfgC, _ := replica("c", "4s")
	res = runMain(t, env{getenv: getenv}, "run", "--config", cfgC)
	const alone = "replica a runs in this deployment (nats.url, nats.prefix talon), and this one has the SQLite store, which no other replica can share"
	if res.code == 0 || !strings.Contains(res.stderr, alone) {
		t.Errorf("a second replica beside one on SQLite: exit %d, stderr %s", res.code, res.stderr)
	}
}
