package main

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/store/postgres/pgtest"
	"github.com/talonhq/talon/vault"
)

// postgresSchema returns the URL of a fresh schema of the database
// TALON_TEST_POSTGRES names, and a pool on it; the schema is dropped when
// the test ends, after checkOrphans. The test is skipped when the variable
// is not set.
func postgresSchema(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	u := pgtest.URL(t)
	// After what the test stops (its cleanups, registered later, run
	// first), before the schema is dropped.
	t.Cleanup(func() {
		if !t.Skipped() {
			checkOrphans(t, u)
		}
	})
	return u, pgtest.Pool(t, u)
}

// checkOrphans fails t for each row of the store at dbURL whose reference
// a foreign key dropped by migration 0031 would have refused (DB.Orphans).
// A schema not migrated to this version (a test that stopped before Talon
// ran) is not checked.
func checkOrphans(t *testing.T, dbURL string) {
	t.Helper()
	ctx := context.Background()
	in, err := postgres.Inspect(ctx, dbURL)
	if err != nil {
		t.Errorf("orphans: %v", err)
		return
	}
	if in.Version != in.Latest {
		return
	}
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Errorf("orphans: %v", err)
		return
	}
	defer db.Close()
	lines, err := db.Orphans(ctx)
	if err != nil {
		t.Errorf("orphans: %v", err)
	}
	for _, l := range lines {
		t.Errorf("a reference a dropped foreign key checked does not hold: %s", l)
	}
}

// talon chat on PostgreSQL: doctor sees the empty database, a
// conversation is answered and kept in PostgreSQL (no SQLite file is
// made), and doctor then sees the schema version.
func TestChatOnPostgres(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, baseConfig(data, "openai", srv.URL)+"store:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n")
	e := func() env { return env{getenv: testEnv(map[string]string{"DATABASE_URL": dbURL})} }

	res := runMain(t, e(), "doctor", "--config", cfg)
	if !strings.Contains(res.stdout, "database (postgres) answers; empty") {
		t.Errorf("doctor on an empty database: stdout %s", res.stdout)
	}
	chat := e()
	chat.stdin = strings.NewReader("hello\nagain\n")
	res = runMain(t, chat, "chat", "--config", cfg)
	if res.code != 0 || res.stdout != "echo: hello\necho: again\n" {
		t.Fatalf("chat: exit %d, stdout %q; stderr %.500s", res.code, res.stdout, res.stderr)
	}
	ctx := context.Background()
	var inbound, delivered, messages int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound WHERE state = 'done'),
		(SELECT count(*) FROM outbound WHERE state = 'delivered'), (SELECT count(*) FROM messages)`).Scan(&inbound, &delivered, &messages); err != nil {
		t.Fatal(err)
	}
	if inbound != 2 || delivered != 2 || messages != 4 {
		t.Errorf("in PostgreSQL: %d inbound done, %d replies delivered, %d messages; want 2, 2, 4", inbound, delivered, messages)
	}
	if _, err := os.Stat(filepath.Join(data, "talon.db")); !os.IsNotExist(err) {
		t.Errorf("an SQLite file was made in the data directory: %v", err)
	}
	res = runMain(t, e(), "doctor", "--config", cfg)
	if !strings.Contains(res.stdout, "database (postgres) answers, schema version") || strings.Contains(res.stdout, "FAIL  database") {
		t.Errorf("doctor after a conversation: stdout %s", res.stdout)
	}

	// The deny list lives in PostgreSQL too: a denied user is refused
	// without the model.
	if res := runMain(t, e(), "user", "deny", "terminal::local", "--config", cfg); res.code != 0 {
		t.Fatalf("user deny: exit %d, %s %s", res.code, res.stdout, res.stderr)
	}
	if res := runMain(t, e(), "user", "list", "--config", cfg); !strings.Contains(res.stdout, "terminal::local") {
		t.Errorf("user list: %s", res.stdout)
	}
	before := len(srv.Requests())
	chat = e()
	chat.stdin = strings.NewReader("hello\n")
	res = runMain(t, chat, "chat", "--config", cfg)
	if !strings.Contains(res.stdout, "turned off your access") || len(srv.Requests()) != before {
		t.Errorf("a denied user's chat: stdout %q, %d model requests", res.stdout, len(srv.Requests())-before)
	}
}

// A database that cannot be reached: doctor says so and run refuses to
// start, and neither prints the URL's password.
func TestPostgresUnreachable(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL)+"store:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n")
	e := env{getenv: testEnv(map[string]string{"DATABASE_URL": "postgres://talon:pg-s3cret-pw@127.0.0.1:1/talon?sslmode=disable&connect_timeout=2"})}
	res := runMain(t, e, "doctor", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  database") {
		t.Errorf("doctor: exit %d, stdout %s", res.code, res.stdout)
	}
	res2 := runMain(t, e, "chat", "--config", cfg)
	if res2.code == 0 {
		t.Errorf("chat started without its database")
	}
	for _, out := range []string{res.stdout, res.stderr, res2.stdout, res2.stderr} {
		if strings.Contains(out, "pg-s3cret-pw") {
			t.Errorf("the password is printed: %s", out)
		}
	}
}

// talon bench runs on PostgreSQL, twice on the same database (each run's
// users and messages are its own), and refuses a password on its command
// line.
func TestBenchOnPostgres(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	for range 2 {
		res := runMain(t, env{}, "bench", "--json", "--data-dir", t.TempDir(), "--users", "5", "--messages", "3", "--store", "postgres:"+dbURL)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		var got benchResult
		if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
			t.Fatalf("output is not one JSON object: %v\n%s", err, res.stdout)
		}
		if got.Turns != 15 || got.Errors != 0 || got.TurnsPerSec <= 0 {
			t.Errorf("result: %+v; want 15 turns and no errors", got)
		}
	}
	var n int64
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbound WHERE state = 'delivered'`).Scan(&n); err != nil || n != 30 {
		t.Errorf("%d replies delivered in PostgreSQL, %v; want 30", n, err)
	}
	res := runMain(t, env{}, "bench", "--users", "1", "--messages", "1", "--store", "postgres:postgres://u:hunter2-pw@127.0.0.1:1/x")
	if res.code == 0 || !strings.Contains(res.stderr, "PGPASSWORD") || strings.Contains(res.stdout+res.stderr, "hunter2") {
		t.Errorf("a password on the command line: exit %d, %s", res.code, res.stderr)
	}
}

