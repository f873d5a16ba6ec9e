package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/vault"
)

// A team's SQLite data moves to PostgreSQL with talon migrate-store: every
// row of every table, ids kept; the vault opens its entries there with the
// same key; the memory is found by its words and the routines listed there;
// the gateway then carries on from PostgreSQL; a second copy into
// the same database is refused.
func TestMigrateStoreRoundTrip(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	ctx := context.Background()
	srv := llmtest.NewServer(t, llmtest.Echo())
	key, _ := vault.GenerateKey()
	dir := t.TempDir()
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cfgA := writeConfig(t, filepath.Join(dir), baseConfig(dataA, "openai", srv.URL))
	envVars := map[string]string{vault.EnvKey: key.Encode(), "DATABASE_URL": dbURL}
	invoke := func(stdin string, args ...string) result {
		t.Helper()
		return runMain(t, env{getenv: testEnv(envVars), stdin: strings.NewReader(stdin)}, args...)
	}

	const token = "ghp_migrateStoreRoundTripTokenValue0123456789"
	if res := invoke(token+"\n", "vault", "set", "--config", cfgA, "--user", "terminal::local", "github", "--host", "api.github.com"); res.code != 0 {
		t.Fatalf("vault set: %d %s", res.code, res.stderr)
	}
	if res := invoke("hello\nagain\n", "chat", "--config", cfgA); res.code != 0 || res.stdout != "echo: hello\necho: again\n" {
		t.Fatalf("chat: %d %q %s", res.code, res.stdout, res.stderr)
	}
	if res := invoke("", "user", "deny", "slack:T1:U9", "--config", cfgA); res.code != 0 {
		t.Fatalf("user deny: %d %s", res.code, res.stderr)
	}
	if res := invoke("", "routine", "add", "--config", cfgA, "--user", "terminal::local", "--name", "digest", "every 2h", "Summarise the day."); res.code != 0 {
		t.Fatalf("routine add: %d %s", res.code, res.stderr)
	}
	// The memory: two entries, one of them forgotten (its number is never
	// given again, there either), and a time zone.
	sdb, err := store.Open(ctx, filepath.Join(dataA, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"Our staging host is staging-7.internal", "forgotten note"} {
		if _, err := sdb.SaveMemory(ctx, store.Memory{Space: "user:terminal::local", Author: "terminal::local", Text: text}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := sdb.ForgetMemory(ctx, 2, "user:terminal::local"); !ok || err != nil {
		t.Fatalf("forget: %v, %v", ok, err)
	}
	if err := sdb.SetTimeZone(ctx, agent.Principal{Platform: "terminal", User: "local"}, "Europe/Paris"); err != nil {
		t.Fatal(err)
	}
	sdb.Close()

	// The console's sign-ins and audit log and the MCP authorization
	// flow's links, clients and connections are in the file too.
	dbPath := filepath.Join(dataA, "talon.db")
	now := time.Now().UTC().Truncate(time.Millisecond)
	sessHash, oidcHash := sha256.Sum256([]byte("cookie value")), sha256.Sum256([]byte("oidc state"))
	conn := store.OAuthConnection{Server: "linear", Principal: "terminal::local", Issuer: "https://as.example", ClientID: "c1",
		TokenURL: "https://as.example/token", Resource: "https://mcp.linear.app/mcp", ExpiresAt: now.Add(time.Hour), ConnectedAt: now, RefreshedAt: now}
	func() {
		sdb, err := store.Open(ctx, dbPath)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		for _, err := range []error{
			sdb.AddConsoleSession(ctx, store.ConsoleSession{Hash: sessHash, Who: "admin", Created: now, Expires: now.Add(time.Hour)}, 10),
			sdb.AddOIDCState(ctx, oidcHash, "nonce-1", now.Add(10*time.Minute), 10),
			sdb.AddConsoleAction(ctx, store.ConsoleAction{At: now, Actor: "admin", Action: "sign-in", Remote: "192.0.2.1"}),
			sdb.PutOAuthState(ctx, store.OAuthState{ID: "state-hash", Principal: "terminal::local", Server: "linear", Verifier: "v", Issuer: "https://as.example",
				AuthURL: "https://as.example/authorize", TokenURL: "https://as.example/token", ClientID: "c1", Resource: "https://mcp.linear.app/mcp",
				CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}),
			sdb.PutOAuthClient(ctx, store.OAuthClient{Server: "linear", Issuer: "https://as.example", ClientID: "c1", RegisteredAt: now}),
			sdb.PutOAuthConnection(ctx, conn),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		// A turn in a Discord server: its usage counts to the server.
		q, _, err := sdb.AcceptInbound(ctx, agent.Inbound{DedupeKey: "discord:m1", Server: "G1",
			Key: agent.SessionKey{Principal: agent.Principal{Platform: "discord", User: "42"}, Conversation: agent.Conversation{Channel: "C10"}}})
		if err != nil {
			t.Fatal(err)
		}
		tid, s, _, err := sdb.StartTurn(ctx, q.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sdb.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "ok"},
			&agent.Step{Session: s.ID, N: 1, Model: "m1", Usage: llm.Usage{InputTokens: 30, OutputTokens: 3}}); err != nil {
			t.Fatal(err)
		}
	}()

	res := invoke("", "migrate-store", "--from", "sqlite:"+dbPath, "--to", "postgres:"+dbURL)
	if res.code != 0 || !strings.Contains(res.stdout, "Copied ") {
		t.Fatalf("migrate-store: exit %d, stdout %s, stderr %s", res.code, res.stdout, res.stderr)
	}
	// Every table with rows is copied: the full-text indexes of the
	// messages and the memory are not data of their own (PostgreSQL
	// indexes the copied rows), and are not named as left behind.
	if strings.Contains(res.stderr, "not copied") {
		t.Errorf("migrate-store names tables not copied: %s", res.stderr)
	}
	// The replicas' data directories have no key file: it says where the
	// key is and how to give it to them, never the key.
	if want := "set TALON_VAULT_KEY on every replica to it (the contents of " + filepath.Join(dataA, "vault.key"); !strings.Contains(res.stdout, want) ||
		strings.Contains(res.stdout+res.stderr, key.Encode()) {
		t.Errorf("migrate-store's output says nothing of the vault key (want %q): %s", want, res.stdout)
	}

	// Every table holds the same rows in both.
	sq, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	counts := func(q func(table string) int64) map[string]int64 {
		out := map[string]int64{}
		for _, table := range postgres.ImportTables() {
			out[table] = q(table)
		}
		return out
	}
	inSQLite := counts(func(table string) int64 {
		var n int64
		if err := sq.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	})
	inPostgres := counts(func(table string) int64 {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	})
	if diff := cmp.Diff(inSQLite, inPostgres); diff != "" {
		t.Errorf("rows per table (-sqlite +postgres):\n%s", diff)
	}
	if inPostgres["messages"] != 4 || inPostgres["vault_entries"] != 1 || inPostgres["denied_principals"] != 1 ||
		inPostgres["memories"] != 1 || inPostgres["routines"] != 1 || inPostgres["principal_zones"] != 1 ||
		inPostgres["console_sessions"] != 1 || inPostgres["console_oidc_states"] != 1 || inPostgres["oauth_states"] != 1 ||
		inPostgres["oauth_clients"] != 1 || inPostgres["oauth_connections"] != 1 {
		t.Errorf("copied %v; want the conversation, the secret, the denial, the memory, the routine, the zone, the console's and the OAuth flow's rows", inPostgres)
	}
	var sqliteMax, pgMax int64
	_ = sq.QueryRow(`SELECT max(id) FROM messages`).Scan(&sqliteMax)
	_ = pool.QueryRow(ctx, `SELECT max(id) FROM messages`).Scan(&pgMax)
	if sqliteMax != pgMax {
		t.Errorf("message ids: %d in SQLite, %d in PostgreSQL", sqliteMax, pgMax)
	}

	// The vault opens the entry from PostgreSQL with the same key.
	pdb, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	v, err := vault.New(ctx, key, pdb.VaultStorage())
	if err != nil {
		t.Fatal(err)
	}
	e, err := v.Credential(ctx, "terminal::local", "github", "api.github.com", "https", "github")
	if err != nil || string(e.Value.Reveal()) != token {
		t.Errorf("the entry does not open from PostgreSQL: %v", err)
	}

	// The console's sign-in and the user's connection carry on there.
	if s, err := pdb.ConsoleSession(ctx, sessHash, now); err != nil || s.Who != "admin" {
		t.Errorf("the console session on PostgreSQL: %+v, %v", s, err)
	}
	if n, err := pdb.TakeOIDCState(ctx, oidcHash, now); err != nil || n != "nonce-1" {
		t.Errorf("the Slack sign-in in progress on PostgreSQL: %q, %v", n, err)
	}
	if got, err := pdb.GetOAuthConnection(ctx, "linear", "terminal::local"); err != nil || got != conn {
		t.Errorf("the OAuth connection on PostgreSQL: %+v, %v; want %+v", got, err, conn)
	}
	if s, err := pdb.TakeOAuthState(ctx, "state-hash"); err != nil || s.Server != "linear" || s.Verifier != "v" {
		t.Errorf("the connect link on PostgreSQL: %+v, %v", s, err)
	}

	// The Discord server's usage is counted to it there.
	if n, err := pdb.ServerTokens(ctx, "G1", now.Add(-24*time.Hour)); err != nil || n != 33 {
		t.Errorf("the server's tokens on PostgreSQL: %d, %v; want 33", n, err)
	}
	var inServer, sessServer string
	if err := pool.QueryRow(ctx, `SELECT i.server, s.server FROM inbound i JOIN turns t ON t.inbound_id = i.id JOIN sessions s ON s.id = t.session_id
		WHERE i.dedupe_key = 'discord:m1'`).Scan(&inServer, &sessServer); err != nil || inServer != "G1" || sessServer != "G1" {
		t.Errorf("the message's and session's server on PostgreSQL: %q, %q, %v; want G1", inServer, sessServer, err)
	}

	// The gateway carries on from PostgreSQL: new rows after the copied ids.
	cfgB := writeConfig(t, t.TempDir(), baseConfig(dataB, "openai", srv.URL)+"store:\n  driver: postgres\n  url: ${DATABASE_URL}\n")
	if res := invoke("third\n", "chat", "--config", cfgB); res.code != 0 || res.stdout != "echo: third\n" {
		t.Fatalf("chat on PostgreSQL: %d %q %s", res.code, res.stdout, res.stderr)
	}
	var n int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE id > $1`, pgMax).Scan(&n); err != nil || n != 2 {
		t.Errorf("messages after the copied ones: %d, %v; want 2", n, err)
	}
	if res := invoke("", "vault", "list", "--config", cfgB); !strings.Contains(res.stdout, "github") {
		t.Errorf("vault list on PostgreSQL: %s %s", res.stdout, res.stderr)
	}
	// The memory is found there by its words (the index is rebuilt), and
	// a new entry takes a number after the forgotten one; the routine is
	// listed, with its zone's owner.
	if got, err := pdb.SearchMemories(ctx, []string{"user:terminal::local"}, "staging hosts", 10); err != nil || len(got) != 1 || got[0].ID != 1 {
		t.Errorf("search on PostgreSQL after the copy: %+v, %v", got, err)
	}
	if m, err := pdb.SaveMemory(ctx, store.Memory{Space: "user:terminal::local", Author: "terminal::local", Text: "new"}, 0); err != nil || m.ID != 3 {
		t.Errorf("a new entry after the copy: #%d, %v; want #3", m.ID, err)
	}
	if res := invoke("", "routine", "list", "--config", cfgB); res.code != 0 || !strings.Contains(res.stdout, "digest") || !strings.Contains(res.stdout, "every 2h") {
		t.Errorf("routine list on PostgreSQL: %s %s", res.stdout, res.stderr)
	}
	if tz, err := pdb.TimeZone(ctx, agent.Principal{Platform: "terminal", User: "local"}); err != nil || tz != "Europe/Paris" {
		t.Errorf("time zone on PostgreSQL: %q, %v", tz, err)
	}

	// A second copy into a database with data is refused and copies
	// nothing (the URL given alone, as people type it, names the same
	// database as postgres:URL).
	res = invoke("", "migrate-store", "--from", "sqlite:"+dbPath, "--to", dbURL)
	if res.code == 0 || !strings.Contains(res.stderr, "already holds rows") {
		t.Errorf("a second copy: exit %d, stderr %s", res.code, res.stderr)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&n); err != nil || n != 6 {
		t.Errorf("messages after a refused copy: %d, %v; want 6", n, err)
	}
}

// A file whose rows name rows it does not have (written with SQLite's
// foreign keys off) is refused and nothing is copied: the check that
// replaced the foreign keys migration 0031 dropped on PostgreSQL runs on
// the copy.
func TestMigrateStoreRefusesOrphans(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, baseConfig(data, "openai", srv.URL))
	if res := runMain(t, env{getenv: testEnv(nil), stdin: strings.NewReader("hello\n")}, "chat", "--config", cfg); res.code != 0 {
		t.Fatalf("chat: %d %s", res.code, res.stderr)
	}
	dbPath := filepath.Join(data, "talon.db")
	sq, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=foreign_keys(0)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sq.Exec(`INSERT INTO messages (session_id, turn_id, role, content, created_at) VALUES (999, NULL, 'user', '{}', 0)`); err != nil {
		t.Fatal(err)
	}
	sq.Close()
	res := runMain(t, env{getenv: testEnv(nil)}, "migrate-store", "--from", "sqlite:"+dbPath, "--to", "postgres:"+dbURL)
	if res.code == 0 || !strings.Contains(res.stderr, "nothing was copied") ||
		!strings.Contains(res.stderr, "messages.session_id: 1 row names a session that does not exist") {
		t.Errorf("migrate-store of a file with an orphan: exit %d, stderr %s", res.code, res.stderr)
	}
	var n int64
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM messages`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d messages copied, %v; want none", n, err)
	}
}

// migrate-store refuses a password on its command line (everyone on the
// machine sees it in the process list) without printing it, and bad
// arguments with what to type.
func TestMigrateStoreArguments(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "talon.db"), "--to", "postgres:postgres://talon:hunter2-pw@db/talon"}, "PGPASSWORD"},
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "talon.db"), "--to", "postgres:postgres://talon@db/talon?password=hunter2-pw"}, "PGPASSWORD"},
		{[]string{"--from", filepath.Join(dir, "talon.db"), "--to", "postgres:postgres://db/x"}, "--from must be sqlite:PATH"},
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "talon.db"), "--to", "mysql://db/x"}, "--to must be postgres:URL"},
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "none.db"), "--to", "postgres:postgres://db/x"}, "no such file"},
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "talon.db"), "--to", "postgres"}, "has none"},
	} {
		res := runMain(t, env{getenv: testEnv(nil)}, append([]string{"migrate-store"}, tt.args...)...)
		if res.code == 0 || !strings.Contains(res.stderr, tt.want) || strings.Contains(res.stdout+res.stderr, "hunter2") {
			t.Errorf("%v: exit %d, stderr %s; want an error saying %q, no password", tt.args, res.code, res.stderr, tt.want)
		}
	}
}
