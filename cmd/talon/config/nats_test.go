package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadNATS(t *testing.T) {
	got, err := loadFile(t, "nats:\n  url: ${NATS_URL}\n  partitions: 64\n  lease_ttl: 5s\n  replica: web-1\n  prefix: team_b\n",
		map[string]string{"NATS_URL": "nats://talon:s3cret@10.0.0.1:4222, nats://10.0.0.2:4222"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	n := got.NATS
	if !n.Enabled() || n.Partitions != 64 || n.LeaseTTL.Std() != 5*time.Second || n.Replica != "web-1" || n.Prefix != "team_b" {
		t.Errorf("nats = %+v", n)
	}
	if diff := cmp.Diff([]string{"nats://talon:s3cret@10.0.0.1:4222", "nats://10.0.0.2:4222"}, n.Servers()); diff != "" {
		t.Errorf("Servers (-want +got):\n%s", diff)
	}
	if h := n.Hosts(); h != "10.0.0.1:4222,10.0.0.2:4222" {
		t.Errorf("Hosts() = %q, want the host:ports without credentials", h)
	}

	_, err = loadFile(t, "nats:\n  url: ${NATS_URL}\n  partitions: 0\n  lease_ttl: 1s\n  replica: a.b\n  sharding: yes\n",
		map[string]string{"NATS_URL": "http://talon:s3cret@10.0.0.1:4222"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Load: %v; want errors that never show the URL's password", err)
	}
	if !strings.Contains(err.Error(), "sharding") {
		t.Errorf("an unknown key under nats: %v, want it named", err)
	}
	var wantErr []string
	_, err = loadFile(t, "nats:\n  url: ${NATS_URL}\n  partitions: 0\n  lease_ttl: 1s\n  replica: a.b\n  prefix: talon.b\n",
		map[string]string{"NATS_URL": "http://talon:s3cret@10.0.0.1:4222"})
	wantErr = []string{
		"nats.partitions: must be between 1 and 1024, got 0 (line 3)",
		"nats.lease_ttl: must be between 2s and 1m, got 1s (line 4)",
		`nats.replica: must be 1 to 100 letters, digits, '-' or '_' (or "" for the host name and a random suffix) (line 5)`,
		"nats.prefix: must be 1 to 32 letters, digits, '-' or '_' (default talon) (line 6)",
		"nats.url: each server must be nats://host:port or tls://host:port (e.g. nats://127.0.0.1:4222) (line 2)",
	}
	if diff := cmp.Diff(wantErr, problems(err)); diff != "" {
		t.Errorf("problems (-want +got):\n%s\nerror: %v", diff, err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("an error shows the URL's password: %v", err)
	}
}
