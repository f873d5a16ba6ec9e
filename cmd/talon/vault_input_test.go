package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/vault"
)

// shortValue is under the vault's minimum length.
const shortValue = "hunter2"

// TestVaultSetRefusesShortValueInBinary runs the talon binary (this test
// binary re-executed as talon) with the value on a pipe: a value under
// the minimum is refused with the reason and nothing is stored; one of the
// minimum length is stored.
func TestVaultSetRefusesShortValueInBinary(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\n")
	run := func(value string, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], append(append([]string{"vault"}, args...), "--config", cfg)...)
		cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
		cmd.Stdin = strings.NewReader(value + "\n")
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), value) && value != "" {
			t.Errorf("talon vault %v printed the value", args)
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	code, out := run(shortValue, "set", "--user", "terminal::local", "pin", "--host", "api.example.com")
	if code == 0 || !strings.Contains(out, "at least 8 bytes") {
		t.Errorf("vault set of a %d-byte value: exit %d, output %q; want a refusal saying the minimum", len(shortValue), code, out)
	}
	if code, out := run("", "list"); code != 0 || !strings.Contains(out, "no entries") {
		t.Errorf("vault list after the refusal: exit %d\n%s", code, out)
	}
	if code, out := run("8bytes!!", "set", "--user", "terminal::local", "pin", "--host", "api.example.com"); code != 0 {
		t.Errorf("vault set of an 8-byte value: exit %d %s", code, out)
	}
	if code, out := run("", "set", "--help"); code != 0 || !strings.Contains(out, "at least 8 bytes") {
		t.Errorf("vault set --help (exit %d) does not say the minimum:\n%s", code, out)
	}
}

