package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox"
)

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logargsApp opens the gateway's app over a data directory whose tools
// directory holds the logargs test guest, with extra YAML in its sandbox
// section, and returns it with the path of its configuration.
func logargsApp(t *testing.T, sandboxYAML string, log zerolog.Logger, before func(cfgPath string)) *app {
	t.Helper()
	dir := t.TempDir()
	toolsDir := filepath.Join(dir, "tools")
	if err := os.MkdirAll(toolsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile("../../sandbox/testdata/logargs.wasm")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"logargs.wasm": wasm,
		"logargs.yaml": []byte("name: logargs\ndescription: logs its arguments\n"),
	} {
		if err := os.WriteFile(filepath.Join(toolsDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", "http://127.0.0.1:9")+
		"sandbox:\n  tools_dir: "+toolsDir+"\n"+sandboxYAML)
	if before != nil {
		before(cfgPath)
	}
	e := env{getenv: testEnv(nil)}
	cfg, err := loadConfig(e, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := openApp(context.Background(), e, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// sandboxOf returns the app's sandbox.
func sandboxOf(t *testing.T, a *app) *sandbox.Runtime {
	t.Helper()
	tools := a.rt.Tools
	if rs, ok := tools.(routineToolSet); ok {
		tools = rs.inner // the routine tools are offered besides the others
	}
	if mt, ok := tools.(memoryTools); ok {
		tools = mt.next
	}
	sb, ok := tools.(*sandbox.Runtime)
	if !ok {
		t.Fatalf("the runtime's tools are a %T, want the sandbox", tools)
	}
	return sb
}

var localUser = agent.SessionKey{Principal: agent.Principal{Platform: "terminal", User: "local"}}

// What a tool logs reaches the debug log only after the vault's leak
// scan: the calling user's secret value and a token of a well-known
// format are redacted.
func TestToolLogIsScanned(t *testing.T) {
	const (
		secret = "k9-Tool-Log-Secret-Value-7d3e1a"
		token  = "ghp_Zq8Lw2Nx5Rt7Yv1Bm4Kc6Hd9Fs3Gj0Pa2WeX" // github-classic shape
	)
	var logs lockedBuffer
	a := logargsApp(t, "", zerolog.New(&logs).Level(zerolog.DebugLevel), func(cfgPath string) {
		if res := runMain(t, env{stdin: strings.NewReader(secret + "\n")}, "vault", "set", "--config", cfgPath,
			"--user", "terminal::local", "mine", "--host", "api.example.com"); res.code != 0 {
			t.Fatalf("vault set: exit %d: %s", res.code, res.stderr)
		}
	})
	res, err := sandboxOf(t, a).Call(context.Background(), agent.ToolCall{ID: "c1", Name: "logargs",
		Args: []byte(`{"a":"` + secret + `","b":"` + token + `"}`), Key: localUser})
	if err != nil || res.IsError {
		t.Fatalf("call = %+v, %v", res, err)
	}
	// The log is never printed: it may hold the secrets.
	l := logs.String()
	if !strings.Contains(l, `"message":"tool log"`) || !strings.Contains(l, `"guest_msg_redacted":2`) {
		t.Errorf("the log has no tool log line with two findings redacted")
	}
	for i, s := range []string{secret, token, "Tool-Log-Secret", "Zq8Lw2Nx5Rt7"} {
		if strings.Contains(l, s) {
			t.Errorf("the log holds secret form %d", i)
		}
	}
}

// sandbox.pool_size: 0 means no pool: the sandbox makes an instance for
// each call and none ahead, and calls work; 2 makes a pool.
func TestSandboxPoolSizeFromConfig(t *testing.T) {
	for _, tt := range []struct {
		yaml  string
		pools int
	}{
		{"  pool_size: 0\n", 0},
		{"  pool_size: 2\n", 1},
		{"", 1}, // the default: 2
	} {
		t.Run(strings.TrimSpace(tt.yaml), func(t *testing.T) {
			sb := sandboxOf(t, logargsApp(t, tt.yaml, zerolog.Nop(), nil))
			for i := range 3 {
				res, err := sb.Call(context.Background(), agent.ToolCall{ID: "c", Name: "logargs", Args: []byte(`{}`), Key: localUser})
				if err != nil || res.IsError {
					t.Fatalf("call %d = %+v, %v", i, res, err)
				}
			}
			st := sb.Stats()
			if st.Pools != tt.pools {
				t.Errorf("pools = %d, want %d", st.Pools, tt.pools)
			}
			if tt.pools == 0 && (st.Instances != 3 || st.Pooled != 0) {
				t.Errorf("Stats = %+v, want 3 instances, one per call, none pooled", st)
			}
		})
	}
}
