package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// TestGlobalPrincipalsMigration fills a database at schema version 4 with
// principals that name the workspace of a global user id, and rows that
// point at them, then applies migration 0005: each person has one
// principal, every row points at it, colliding sessions and followed
// threads merge, and the result is what GlobalUser says.
func TestGlobalPrincipalsMigration(t *testing.T) {
	ctx := context.Background()
	w := rawWriter(t, filepath.Join(t.TempDir(), "m.db"))
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	var v5 int
	for i, m := range ms {
		if m.name == "global_principals" {
			v5 = i
		}
	}
	if v5 == 0 {
		t.Fatal("no global_principals migration")
	}
	if _, err := migrate(ctx, w, ms[:v5], testClock); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := w.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	principals := []string{
		"discord:G1:U7", "discord:G2:U7", "discord::U7", // one person in two servers and a DM
		"discord:G1:U8",              // one in a server only
		"slack:T1:W9", "slack:E1:W9", // an Enterprise Grid user seen through a workspace and the org
		"slack:T1:U5", "terminal::local", // others keep theirs
	}
	for i, s := range principals {
		p, _ := agent.ParsePrincipal(s)
		exec(`INSERT INTO principals (id, platform, workspace, user, created_at) VALUES (?, ?, ?, ?, ?)`, i+1, p.Platform, p.Workspace, p.User, 1000+i)
	}
	id := func(s string) int {
		for i, x := range principals {
			if x == s {
				return i + 1
			}
		}
		t.Fatalf("no principal %s", s)
		return 0
	}
	// Sessions: (id, principal, channel, thread, active).
	sessions := []struct {
		id        int
		principal string
		channel   string
		thread    string
		active    int
	}{
		{1, "discord:G1:U7", "C1", "", 1},
		{2, "discord:G2:U7", "C2", "", 1},
		{3, "discord::U7", "D1", "", 1},
		{4, "slack:T1:W9", "C3", "T1", 1}, // collides with 6 once both are slack::W9: 6 is newer
		{5, "slack:T1:U5", "C3", "T1", 1},
		{6, "slack:E1:W9", "C3", "T1", 1},
		{7, "discord:G1:U7", "C1", "", 0}, // retired already
	}
	for _, s := range sessions {
		exec(`INSERT INTO sessions (id, principal_id, channel, thread, active, created_at) VALUES (?, ?, ?, ?, ?, 1)`, s.id, id(s.principal), s.channel, s.thread, s.active)
	}
	exec(`INSERT INTO inbound (id, dedupe_key, principal_id, channel, received_at, accepted_at) VALUES (1, 'k1', ?, 'C1', 1, 1)`, id("discord:G1:U7"))
	exec(`INSERT INTO turns (id, session_id, inbound_id, started_at) VALUES (1, 1, 1, 1)`)
	exec(`INSERT INTO approvals (turn_id, call_id, tool, description, principal_id, created_at, expires_at) VALUES (1, 'c1', 'http_request', 'GET x', ?, 1, 2)`, id("discord:G1:U7"))
	exec(`INSERT INTO outbound (inbound_id, principal_id, channel, kind, created_at) VALUES (1, ?, 'C2', 'reply', 1)`, id("discord:G2:U7"))
	for _, f := range []struct {
		platform, workspace, channel, thread, user string
		at                                         int
	}{
		{"discord", "G1", "C1", "", "U7", 100},
		{"discord", "G2", "C1", "", "U7", 200},
		{"discord", "", "C1", "", "U7", 150},
		{"slack", "T1", "C3", "T1", "W9", 50},
		{"slack", "T1", "C3", "T1", "U5", 60},
	} {
		exec(`INSERT INTO followed_threads (platform, workspace, channel, thread, user, active_at) VALUES (?, ?, ?, ?, ?, ?)`, f.platform, f.workspace, f.channel, f.thread, f.user, f.at)
	}

	if _, err := migrate(ctx, w, ms, testClock); err != nil {
		t.Fatal(err)
	}

	query := func(q string) []string {
		t.Helper()
		rows, err := w.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		var out []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(vals...))
		}
		return out
	}
	name := `p.platform || ':' || p.workspace || ':' || p.user`
	gotPrincipals := query(`SELECT ` + name + ` FROM principals p ORDER BY 1`)
	var want []string
	seen := map[string]bool{}
	for _, s := range principals {
		g, _ := GlobalUser(s)
		if !seen[g] {
			seen[g] = true
			want = append(want, g)
		}
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, gotPrincipals); diff != "" {
		t.Errorf("principals (-want by GlobalUser +got):\n%s", diff)
	}
	gotSessions := query(`SELECT s.id || ' ' || ` + name + ` || ' ' || s.active FROM sessions s JOIN principals p ON p.id = s.principal_id ORDER BY s.id`)
	var wantSessions []string
	for _, s := range sessions {
		g, _ := GlobalUser(s.principal)
		active := s.active
		if s.id == 4 {
			active = 0
		}
		wantSessions = append(wantSessions, fmt.Sprintf("%d %s %d", s.id, g, active))
	}
	if diff := cmp.Diff(wantSessions, gotSessions); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
	for table, want := range map[string]string{"inbound": "discord::U7", "approvals": "discord::U7", "outbound": "discord::U7"} {
		got := query(`SELECT ` + name + ` FROM ` + table + ` x JOIN principals p ON p.id = x.principal_id`)
		if diff := cmp.Diff([]string{want}, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", table, diff)
		}
	}
	gotFollowed := query(`SELECT platform || ':' || workspace || ':' || channel || ':' || thread || ':' || user || ' ' || active_at FROM followed_threads ORDER BY 1`)
	if diff := cmp.Diff([]string{"discord::C1::U7 200", "slack::C3:T1:W9 50", "slack:T1:C3:T1:U5 60"}, gotFollowed); diff != "" {
		t.Errorf("followed threads (-want +got):\n%s", diff)
	}
	if n := query(`SELECT count(*) FROM sqlite_temp_master`); n[0] != "0" {
		t.Errorf("the migration left %s temporary tables", n[0])
	}
	if v := query(`PRAGMA foreign_key_check`); len(v) != 0 {
		t.Errorf("foreign key violations: %v", v)
	}
}

func TestGlobalPrincipal(t *testing.T) {
	for in, want := range map[string]string{
		"discord:G1:123":  "discord::123",
		"discord::123":    "discord::123",
		"slack:T1:W123":   "slack::W123",
		"slack:E1:W123":   "slack::W123",
		"slack:T1:U123":   "slack:T1:U123",
		"slack::W123":     "slack::W123",
		"terminal::local": "terminal::local",
		"other:X:W1":      "other:X:W1",
		"not a principal": "not a principal",
	} {
		got, changed := GlobalUser(in)
		if got != want || changed != (in != want) {
			t.Errorf("GlobalUser(%q) = %q, %v; want %q, %v", in, got, changed, want, in != want)
		}
	}
}