// TestVaultListMarksShortValues: an entry stored before the minimum (sealed
// directly, as an older Talon did) still works, and `talon vault list`
// says it is never redacted.
func TestVaultListMarksShortValues(t *testing.T) {
	ctx := context.Background()
	dir, db, v := openTestVault(t, nil)
	key, err := vault.LoadKeyFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	old, err := vault.Seal(key, vault.Entry{User: "terminal::local", Name: "pin", Value: vault.SecretString(shortValue), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.VaultStorage().PutEntry(ctx, old); err != nil {
		t.Fatal(err)
	}
	setEntry(t, v, "terminal::local", "token", "long-enough-value-1", "api.example.com")
	db.Close()
	cfg := writeConfig(t, dir, "data_dir: "+dir+"\n")
	res := runMain(t, env{}, "vault", "list", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, `warning: the value of "pin" of terminal::local is shorter than 8 bytes`) ||
		strings.Contains(res.stdout, `"token" of`) {
		t.Errorf("vault list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// The gateway says so in its log when it starts.
	model := llmtest.NewServer(t, llmtest.Echo())
	cfg = writeConfig(t, dir, baseConfig(dir, "openai", model.URL))
	res = runMain(t, env{}, "chat", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stderr, "never redacted") || !strings.Contains(res.stderr, `"secret":"pin"`) || strings.Contains(res.stderr, `"secret":"token"`) {
		t.Errorf("talon chat: exit %d, log does not warn of the short entry alone:\n%s", res.code, res.stderr)
	}
	if strings.Contains(res.stderr, shortValue) {
		t.Error("the log holds the value")
	}
}

// TestSecretAddRefusesShortValueInChat stores a secret with /secret add in
// `talon chat`, the value given at the hidden prompt: a short one is
// refused with the reason, and the model never sees either.
func TestSecretAddRefusesShortValueInChat(t *testing.T) {
	model := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, baseConfig(data, "openai", model.URL))
	in := "/secret add pin --host api.example.com\n" + shortValue + "\n" +
		"/secret add token --host api.example.com\nlong-enough-value-1\n/secrets\n"
	res := runMain(t, env{stdin: strings.NewReader(in)}, "chat", "--config", cfg)
	if res.code != 0 {
		t.Fatalf("chat: exit %d %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "Not stored") || !strings.Contains(res.stdout, "at least 8 bytes") {
		t.Errorf("the short value was not refused with the reason:\n%s", res.stdout)
	}
	if !strings.Contains(res.stdout, "Stored token") {
		t.Errorf("the long value was not stored:\n%s", res.stdout)
	}
	if strings.Contains(res.stdout+res.stderr, shortValue) || strings.Contains(res.stdout+res.stderr, "long-enough-value-1") {
		t.Error("a value was printed or logged")
	}
	for _, r := range model.Requests() {
		if strings.Contains(string(r.Raw), shortValue) {
			t.Error("the short value reached the model")
		}
	}
	res = runMain(t, env{}, "vault", "list", "--config", cfg)
	if strings.Contains(res.stdout, "pin") || !strings.Contains(res.stdout, "token") {
		t.Errorf("vault list after /secret add:\n%s", res.stdout)
	}
}

// TestSlackSecretModalRefusesShortValue boots the gateway with Slack in
// events mode and submits the secret form over HTTP, as Slack would: a
// short value comes back to the form as an error on the value field with
// the reason, and nothing is stored.
func TestSlackSecretModalRefusesShortValue(t *testing.T) {
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	data := filepath.Join(dir, "data")
	body := strings.Replace(baseConfig(data, "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) + slackSection("events", fs.url())
	cfg := writeConfig(t, dir, body)
	var stderr syncBuffer
	stop := startRunEnv(t, cfg, addr, slackEnv(), &stderr)

	submit := func(value string) (int, map[string]string) {
		t.Helper()
		input := func(v string) map[string]any {
			return map[string]any{"v": map[string]any{"type": "plain_text_input", "value": v}}
		}
		payload, _ := json.Marshal(map[string]any{
			"type": "view_submission", "team": map[string]any{"id": "T1"}, "user": map[string]any{"id": "U1", "team_id": "T1"},
			"view": map[string]any{
				"id": "V1", "callback_id": "talon_secret_add", "private_metadata": `{"c":"D1"}`,
				"state": map[string]any{"values": map[string]any{
					"name": input("pin"), "value": input(value), "hosts": input("api.example.com"), "param": input(""),
					"injection": map[string]any{"v": map[string]any{"type": "static_select", "selected_option": map[string]any{"value": "bearer"}}},
				}},
			},
		})
		form := []byte(url.Values{"payload": {string(payload)}}.Encode())
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/slack/events", strings.NewReader(string(form)))
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", ts)
		req.Header.Set("X-Slack-Signature", signSlack(testSigningSecret, ts, form))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Errors map[string]string `json:"errors"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v.Errors
	}
	code, errs := submit(shortValue)
	if code != http.StatusOK || !strings.Contains(errs["value"], "at least 8 bytes") {
		t.Errorf("short value: status %d, errors %v; want the reason on the value field", code, errs)
	}
	if res := runMain(t, env{getenv: slackEnv()}, "vault", "list", "--config", cfg); !strings.Contains(res.stdout, "no entries") {
		t.Errorf("vault list after the short value:\n%s%s", res.stdout, res.stderr)
	}
	code, errs = submit("long-enough-value-1")
	if code != http.StatusOK || len(errs) != 0 {
		t.Errorf("long value: status %d, errors %v; want it stored", code, errs)
	}
	stop()
	if strings.Contains(stderr.String(), shortValue) {
		t.Error("the short value was logged")
	}
	res := runMain(t, env{getenv: slackEnv()}, "vault", "list", "--config", cfg)
	if n := strings.Count(res.stdout, "slack:T1:U1"); n != 1 {
		t.Errorf("vault list shows %d entries of slack:T1:U1, want the long one only:\n%s%s", n, res.stdout, res.stderr)
	}
}

// TestVaultCommandsCheckTheKey runs every vault command with a wrong
// TALON_VAULT_KEY: each refuses, saying what to do, and changes nothing.
func TestVaultCommandsCheckTheKey(t *testing.T) {
	right, _ := vault.GenerateKey()
	wrong, _ := vault.GenerateKey()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\n")
	invoke := func(key vault.Key, stdin string, args ...string) result {
		t.Helper()
		return runMain(t, env{stdin: strings.NewReader(stdin), getenv: testEnv(map[string]string{vault.EnvKey: key.Encode()})},
			append(append([]string{"vault"}, args...), "--config", cfg)...)
	}
	if res := invoke(right, "value-0123456789\n", "set", "--user", "terminal::local", "github", "--host", "api.github.com"); res.code != 0 {
		t.Fatalf("set: exit %d %s", res.code, res.stderr)
	}
	for _, args := range [][]string{
		{"list"},
		{"list", "--user", "terminal::local"},
		{"rm", "--user", "terminal::local", "github"},
		{"audit"},
		{"set", "--user", "terminal::local", "other", "--host", "api.github.com"},
		{"rotate-key"},
	} {
		res := invoke(wrong, "value-0123456789\n", args...)
		if res.code == 0 || !strings.Contains(res.stderr, "wrong vault key") || !strings.Contains(res.stderr, vault.EnvKey) {
			t.Errorf("vault %v with a wrong key: exit %d, stderr %q; want a refusal naming %s", args, res.code, res.stderr, vault.EnvKey)
		}
		if res.stdout != "" {
			t.Errorf("vault %v with a wrong key printed %q", args, res.stdout)
		}
	}
	res := invoke(right, "", "list")
	if res.code != 0 || !strings.Contains(res.stdout, "github") || strings.Contains(res.stdout, "other") {
		t.Errorf("with the right key after the refusals: exit %d\n%s", res.code, res.stdout)
	}
}
