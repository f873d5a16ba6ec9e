package main

import (
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/sandbox/tools"
)

const testPage = `<!doctype html><html><head><title>Talon test page</title></head>
<body><h1>Hello from loopback</h1><p>The sandbox fetched this.</p></body></html>`

// toolsConfig is a gateway configuration whose tools directory overrides
// http_fetch's manifest to allow exactly the test server (the default "*"
// rule never reaches private addresses), with loopback allowlisted.
func toolsConfig(t *testing.T, llmURL, pageHost string) string {
	t.Helper()
	dir := t.TempDir()
	toolsDir := filepath.Join(dir, "tools")
	if err := os.MkdirAll(toolsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`name: http_fetch
description: Fetch a page of the test server.
parameters:
  type: object
  properties:
    url: {type: string}
  required: [url]
http:
  - scheme: http
    host: "%s"
    methods: [GET]
limits:
  deadline: 30s
`, pageHost)
	if err := os.WriteFile(filepath.Join(toolsDir, "http_fetch.yaml"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	body := baseConfig(filepath.Join(dir, "data"), "openai", llmURL) + fmt.Sprintf(`sandbox:
  tools_dir: %s
  allow_private: [127.0.0.1/32]
`, toolsDir)
	return writeConfig(t, dir, body)
}

// fetchConversation asks for http_fetch when told "fetch URL" and repeats
// the tool's result.
func fetchConversation(req llmtest.Request) llmtest.Response {
	last := req.Messages[len(req.Messages)-1]
	if last.Role == llm.RoleTool {
		return llmtest.Response{Text: "tool said: " + last.Content}
	}
	if u, ok := strings.CutPrefix(last.Content, "fetch "); ok {
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "http_fetch", Arguments: fmt.Sprintf(`{"url":%q}`, u)}}}
	}
	return llmtest.Response{Text: "no"}
}

// TestToolsEndToEnd runs the real gateway with the real sandbox: the model
// asks for http_fetch of a loopback page, the reply carries the page's
// text; then the operator commands list, run and check the tools.
func TestToolsEndToEnd(t *testing.T) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, testPage)
	}))
	defer page.Close()
	host := strings.TrimPrefix(page.URL, "http://")
	srv := llmtest.NewServer(t, fetchConversation)
	cfg := toolsConfig(t, srv.URL, host)

	res := runMain(t, env{stdin: strings.NewReader("fetch " + page.URL + "/doc\n")}, "run", "--config", cfg)
	if res.code != 0 {
		t.Fatalf("run: exit %d; stderr:\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"tool said:", "Talon test page", "Hello from loopback", "The sandbox fetched this."} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("reply does not contain %q:\n%s", want, res.stdout)
		}
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("model requests: got %d, want 2", len(reqs))
	}
	if offered := strings.Join(reqs[0].Tools, ","); offered != "github,html_text,http_fetch,memory_save,memory_search,memory_forget,routine_create,routine_list,routine_delete" {
		t.Errorf("tools offered to the model = %s, want the enabled ones, memory's and the routine tools", offered)
	}

	t.Run("list", func(t *testing.T) {
		res := runMain(t, env{}, "tool", "list", "--config", cfg)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		lines := map[string]string{}
		for _, l := range strings.Split(res.stdout, "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				lines[f[0]] = l
			}
		}
		for name, want := range map[string][]string{
			"http_fetch":   {"built-in (manifest overridden)", "yes", "http://" + host + "[GET]"},
			"github":       {"built-in", "https://api.github.com", "github"},
			"http_request": {"built-in", "no", "non_get"},
		} {
			for _, w := range want {
				if !strings.Contains(lines[name], w) {
					t.Errorf("%s line %q does not contain %q", name, lines[name], w)
				}
			}
		}
	})

	t.Run("run", func(t *testing.T) {
		res := runMain(t, env{}, "tool", "run", "http_fetch", "--config", cfg, "--args", fmt.Sprintf(`{"url":%q}`, page.URL+"/x"))
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		want := fmt.Sprintf(`{"status":200,"url":"%s/x","title":"Talon test page","text":"Hello from loopback\n\nThe sandbox fetched this.","truncated":false}`+"\n", page.URL)
		if res.stdout != want {
			t.Errorf("stdout = %q, want %q", res.stdout, want)
		}
	})

	t.Run("run refused", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"host not allowed", []string{"http_fetch", "--args", `{"url":"http://127.0.0.2:9/"}`}, "not in the tool's allowlist"},
			{"unknown tool", []string{"nope"}, `no enabled tool "nope"`},
			{"disabled tool", []string{"http_request"}, `no enabled tool "http_request"`},
			{"bad principal", []string{"http_fetch", "--user", "alice"}, "platform:workspace:user"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := runMain(t, env{}, append([]string{"tool", "run", "--config", cfg}, tt.args...)...)
				if res.code == 0 || !strings.Contains(res.stderr, tt.want) {
					t.Errorf("exit %d, stderr %q, want failure mentioning %q", res.code, res.stderr, tt.want)
				}
			})
		}
	})

	t.Run("check", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte("name: other\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The built-in module as an operator would have it: a .wasm file
		// (the binary stores it gzipped).
		module, err := fs.ReadFile(tools.FS, "http_fetch.wasm")
		if err != nil {
			t.Fatal(err)
		}
		fetch := filepath.Join(t.TempDir(), "http_fetch.wasm")
		if err := os.WriteFile(fetch, module, 0o600); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name     string
			args     []string
			wantCode int
			want     string
		}{
			{"built-in module and manifest", []string{fetch, "../../sandbox/tools/http_fetch.yaml"}, 0, "ok\n"},
			{"wrong ABI", []string{"../../sandbox/testdata/abi2.wasm"}, 1, "built for tool ABI version 2"},
			{"unknown import", []string{"../../sandbox/testdata/badimport.wasm"}, 1, "import talon.exec: unknown import"},
			{"loops nested too deep", []string{"../../sandbox/testdata/nestloops.wasm"}, 1,
				"function 2: loop nesting depth is 100, above the limit of 64"},
			{"table too large", []string{"../../sandbox/testdata/tablehuge.wasm"}, 1,
				"memory and tables at start in MiB (limits.memory_mib) is 1025, above the limit of 64"},
			{"bad manifest", []string{"../../sandbox/testdata/echo.wasm", bad}, 1, "description: required"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := runMain(t, env{}, append([]string{"tool", "check"}, tt.args...)...)
				if res.code != tt.wantCode || !strings.Contains(res.stdout, tt.want) {
					t.Errorf("exit %d stdout %q stderr %q; want exit %d and %q", res.code, res.stdout, res.stderr, tt.wantCode, tt.want)
				}
			})
		}
	})
}
