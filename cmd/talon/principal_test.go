package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// seedOldVault stores entries under users as an older Talon did, before
// principals of global user ids lost their workspace: straight through
// the vault, without the rename the commands do at start. It returns the
// data directory's configuration file.
func seedOldVault(t *testing.T, dir string, key vault.Key, entries []vault.Entry) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := vault.OpenInDir(ctx, dir, testEnv(map[string]string{vault.EnvKey: key.Encode()}), db.VaultStorage())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := v.Set(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiscordSecretFollowsTheUser starts from a vault whose Discord
// entries name a guild, as they were stored before: the first command
// re-seals them under the user alone, keeping the newest of two entries of
// one name (and auditing the other), and the user's secret added in a
// server is then used for them anywhere, through the egress broker.
func TestDiscordSecretFollowsTheUser(t *testing.T) {
	var got recorder
	api := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add(r, readAll(r))
		fmt.Fprint(w, `{"ok":true}`)
	}), "api.example.com")
	authority := "api.example.com:" + strconv.Itoa(api.Listener.Addr().(*net.TCPAddr).Port)
	dir := t.TempDir()
	data, toolsDir := filepath.Join(dir, "data"), filepath.Join(dir, "tools")
	writeHTTPRequestManifest(t, toolsDir, []string{"gh", "jira"}, authority)
	cfg := writeConfig(t, dir, fmt.Sprintf("data_dir: %s\nsandbox:\n  tools_dir: %s\n  allow_private: [127.0.0.1/32]\n", data, toolsDir))
	key, _ := vault.GenerateKey()
	entry := func(user, name, value string) vault.Entry {
		return vault.Entry{User: user, Name: name, Value: vault.SecretString(value), Hosts: []string{authority}, Injection: vault.Injection{Kind: vault.InjectBearer}}
	}
	seedOldVault(t, data, key, []vault.Entry{
		entry("discord:G1:U7", "gh", "older-guild-value-1"),
		entry("discord:G1:U7", "jira", "jira-guild-value-01"),
	})
	seedOldVault(t, data, key, []vault.Entry{entry("discord:G2:U7", "gh", "newer-guild-value-2")}) // created later

	roots := x509.NewCertPool()
	roots.AddCert(api.Certificate())
	e := env{getenv: testEnv(map[string]string{vault.EnvKey: key.Encode()}), resolver: loopbackResolver{"api.example.com": true}, rootCAs: roots}
	invoke := func(args ...string) result {
		t.Helper()
		return runMain(t, e, append(args, "--config", cfg)...)
	}
	res := invoke("vault", "list")
	if res.code != 0 {
		t.Fatalf("vault list: exit %d %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, "moved 2 entries") || !strings.Contains(res.stderr, `removed "gh" of discord:G1:U7`) {
		t.Errorf("the first command does not say what it moved and removed:\n%s", res.stderr)
	}
	if strings.Contains(res.stdout, "discord:G") || strings.Count(res.stdout, "discord::U7") != 2 {
		t.Errorf("vault list after the rename:\n%s", res.stdout)
	}
	if res := invoke("vault", "list"); strings.Contains(res.stderr, "moved") || res.code != 0 {
		t.Errorf("the second command renamed again: exit %d\n%s", res.code, res.stderr)
	}
	if res := invoke("vault", "audit"); !strings.Contains(res.stdout, "merged_duplicate") || !strings.Contains(res.stdout, "discord:G1:U7") {
		t.Errorf("the audit does not record the removed entry:\n%s", res.stdout)
	}
	// The user's secrets work for them, wherever they write (the session's
	// principal has no guild), with the newest value of gh.
	for _, c := range []struct{ name, value string }{{"gh", "newer-guild-value-2"}, {"jira", "jira-guild-value-01"}} {
		res := invoke("tool", "run", "http_request", "--user", "discord::U7", "--args", fmt.Sprintf(`{"url":"https://%s/x","credential":%q}`, authority, c.name))
		if res.code != 0 {
			t.Fatalf("tool run with %s: exit %d %s", c.name, res.code, res.stderr)
		}
		if !strings.Contains(got.all(), "auth=Bearer "+c.value) {
			t.Errorf("the API did not receive %s's value", c.name)
		}
	}
	if strings.Contains(got.all(), "older-guild-value-1") {
		t.Error("the older duplicate was used")
	}
	// A user named with a guild is the same user.
	if res := invoke("vault", "list", "--user", "discord:G9:U7"); strings.Count(res.stdout, "discord::U7") != 2 {
		t.Errorf("vault list --user discord:G9:U7:\n%s%s", res.stdout, res.stderr)
	}
}