// The console on PostgreSQL: talon run with console.enabled and
// store.driver postgres serves it; after a conversation on the terminal,
// an admin signs in (the session is kept in PostgreSQL), finds the
// conversation by searching a word of it in another case, and reads its
// transcript.
func TestConsoleOnPostgres(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgText := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", srv.URL), `listen: ""`, "listen: "+addr, 1) +
		"console:\n  enabled: true\nstore:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n"
	cfg := writeConfig(t, dir, cfgText)
	const token = "console-token-0123456789"
	stdinR, stdinW := io.Pipe()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- env{stdin: stdinR, stdout: &out, stderr: io.Discard, getenv: testEnv(map[string]string{"TALON_CONSOLE_TOKEN": token, "DATABASE_URL": dbURL})}.
			main(context.Background(), []string{"run", "--config", cfg})
	}()
	base := "http://" + addr
	waitUntil(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	fmt.Fprintln(stdinW, "the Quokka report")
	waitUntil(t, func() bool { return strings.Contains(out.String(), "echo: the Quokka report") })

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	read := func(resp *http.Response, err error) (*http.Response, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	_, page := read(c.Get(base + "/console/signin"))
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field on the sign-in page:\n%s", page)
	}
	resp, page := read(c.PostForm(base+"/console/signin", url.Values{"csrf": {m[1]}, "token": {token}}))
	if resp.Request.URL.Path != "/console/" || !strings.Contains(page, "<h1>Overview</h1>") {
		t.Fatalf("sign-in ended at %s:\n%s", resp.Request.URL, page)
	}
	ctx := context.Background()
	var sessions, signins int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM console_sessions), (SELECT count(*) FROM console_audit WHERE action = 'sign-in')`).
		Scan(&sessions, &signins); err != nil || sessions != 1 || signins != 1 {
		t.Errorf("in PostgreSQL: %d console sessions, %d sign-ins audited, %v; want 1, 1", sessions, signins, err)
	}

	_, page = read(c.Get(base + "/console/conversations?q=QUOKKA"))
	link := regexp.MustCompile(`href="(/console/conversations/\d+)"`).FindStringSubmatch(page)
	if link == nil || !strings.Contains(page, "local") {
		t.Fatalf("the search for QUOKKA does not list the conversation:\n%s", page)
	}
	_, none := read(c.Get(base + "/console/conversations?q=platypus"))
	if regexp.MustCompile(`href="/console/conversations/\d+"`).MatchString(none) {
		t.Errorf("the search for platypus lists a conversation:\n%s", none)
	}
	resp, page = read(c.Get(base + link[1]))
	if resp.StatusCode != 200 || !strings.Contains(page, "the Quokka report") || !strings.Contains(page, "echo: the Quokka report") {
		t.Errorf("the transcript (HTTP %d) does not show the conversation:\n%s", resp.StatusCode, page)
	}
	stdinW.Close()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop at end of input")
	}
}

// A store.url where Talon cannot create its tables: doctor says so, with
// what to do, instead of "empty: the first start creates" it, and chat (the
// gateway's start) and migrate-store stop with the same words rather than
// PostgreSQL's "no schema has been selected to create in". Two ways
// operators meet it: a search_path naming a schema not created yet, and a
// role without CREATE on the schema (public, on PostgreSQL 15, for a role
// that does not own the database).
func TestPostgresSchemaTalonCannotCreateIn(t *testing.T) {
	base := pgtest.Base(t)
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	srv := llmtest.NewServer(t, llmtest.Echo())
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	role, schema := "talon_test_role_"+suffix, "talon_test_ro_"+suffix
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN; CREATE SCHEMA "+schema+"; GRANT USAGE ON SCHEMA "+schema+" TO "+role); err != nil {
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42501" {
			t.Skipf("needs a TALON_TEST_POSTGRES user that may create a role (a superuser, as CI's root): %v", err)
		}
		t.Fatalf("create a role and a schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE; DROP ROLE "+role); err != nil {
			t.Errorf("drop the role and schema: %v", err)
		}
	})
	withQuery := func(user string, set map[string]string) string {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			u.User = url.User(user)
		}
		q := u.Query()
		for k, v := range set {
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for _, tt := range []struct {
		name, url string
		want      []string
	}{
		{"missing schema", withQuery("", map[string]string{"search_path": "talon_test_missing_" + suffix}),
			[]string{"no schema of the search_path (talon_test_missing_" + suffix + ") exists", "CREATE SCHEMA"}},
		{"no CREATE on the schema", withQuery(role, map[string]string{"search_path": schema}),
			[]string{"role " + role + " may not create tables in schema " + schema, "GRANT CREATE ON SCHEMA " + schema + " TO " + role}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL)+"store: {driver: postgres, url: ${DATABASE_URL}}\n")
			e := func(stdin string) env {
				return env{getenv: testEnv(map[string]string{"DATABASE_URL": tt.url}), stdin: strings.NewReader(stdin)}
			}
			has := func(what, out string) {
				t.Helper()
				for _, w := range tt.want {
					if !strings.Contains(out, w) {
						t.Errorf("%s: want %q in: %s", what, w, out)
					}
				}
			}
			asked := len(srv.Requests())
			res := runMain(t, e(""), "doctor", "--config", cfg)
			if res.code == 0 || strings.Contains(res.stdout, "the first start creates") {
				t.Errorf("doctor passed a database where nothing can be created: %s", res.stdout)
			}
			has("doctor", res.stdout)
			res = runMain(t, e("hello\n"), "chat", "--config", cfg)
			if res.code == 0 {
				t.Errorf("chat started: %s", res.stdout)
			}
			has("chat", res.stderr)
			if n := len(srv.Requests()) - asked; n != 1 { // doctor's one question
				t.Errorf("the model was asked %d times; want doctor's one", n)
			}
		})
	}
	// migrate-store stops the same way, before copying anything.
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	if res := runMain(t, env{getenv: testEnv(nil), stdin: strings.NewReader("hi\n")}, "chat", "--config", cfg); res.code != 0 {
		t.Fatalf("chat on SQLite: %d %s", res.code, res.stderr)
	}
	res := runMain(t, env{getenv: testEnv(nil)}, "migrate-store", "--from", "sqlite:"+filepath.Join(dir, "data", "talon.db"),
		"--to", withQuery("", map[string]string{"search_path": "talon_test_missing_" + suffix}))
	if res.code == 0 || !strings.Contains(res.stderr, "no schema of the search_path") || !strings.Contains(res.stderr, "CREATE SCHEMA") {
		t.Errorf("migrate-store into a missing schema: exit %d, stderr %s", res.code, res.stderr)
	}
}

// Replicas share the database but not a data directory: the second one,
// without TALON_VAULT_KEY, finds the vault sealed and no key file. doctor
// and the start say where the key is and to give it to every replica;
// with the first one's key file as TALON_VAULT_KEY it opens.
func TestSecondReplicaWithoutTheVaultKey(t *testing.T) {
	dbURL, _ := postgresSchema(t)
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	store := "store: {driver: postgres, url: ${DATABASE_URL}}\n"
	cfgA := writeConfig(t, t.TempDir(), baseConfig(dataA, "openai", srv.URL)+store)
	cfgB := writeConfig(t, t.TempDir(), baseConfig(dataB, "openai", srv.URL)+store)
	vars := map[string]string{"DATABASE_URL": dbURL}
	e := func(stdin string) env { return env{getenv: testEnv(vars), stdin: strings.NewReader(stdin)} }
	if res := runMain(t, e("hello\n"), "chat", "--config", cfgA); res.code != 0 {
		t.Fatalf("chat on the first data directory: %d %s", res.code, res.stderr)
	}
	const want = "On PostgreSQL every replica needs the same key: set TALON_VAULT_KEY on each to the contents of vault.key"
	res := runMain(t, e(""), "doctor", "--config", cfgB)
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  vault key") || !strings.Contains(res.stdout, want) {
		t.Errorf("doctor on the second data directory: exit %d, stdout %s", res.code, res.stdout)
	}
	if res := runMain(t, e("hello\n"), "chat", "--config", cfgB); res.code == 0 || !strings.Contains(res.stderr, want) {
		t.Errorf("chat on the second data directory: exit %d, stderr %s", res.code, res.stderr)
	}
	// Another key than the first one's: the store's vault is sealed with
	// the first, and the same advice says where it is.
	other, err := vault.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	vars["TALON_VAULT_KEY"] = other.Encode()
	if res := runMain(t, e("hello\n"), "chat", "--config", cfgB); res.code == 0 ||
		!strings.Contains(res.stderr, "wrong vault key: the store's vault was sealed with another master key") || !strings.Contains(res.stderr, want) {
		t.Errorf("chat on the second data directory with another key: exit %d, stderr %s", res.code, res.stderr)
	}
	key, err := os.ReadFile(filepath.Join(dataA, "vault.key"))
	if err != nil {
		t.Fatal(err)
	}
	vars["TALON_VAULT_KEY"] = strings.TrimSpace(string(key))
	if res := runMain(t, e("again\n"), "chat", "--config", cfgB); res.code != 0 || res.stdout != "echo: again\n" {
		t.Errorf("chat with the first one's key: exit %d, stdout %q, stderr %s", res.code, res.stdout, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(dataB, "vault.key")); !os.IsNotExist(err) {
		t.Errorf("a key file was made in the second data directory: %v", err)
	}
}

// pgRuns writes the configurations of talon run processes on one
// PostgreSQL schema and one NATS server: each with Discord (one fake
// gateway), an echo model, memory and routines off, its own data
// directory, and the same environment (getenv, one vault key).
type pgRuns struct {
	t       *testing.T
	pool    *pgxpool.Pool // on the schema
	getenv  func(string) string
	model   string
	discord *fakeDiscordGateway
}

func newPGRuns(t *testing.T) *pgRuns {
	dbURL, pool := postgresSchema(t)
	key := make([]byte, 32)
	_, _ = crand.Read(key)
	return &pgRuns{t: t, pool: pool, model: llmtest.NewServer(t, llmtest.Echo()).URL, discord: newFakeDiscordGateway(t, 0),
		getenv: testEnv(map[string]string{"DATABASE_URL": dbURL, "TEST_NATS_URL": testNATS(t), "DISCORD_BOT_TOKEN": "test-discord-token-not-real",
			"TALON_VAULT_KEY": base64.StdEncoding.EncodeToString(key)})}
}

// config writes the configuration of the process name, with extra (a
// nats: section) at its end, and returns it and its listen address.
func (p *pgRuns) config(name, extra string) (cfg, addr string) {
	t := p.t
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	addr = freeAddr(t)
	return writeConfig(t, dir, strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", p.model), `listen: ""`, "listen: "+addr, 1)+
		"store:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n"+
		"discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: "+p.discord.srv.URL+"\n"+extra), addr
}

// natsReplicaYAML is the nats: section of a replica named name.
func natsReplicaYAML(name string) string {
	return "nats:\n  url: ${TEST_NATS_URL}\n  partitions: 4\n  replica: " + name + "\n"
}

// A process without nats.url runs, resumes and redelivers every session's
// turns on its database itself: a second such process (talon chat too),
// or a replica of a deployment beside it, would run the same turns, so
// each is refused, naming the holder. Replicas of a deployment share the
// database, and a process without nats.url is refused beside them.
func TestRuntimeLockOnPostgres(t *testing.T) {
	runs := newPGRuns(t)
	f, getenv := runs.discord, runs.getenv
	refused := func(what string, res result, holder string) {
		t.Helper()
		if res.code == 0 || !strings.Contains(res.stderr, "another Talon process runs turns on this database") || !strings.Contains(res.stderr, holder) ||
			!strings.Contains(res.stderr, "Give every process that shares this database the same nats.url, or run only one without it") {
			t.Errorf("%s: exit %d, stderr %s", what, res.code, res.stderr)
		}
	}
	other := func(what string, res result, holder string) {
		t.Helper()
		if res.code == 0 || !strings.Contains(res.stderr, "the replicas of another deployment, on another NATS server or nats.prefix") || !strings.Contains(res.stderr, holder) {
			t.Errorf("%s: exit %d, stderr %s", what, res.code, res.stderr)
		}
	}

	cfgA, addrA := runs.config("a", "")
	var logsA syncBuffer
	stopA := startRunEnv(t, cfgA, addrA, getenv, &logsA)
	waitUntil(t, func() bool { return f.sessions() == 1 })
	chat := env{getenv: getenv, stdin: strings.NewReader("hello\n")}
	cfgB, _ := runs.config("b", "")
	refused("talon chat beside a process without nats.url", runMain(t, chat, "chat", "--config", cfgB), `held by "talon run without nats.url on`)
	cfgC, addrC := runs.config("c", natsReplicaYAML("c"))
	refused("a replica beside a process without nats.url", runMain(t, env{getenv: getenv}, "run", "--config", cfgC), `held by "talon run without nats.url on`)
	// talon doctor shows who runs turns on the database.
	if res := runMain(t, env{getenv: getenv}, "doctor", "--config", cfgC); !strings.Contains(res.stdout, `ok    runtime: turns run here, the runtime lock held by "talon run without nats.url on`) {
		t.Errorf("doctor beside a process without nats.url: %s", res.stdout)
	}
	stopA()
	if res := runMain(t, env{getenv: getenv}, "doctor", "--config", cfgC); !strings.Contains(res.stdout, "ok    runtime: no process runs turns on this database now") {
		t.Errorf("doctor with no process running: %s", res.stdout)
	}

	var logsC, logsD syncBuffer
	stopC := startRunEnv(t, cfgC, addrC, getenv, &logsC)
	defer stopC()
	waitUntil(t, func() bool { return strings.Contains(logsC.String(), "cluster: this replica runs the turns") })
	refused("a process without nats.url beside a replica", runMain(t, env{getenv: getenv}, "run", "--config", cfgA), `held by "talon run replica c" from`)
	cfgE, _ := runs.config("e", natsReplicaYAML("e")+"  prefix: other\n")
	other("a replica of another deployment (nats.prefix)", runMain(t, env{getenv: getenv}, "run", "--config", cfgE), `held by "talon run replica c" from`)
	// Each replica has its own addresses, data directory and logging:
	// here d logs at another level than c.
	cfgD, addrD := runs.config("d", natsReplicaYAML("d"))
	editConfig(t, cfgD, "level: debug", "level: info")
	stopD := startRunEnv(t, cfgD, addrD, getenv, &logsD)
	defer stopD()
	waitUntil(t, func() bool { return strings.Contains(logsD.String(), "cluster: this replica runs the turns") })
	if strings.Contains(logsD.String(), "another Talon process") {
		t.Errorf("a second replica was refused:\n%s", logsD.String())
	}
	// A newer Talon would migrate the schema under them (here the schema
	// made one version behind this one's): it refuses and migrates
	// nothing, naming them.
	ctx := context.Background()
	var migration string
	var appliedAt int64
	if err := runs.pool.QueryRow(ctx, `DELETE FROM schema_migrations WHERE version = $1 RETURNING name, applied_at`, postgres.Latest()).
		Scan(&migration, &appliedAt); err != nil {
		t.Fatal(err)
	}
	cfgG, _ := runs.config("g", natsReplicaYAML("g"))
	if res := runMain(t, env{getenv: getenv}, "run", "--config", cfgG); res.code == 0 ||
		!strings.Contains(res.stderr, fmt.Sprintf("the schema is at version %d and this Talon migrates it to %d", postgres.Latest()-1, postgres.Latest())) ||
		!strings.Contains(res.stderr, `held by "talon run replica c" from`) || !strings.Contains(res.stderr, "Stop every replica") {
		t.Errorf("an upgrade beside running replicas: exit %d, stderr %s", res.code, res.stderr)
	}
	if _, err := runs.pool.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
		postgres.Latest(), migration, appliedAt); err != nil {
		t.Fatal(err)
	}
	// A replica whose tools differ (here http_fetch's manifest) is
	// refused beside them: a turn runs on whichever replica owns its
	// session, with that replica's tools.
	cfgF, _ := runs.config("f", natsReplicaYAML("f"))
	writeFetchTool(t, filepath.Join(filepath.Dir(cfgF), "data"), "http://127.0.0.1:1", "5s")
	if res := runMain(t, env{getenv: getenv}, "run", "--config", cfgF); res.code == 0 ||
		!strings.Contains(res.stderr, "runs in this deployment (nats.url, nats.prefix talon) with other tools than this one") ||
		!strings.Contains(res.stderr, "every replica needs the same tools directory, manifests and modules") {
		t.Errorf("a replica with other tools: exit %d, stderr %s", res.code, res.stderr)
	}
	// A replica whose talon.yaml differs in a setting every replica must
	// share (here agent.rate_per_minute) is refused beside them, naming it.
	cfgH, _ := runs.config("h", natsReplicaYAML("h"))
	editConfig(t, cfgH, "rate_per_minute: 0", "rate_per_minute: 30")
	if res := runMain(t, env{getenv: getenv}, "run", "--config", cfgH); res.code == 0 ||
		!strings.Contains(res.stderr, "runs in this deployment (nats.url, nats.prefix talon) with other settings than this one: "+
			"agent.rate_per_minute is 0 there and 30 here. A turn runs on whichever replica owns its session") ||
		!strings.Contains(res.stderr, "every replica needs the same talon.yaml apart from its own addresses, data directory, logging and resources") {
		t.Errorf("a replica with another agent.rate_per_minute: exit %d, stderr %s", res.code, res.stderr)
	}
}

