package main

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/vault"
)

// oldDatabase writes, at path, a database as Talon at schema version 3
// left it (migrations 0001 to 0003, read from the source tree), with a
// vault sealed under key: the state a team upgrading from it starts from.
func oldDatabase(t *testing.T, path string, key vault.Key) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	exec(`PRAGMA journal_mode = WAL`)
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`)
	for i, name := range []string{"init", "approvals_vault", "followed_threads"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "store", "migrations", "000"+string(rune('1'+i))+"_"+name+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		exec(string(b))
		exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 1)`, i+1, name)
	}
	exec(`INSERT INTO vault_meta (k, v) VALUES ('key_check', ?)`, vault.KeyCheck(key))
}

// TestDoctorChecksVaultAndSchema: `talon doctor` says what `talon run`
// would stop on, a wrong or missing vault key, and that the next start
// upgrades an older database (which an older Talon then cannot open), and
// it changes nothing: no migration, no key file created.
func TestDoctorChecksVaultAndSchema(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Text("ok"))
	key, _ := vault.GenerateKey()
	other, _ := vault.GenerateKey()

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(data, "talon.db")
	oldDatabase(t, dbPath, key)
	cfg := writeConfig(t, dir, baseConfig(data, "openai", srv.URL))
	version := func() int {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v int
		if err := db.QueryRow(`SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	doctor := func(env map[string]string) result {
		t.Helper()
		return runMain(t, env_(env), "doctor", "--config", cfg)
	}

	// The key file is missing, the vault was sealed with a key.
	res := doctor(nil)
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  vault key") || !strings.Contains(res.stdout, "missing") {
		t.Errorf("doctor without the key file: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(data, vault.KeyFileName)); err == nil {
		t.Error("doctor created a key file")
	}
	// A wrong key.
	res = doctor(map[string]string{vault.EnvKey: other.Encode()})
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  vault key") || !strings.Contains(res.stdout, "another master key") {
		t.Errorf("doctor with a wrong key: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// The right key: ok, and the upgrade is announced.
	res = doctor(map[string]string{vault.EnvKey: key.Encode()})
	if res.code != 0 || !strings.Contains(res.stdout, "ok    vault key") {
		t.Errorf("doctor with the right key: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "schema version 3") || !strings.Contains(res.stdout, "back up") {
		t.Errorf("doctor does not say that the next start upgrades the database:\n%s", res.stdout)
	}
	if v := version(); v != 3 {
		t.Errorf("doctor migrated the database to version %d", v)
	}
	if strings.Contains(res.stdout+res.stderr, key.Encode()) {
		t.Error("doctor printed the key")
	}

	// A new data directory: nothing to check yet, nothing created.
	fresh := filepath.Join(dir, "fresh")
	cfg = writeConfig(t, dir, baseConfig(fresh, "openai", srv.URL))
	res = doctor(nil)
	if res.code != 0 || !strings.Contains(res.stdout, "ok    vault key") || !strings.Contains(res.stdout, "ok    database") {
		t.Errorf("doctor on a new data directory: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, f := range []string{"talon.db", vault.KeyFileName} {
		if _, err := os.Stat(filepath.Join(fresh, f)); err == nil {
			t.Errorf("doctor created %s", f)
		}
	}
}

// env_ is an env whose getenv reads m.
func env_(m map[string]string) env { return env{getenv: testEnv(m)} }

// A ${NAME} reference unquoted in a flow collection, as README.md and
// issue 15 write configuration lines (store: {driver: postgres, url:
// ${DATABASE_URL}}), is read by the binary with the variable's value.
func TestDoctorReadsReferencesInFlowCollections(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Text("ok"))
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\n"+
		"http: {listen: \"\"}\n"+
		"llm: {provider: openai, base_url: ${TEST_LLM_URL}, model: test-model, max_retries: 0}\n"+
		"store: {driver: sqlite}\n")
	res := runMain(t, env{getenv: testEnv(map[string]string{"TEST_LLM_URL": srv.URL})}, "doctor", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "ok    configuration") || !strings.Contains(res.stdout, "ok    model answers") || !strings.Contains(res.stdout, srv.URL) {
		t.Errorf("doctor: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}
