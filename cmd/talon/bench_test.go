package main

import (
	"encoding/json"
	"testing"
)

func TestBenchReportsJSON(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		want      int
		toolCalls int64
	}{
		{"no tools", []string{"--users", "20", "--messages", "3", "--concurrency", "10"}, 60, 0},
		{"every turn calls a sandboxed tool", []string{"--users", "2", "--messages", "2", "--tool-share", "1"}, 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runMain(t, env{}, append([]string{"bench", "--json", "--data-dir", t.TempDir()}, tc.args...)...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			var got benchResult
			if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
				t.Fatalf("output is not one JSON object: %v\n%s", err, res.stdout)
			}
			if got.Turns != tc.want || got.Errors != 0 || got.TurnsPerSec <= 0 || got.DBBytes <= 0 || got.PeakRSSBytes <= 0 {
				t.Errorf("result: %+v; want %d turns and no errors", got, tc.want)
			}
			if got.ToolCalls != tc.toolCalls {
				t.Errorf("tool calls: got %d, want %d", got.ToolCalls, tc.toolCalls)
			}
			if got.OverheadMS.P50 > got.OverheadMS.P99 {
				t.Errorf("percentiles out of order: %+v", got.OverheadMS)
			}
		})
	}
}
