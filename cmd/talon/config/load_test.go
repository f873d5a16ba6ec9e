package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadFile(t *testing.T) {
	const file = `
data_dir: /srv/talon
log: {level: debug, format: json}
http:
  listen: ""
llm:
  provider: anthropic
  api_key: ${ANTHROPIC_API_KEY}
  model: claude-x
  headers:
    HTTP-Referer: https://example.com/${SITE}
  timeout: 45s
  max_retries: ${RETRIES}
  max_tokens: "${TOKENS}"
  vision: false
agent:
  system_prompt: "costs $$5, ${GREETING}"
  turn_timeout: 90s
  rate_per_minute: 0
files:
  max_bytes: 5000000
  retention: 48h
sandbox:
  tools_dir: /opt/tools
  max_memory_mib: 128
  pool_idle: 30s
  warm: false
  allow_private: [10.0.0.0/8, "fd00::/8"]
  approval_timeout: 1h30m
terminal:
  user: alice
`
	vars := map[string]string{
		"ANTHROPIC_API_KEY": "sk-ant-123",
		"SITE":              "talon",
		"RETRIES":           "5",
		"TOKENS":            "2048",
		"GREETING":          "hello",
	}
	got, err := loadFile(t, file, vars)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.DataDir = "/srv/talon"
	want.Log = Log{Level: "debug", Format: "json"}
	want.HTTP.Listen = ""
	want.LLM = LLM{
		Provider:   "anthropic",
		APIKey:     "sk-ant-123",
		Model:      "claude-x",
		Headers:    map[string]Secret{"HTTP-Referer": "https://example.com/talon"},
		Timeout:    Duration(45 * time.Second),
		MaxRetries: 5,
		MaxTokens:  2048,
		Vision:     "false",
		Prices:     map[string]Price{},
	}
	want.Files.MaxBytes = 5_000_000
	want.Files.Retention = Duration(48 * time.Hour)
	want.Agent.SystemPrompt = "costs $5, hello"
	want.Agent.TurnTimeout = Duration(90 * time.Second)
	want.Agent.RatePerMinute = 0
	want.Sandbox = Sandbox{
		ToolsDir:        "/opt/tools",
		PoolSize:        2,
		MaxMemoryMiB:    128,
		PoolIdle:        Duration(30 * time.Second),
		AllowPrivate:    []string{"10.0.0.0/8", "fd00::/8"},
		ApprovalTimeout: Duration(90 * time.Minute),
	}
	want.Terminal.User = "alice"
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if got, want := got.ToolsDir(), "/opt/tools"; got != want {
		t.Errorf("ToolsDir() = %q, want %q", got, want)
	}
	if got, want := got.LLM.RevealHeaders(), map[string]string{"HTTP-Referer": "https://example.com/talon"}; !cmp.Equal(got, want) {
		t.Errorf("RevealHeaders() = %v, want %v", got, want)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	for name, content := range map[string]string{
		"empty":         "",
		"comments only": "# nothing here\n",
		"null document": "---\n",
		"empty section": "llm:\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := loadFile(t, content, map[string]string{"OPENAI_API_KEY": "ignored with a file"})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExpansionCannotInjectYAML checks that expanded values stay the string
// they were, whatever they contain.
func TestExpansionCannotInjectYAML(t *testing.T) {
	tests := []struct {
		name, value string
	}{
		{"yaml mapping", "x\nagent:\n  max_steps: 100"},
		{"flow syntax", "a, b: [c], {d: e}"},
		{"looks like a number", "12345"},
		{"looks like a bool", "true"},
		{"looks like null", "null"},
		{"quotes and comment", `"q" 'r' # s`},
		{"dollar braces", "${OTHER}"},
		{"leading space", "  indented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadFile(t, "agent:\n  system_prompt: ${V}\nterminal:\n  user: ${U}\n",
				map[string]string{"V": tt.value, "U": "bob", "OTHER": "expanded twice"})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got.Agent.SystemPrompt != tt.value {
				t.Errorf("system_prompt = %q, want %q", got.Agent.SystemPrompt, tt.value)
			}
			if got.Agent.MaxSteps != 8 {
				t.Errorf("max_steps = %d, want the default 8", got.Agent.MaxSteps)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		vars map[string]string
		want []string
	}{
		{
			name: "unset variable",
			file: "llm:\n  api_key: ${OPENAI_API_KEY}\n",
			want: []string{"llm.api_key: environment variable OPENAI_API_KEY is not set (line 2)"},
		},
		{
			name: "several unset variables in one value",
			file: "agent:\n  system_prompt: ${A} and ${B}\n",
			vars: map[string]string{},
			want: []string{
				"agent.system_prompt: environment variable A is not set (line 2)",
				"agent.system_prompt: environment variable B is not set (line 2)",
			},
		},
		{
			name: "lone dollar",
			file: "agent:\n  system_prompt: costs $5 or $6\n",
			want: []string{`agent.system_prompt: "$" must start "${NAME}", or be doubled ("$$") for a literal "$" (line 2)`},
		},
		{
			name: "unterminated reference",
			file: "terminal:\n  user: ${USER\n",
			want: []string{`terminal.user: unterminated "${" (write "$$" for a literal "$") (line 2)`},
		},
		{
			name: "invalid variable name is not echoed",
			file: "llm:\n  api_key: ${sk-secret-value}\n",
			want: []string{`llm.api_key: invalid environment variable name in "${...}" (want letters, digits and _) (line 2)`},
		},
		{
			name: "unknown nested key",
			file: "llm:\n  provider: openai\n  modle: gpt\n",
			want: []string{"llm.modle: unknown key (line 3)"},
		},
		{
			name: "unknown top-level key",
			file: "data_dir: x\nmatrix:\n  token: y\n",
			want: []string{"matrix: unknown key (line 2)"},
		},
		{
			name: "duplicate key",
			file: "log:\n  level: info\n  level: debug\n",
			want: []string{"log.level: duplicate key (first at line 2) (line 3)"},
		},
		{
			name: "bad duration",
			file: "agent:\n  turn_timeout: 5 minutes\n",
			want: []string{`agent.turn_timeout: invalid duration "5 minutes" (line 2)`},
		},
		{
			name: "duration without unit",
			file: "llm:\n  timeout: 30\n",
			want: []string{`llm.timeout: invalid duration "30" (line 2)`},
		},
		{
			name: "duration from the environment is not echoed",
			file: "llm:\n  timeout: ${T}\n",
			vars: map[string]string{"T": "soon"},
			want: []string{"llm.timeout: invalid duration (line 2)"},
		},
		{
			name: "wrong type",
			file: "agent:\n  max_steps: many\n",
			want: []string{`agent.max_steps: expected an integer, got "many" (line 2)`},
		},
		{
			name: "wrong shape",
			file: "log: verbose\nsandbox:\n  allow_private: 10.0.0.0/8\nllm:\n  model: [a, b]\n",
			want: []string{
				"log: expected a mapping, got a single value (line 1)",
				"sandbox.allow_private: expected a list, got a single value (line 3)",
				"llm.model: expected a single value, got a list (line 5)",
			},
		},
		{
			name: "aliases refused",
			file: "log:\n  level: &l info\n  format: *l\n",
			want: []string{"log.format: YAML aliases are not supported (line 3)"},
		},
		{
			name: "out of bounds from the environment",
			file: "agent:\n  max_steps: ${STEPS}\n",
			vars: map[string]string{"STEPS": "500"},
			want: []string{"agent.max_steps: must be between 1 and 100, got 500 (line 2)"},
		},
		{
			name: "invalid value from the environment is not echoed",
			file: "log:\n  level: ${OPENAI_API_KEY}\nsandbox:\n  allow_private: [\"${NET}\"]\n",
			vars: map[string]string{"OPENAI_API_KEY": "sk-secret-value", "NET": "soon"},
			want: []string{
				"log.level: must be one of debug, info, warn, error, got a value from the environment (line 2)",
				"sandbox.allow_private[0]: invalid CIDR prefix a value from the environment (want e.g. 10.0.0.0/8) (line 4)",
			},
		},
		{
			name: "lifecycle keys out of bounds",
			file: "agent:\n  tool_parallelism: 0\n  delivery_attempts: 101\n  shutdown_grace: 0s\n",
			want: []string{
				"agent.tool_parallelism: must be between 1 and 64, got 0 (line 2)",
				"agent.delivery_attempts: must be between 1 and 100, got 101 (line 3)",
				"agent.shutdown_grace: must be between 1s and 30m, got 0s (line 4)",
			},
		},
		{
			name: "egress trusted hosts",
			file: "egress:\n  trusted_hosts: [api.github.com, \"*.corp.example\", \"*\", \"https://x.example\", \"exämple.com\"]\n  tainted_url_bytes: 9000\n",
			want: []string{
				`egress.trusted_hosts[2]: "*" is not a host name or *.suffix (ASCII, the xn-- form for other scripts, no port or scheme) (line 2)`,
				`egress.trusted_hosts[3]: "https://x.example" is not a host name or *.suffix (ASCII, the xn-- form for other scripts, no port or scheme) (line 2)`,
				`egress.trusted_hosts[4]: "exämple.com" is not a host name or *.suffix (ASCII, the xn-- form for other scripts, no port or scheme) (line 2)`,
				"egress.tainted_url_bytes: must be between 0 and 8192, got 9000 (line 3)",
			},
		},
		{
			name: "anthropic without key",
			file: "llm:\n  provider: anthropic\n",
			want: []string{"llm.api_key: the anthropic provider needs an API key (set ANTHROPIC_API_KEY or llm.api_key)"},
		},
		{
			name: "openai without key",
			file: "llm:\n  base_url: https://api.openai.com/v1\n",
			want: []string{"llm.api_key: api.openai.com needs an API key (set OPENAI_API_KEY or llm.api_key)"},
		},
		{
			name: "openrouter without key",
			file: "llm:\n  base_url: https://OpenRouter.ai/api/v1\n  api_key: \"\"\n",
			want: []string{"llm.api_key: openrouter.ai needs an API key (set OPENAI_API_KEY or llm.api_key) (line 3)"},
		},
		{
			name: "credentials in base url are not echoed",
			file: "llm:\n  base_url: https://user:hunter2@example.com/v1\n",
			want: []string{"llm.base_url: must not contain credentials; use llm.api_key or llm.headers (line 2)"},
		},
		{
			name: "more than one document",
			file: "log: {level: info}\n---\nlog: {level: debug}\n",
		},
		{
			name: "syntax error",
			file: "llm:\n  model: [unclosed\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadFile(t, tt.file, tt.vars)
			if err == nil {
				t.Fatalf("Load = %+v, want an error", c)
			}
			if c != nil {
				t.Errorf("Load returned a Config with an error")
			}
			if diff := cmp.Diff(tt.want, problems(err)); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
			for _, secret := range []string{"hunter2", "sk-secret-value", "soon"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals %q", err, secret)
				}
			}
		})
	}
}

// TestLoadReportsEveryProblem checks that decoding and validation problems
// anywhere in the file are reported together.
func TestLoadReportsEveryProblem(t *testing.T) {
	const file = `data_dir: ""
log:
  level: loud
  format: xml
http:
  listen: localhost
llm:
  provider: gemini
  base_url: not a url
  headers:
    "Bad Header": x
  timeout: 1h
  max_retries: -1
  max_tokens: 0
  modle: typo
agent:
  max_steps: 0
  turn_timeout: forever
  history_messages: 5000
  history_token_budget: 10
  max_concurrent_turns: 4
  max_turns_per_user: 5
  rate_per_minute: 10001
sandbox:
  pool_size: 65
  max_memory_mib: 8
  pool_idle: 0s
  allow_private: [10.0.0.0, 10.0.0.1/8, 192.168.0.0/16]
  approval_timeout: 1s
terminal:
  user: "bad user"
extra: 1
`
	_, err := loadFile(t, file, nil)
	want := []string{
		"llm.modle: unknown key (line 15)",
		`agent.turn_timeout: invalid duration "forever" (line 18)`,
		"extra: unknown key (line 32)",
		"data_dir: must not be empty (line 1)",
		`log.level: must be one of debug, info, warn, error, got "loud" (line 3)`,
		`log.format: must be one of auto, json, console, got "xml" (line 4)`,
		`http.listen: must be host:port (e.g. 127.0.0.1:8080), or "" to disable (line 6)`,
		`llm.provider: must be one of openai, anthropic, got "gemini" (line 8)`,
		"llm.base_url: must be an absolute http or https URL (line 9)",
		"llm.headers.Bad Header: invalid header name (line 11)",
		"llm.timeout: must be between 1s and 30m, got 1h (line 12)",
		"llm.max_retries: must be between 0 and 10, got -1 (line 13)",
		"llm.max_tokens: must be between 1 and 1000000, got 0 (line 14)",
		"agent.max_steps: must be between 1 and 100, got 0 (line 17)",
		"agent.history_messages: must be between 1 and 1000, got 5000 (line 19)",
		"agent.history_token_budget: must be between 1000 and 1000000, got 10 (line 20)",
		"agent.max_turns_per_user: must not exceed agent.max_concurrent_turns (4) (line 22)",
		"agent.rate_per_minute: must be between 0 and 10000, got 10001 (line 23)",
		"sandbox.pool_size: must be between 0 and 64, got 65 (line 25)",
		"sandbox.max_memory_mib: must be between 16 and 65536, got 8 (line 26)",
		"sandbox.pool_idle: must be between 1s and 24h, got 0s (line 27)",
		`sandbox.allow_private[0]: invalid CIDR prefix "10.0.0.0" (want e.g. 10.0.0.0/8) (line 28)`,
		`sandbox.allow_private[1]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8? (line 28)`,
		"sandbox.approval_timeout: must be between 10s and 24h, got 1s (line 29)",
		"terminal.user: must be 1 to 64 letters, digits or . _ @ - (line 31)",
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}
}

func TestLoadFilesAndVisionBounds(t *testing.T) {
	const file = `llm:
  vision: maybe
files:
  max_bytes: 10
  max_files: 0
  text_tokens: 5
  timeout: 0s
  retention: 1m
`
	_, err := loadFile(t, file, nil)
	want := []string{
		`llm.vision: must be one of auto, true, false, got "maybe" (line 2)`,
		"files.max_bytes: must be between 1024 and 536870912 (512 MiB), got 10 (line 4)",
		"files.max_files: must be between 1 and 100, got 0 (line 5)",
		"files.text_tokens: must be between 100 and 1000000, got 5 (line 6)",
		"files.timeout: must be between 1s and 30m, got 0s (line 7)",
		"files.retention: must be between 1h and 87600h, got 1m (line 8)",
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load("/nonexistent/talon.yaml", env(nil)); err == nil {
		t.Fatal("Load(missing file) succeeded")
	}
}

func TestExpand(t *testing.T) {
	vars := env(map[string]string{"A": "1", "B_2": "two", "D": "$X"})
	tests := []struct {
		in, want string
		used     bool
	}{
		{"plain", "plain", false},
		{"$$", "$", false},
		{"$${A}", "${A}", false},
		{"${A}${B_2}", "1two", true},
		{"x-${A}-y", "x-1-y", true},
		{"${D}", "$X", true}, // values are not expanded again
		{"", "", false},
	}
	for _, tt := range tests {
		got, used, errs := expand(tt.in, vars)
		if errs != nil || got != tt.want || used != tt.used {
			t.Errorf("expand(%q) = %q, %v, %v; want %q, %v, nil", tt.in, got, used, errs, tt.want, tt.used)
		}
	}
}

// A reference stands unquoted in a flow collection, as the README and the
// issue write it (store: {driver: postgres, url: ${DATABASE_URL}}), where
// YAML alone ends a plain value at the braces: the file is read as meant,
// a number from the environment is a number, "$$" stays a literal "$",
// and an unset variable is named with its key and line as anywhere else.
func TestLoadReferencesInFlowCollections(t *testing.T) {
	const file = `store: {driver: postgres, url: ${DATABASE_URL}}
nats: {url: ${NATS_URL}, partitions: ${PARTITIONS}, prefix: h${DEPLOYMENT}}
sandbox: {allow_private: [${NET}, "10.1.0.0/16"]}
agent: {system_prompt: "costs $$5 ${GREETING}"}
`
	vars := map[string]string{
		"DATABASE_URL": "postgres://talon@db:5432/talon?sslmode=verify-full",
		"NATS_URL":     "nats://nats:4222",
		"PARTITIONS":   "16",
		"DEPLOYMENT":   "blue",
		"NET":          "10.0.0.0/8",
		"GREETING":     "{hello}",
	}
	got, err := loadFile(t, file, vars)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Store.Driver != StorePostgres || got.Store.URL.Reveal() != vars["DATABASE_URL"] {
		t.Errorf("store: %q %q", got.Store.Driver, got.Store.URL.Reveal())
	}
	if got.NATS.URL.Reveal() != vars["NATS_URL"] || got.NATS.Partitions != 16 || got.NATS.Prefix != "hblue" {
		t.Errorf("nats: %+v", got.NATS)
	}
	if diff := cmp.Diff([]string{"10.0.0.0/8", "10.1.0.0/16"}, got.Sandbox.AllowPrivate); diff != "" {
		t.Errorf("sandbox.allow_private (-want +got):\n%s", diff)
	}
	if got.Agent.SystemPrompt != "costs $5 {hello}" {
		t.Errorf("agent.system_prompt: %q", got.Agent.SystemPrompt)
	}

	delete(vars, "NATS_URL")
	_, err = loadFile(t, file, vars)
	if diff := cmp.Diff([]string{"nats.url: environment variable NATS_URL is not set (line 2)"}, problems(err)); diff != "" {
		t.Errorf("unset variable in a flow mapping (-want +got):\n%s", diff)
	}

	// What is not a reference still fails to parse, as before.
	if _, err := loadFile(t, "store: {driver: postgres, url: ${1}}\n", vars); err == nil || !strings.Contains(err.Error(), "parse:") {
		t.Errorf("a malformed reference in a flow mapping: %v", err)
	}
}
