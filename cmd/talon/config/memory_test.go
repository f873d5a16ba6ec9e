package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadMemory(t *testing.T) {
	got, err := loadFile(t, "memory:\n  max_entries: 50\n  channel_writers:\n    slack:C1: [slack:T1:U1]\n    discord:42: [\"*\"]\n", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Memory{Enabled: true, MaxEntries: 50, ChannelWriters: map[string][]string{"slack:C1": {"slack:T1:U1"}, "discord:42": {"*"}}}
	if diff := cmp.Diff(want, got.Memory); diff != "" {
		t.Errorf("memory (-want +got):\n%s", diff)
	}
	_, err = loadFile(t, "memory:\n  max_entries: 0\n  channel_writers:\n    C1: [slack:T1:U1]\n    slack:C2: [bob]\n", nil)
	wantErr := []string{
		"memory.max_entries: must be between 1 and 100000, got 0 (line 2)",
		`memory.channel_writers: "C1" is not a channel: want slack:CHANNEL_ID or discord:CHANNEL_ID (e.g. slack:C0123, discord:123456) (line 3)`,
		`memory.channel_writers.slack:C2: "bob" is not a principal: want platform:workspace:user (e.g. slack:T012:U034, discord::123), or * for every member (line 5)`,
	}
	if diff := cmp.Diff(wantErr, problems(err)); diff != "" {
		t.Errorf("problems (-want +got):\n%s\nerror: %v", diff, err)
	}
}