// editConfig replaces old, which must be there, by new in the
// configuration file path.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A process without nats.url whose lock's connection was cut, and whose
// lock a replica took meanwhile, stops (within its 10 s check) rather
// than run the replica's turns too.
func TestRunStopsWhenItsRuntimeLockIsTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock's 10 s check")
	}
	runs := newPGRuns(t)
	pool, f, getenv := runs.pool, runs.discord, runs.getenv
	cfgA, _ := runs.config("a", "")
	var logsA syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		e := env{getenv: getenv, stdin: strings.NewReader(""), stdout: io.Discard, stderr: &logsA}
		done <- e.main(ctx, []string{"run", "--config", cfgA})
	}()
	waitUntil(t, func() bool { return f.sessions() == 1 })
	var cut int
	if err := pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name LIKE 'talon run without nats.url on %'`).Scan(&cut); err != nil || cut != 1 {
		t.Fatalf("cut the lock's connection: %d, %v", cut, err)
	}
	cfgC, addrC := runs.config("c", natsReplicaYAML("c"))
	var logsC syncBuffer
	stopC := startRunEnv(t, cfgC, addrC, getenv, &logsC)
	defer stopC()
	select {
	case code := <-done:
		if code == 0 || !strings.Contains(logsA.String(), "the database's runtime lock was lost and is held by another kind of process now: stopping") ||
			!strings.Contains(logsA.String(), `held by \"talon run replica c\"`) {
			t.Errorf("a process whose lock a replica took: exit %d, log:\n%s", code, logsA.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the process without nats.url still runs 30 s after a replica took its lock:\n%s", logsA.String())
	}
}