// TestVaultRenameSurvivesKill kills `talon vault list` (which re-seals the
// entries of renamed principals when it opens the vault) at random moments
// over the time a whole run takes, each time on a fresh copy of a vault
// stored before the rename: after each kill every entry is either still
// under its old user or under its new one, all of them the same way, and
// opens to its value; none is lost or doubled.
func TestVaultRenameSurvivesKill(t *testing.T) {
	template := filepath.Join(t.TempDir(), "template")
	key, _ := vault.GenerateKey()
	want := map[string]string{} // new user + name → value
	var entries []vault.Entry
	for i := range 300 {
		user := fmt.Sprintf("discord:G%d:U%d", i%7, i)
		if i%5 == 0 {
			user = fmt.Sprintf("slack:T1:W%d", i)
		}
		value := fmt.Sprintf("value-%04d-%s", i, strings.Repeat("x", 8))
		entries = append(entries, vault.Entry{User: user, Name: "n" + strconv.Itoa(i%3), Value: vault.SecretString(value), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}})
		g, _ := store.GlobalUser(user)
		want[g+" n"+strconv.Itoa(i%3)] = value
	}
	seedOldVault(t, template, key, entries)
	files, err := os.ReadDir(template)
	if err != nil {
		t.Fatal(err)
	}

	// fresh copies the template to a new data directory and returns its
	// configuration file.
	fresh := func() (data, cfg string) {
		t.Helper()
		dir := t.TempDir()
		data = filepath.Join(dir, "data")
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(template, f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(data, f.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return data, writeConfig(t, dir, "data_dir: "+data+"\n")
	}
	// check verifies the invariants and reports whether the rename is done.
	check := func(data string) (renamed bool) {
		t.Helper()
		ctx := context.Background()
		db, err := store.Open(ctx, filepath.Join(data, "talon.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		v, err := vault.OpenInDir(ctx, data, testEnv(map[string]string{vault.EnvKey: key.Encode()}), db.VaultStorage())
		if err != nil {
			t.Fatal(err)
		}
		es, err := v.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		old := 0
		for _, s := range es {
			user := s.User
			g, moved := store.GlobalUser(user)
			if moved {
				old++
			}
			e, err := v.Credential(ctx, user, s.Name, "api.example.com", "https", "check")
			if err != nil {
				t.Fatalf("entry %s %s does not open: %v", user, s.Name, err)
			}
			k := g + " " + s.Name
			if _, dup := got[k]; dup {
				t.Fatalf("entry %s is there twice", k)
			}
			got[k] = string(e.Value.Reveal())
		}
		if old != 0 && old != len(es) {
			t.Fatalf("%d of %d entries are under their old user: a rename was half done", old, len(es))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("entries: user and name → value (-want +got):\n%s", diff)
		}
		return old == 0
	}
	run := func(cfg string, killAfter time.Duration) (took time.Duration, killed bool) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "vault", "list", "--config", cfg)
		cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1", vault.EnvKey+"="+key.Encode())
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if killAfter < 0 {
			if err := <-done; err != nil {
				t.Fatalf("vault list: %v", err)
			}
			return time.Since(start), false
		}
		select {
		case <-time.After(killAfter):
			_ = cmd.Process.Kill()
			<-done
			return time.Since(start), true
		case <-done:
			return time.Since(start), false
		}
	}

	data, cfg := fresh()
	whole, _ := run(cfg, -1)
	if !check(data) {
		t.Fatal("an uninterrupted run did not rename")
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	var before, after int
	for range 8 {
		data, cfg := fresh()
		at := time.Duration(r.Int64N(int64(whole)))
		if _, killed := run(cfg, at); !killed {
			continue
		}
		if check(data) {
			after++
		} else {
			before++
		}
	}
	t.Logf("a whole run took %v; of the runs killed, %d died before the rename committed, %d after", whole, before, after)
}
