package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

func TestLoadDefaults(t *testing.T) {
	got, err := Load("", env(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		DataDir: "./talon-data",
		Store:   Store{Driver: "sqlite"},
		Log:     Log{Level: "info", Format: "auto"},
		HTTP:    HTTP{Listen: "127.0.0.1:8080", TrustedProxies: []string{}},
		LLM: LLM{
			Provider: "openai", Timeout: Duration(120 * time.Second), MaxRetries: 3, MaxTokens: 4096, Vision: "auto",
			Prices: map[string]Price{},
		},
		Files: Files{MaxBytes: 20 << 20, MaxFiles: 10, TextTokens: 6000, Timeout: Duration(time.Minute), Retention: Duration(720 * time.Hour)},
		Agent: Agent{
			MaxSteps: 8, TurnTimeout: Duration(5 * time.Minute), HistoryMessages: 40,
			HistoryTokenBudget: 12000, MaxConcurrentTurns: 64, MaxTurnsPerUser: 2, RatePerMinute: 20,
			ToolParallelism: 4, DeliveryAttempts: 5, ShutdownGrace: Duration(10 * time.Second),
		},
		Context:  Context{ThreadMessages: 100, ThreadTokens: 8000},
		Routines: Routines{Enabled: true, MaxPerUser: 20, MinInterval: Duration(5 * time.Minute), CatchUp: Duration(time.Hour), MaxFailures: 3},
		Sandbox:  Sandbox{PoolSize: 2, MaxMemoryMiB: 256, PoolIdle: Duration(5 * time.Minute), Warm: true, ApprovalTimeout: Duration(10 * time.Minute)},
		Egress:   Egress{TaintedURLBytes: 256},
		Terminal: Terminal{User: "local"},
		Slack: Slack{
			Mode: "socket", APIURL: "https://slack.com/api/", FollowThreads: true, MaxMessageChars: 3900,
			EventsPath: "/slack/events",
		},
		Discord: Discord{
			APIURL: "https://discord.com", AllowDMs: true, FollowThreads: true, Commands: true, MaxMessageChars: 1900,
			TypingInterval: Duration(8 * time.Second), BackfillWindow: Duration(time.Hour), BackfillLimit: 50, Threads: true, StreamInterval: Duration(1500 * time.Millisecond),
			Shards: 1,
		},
		Console: Console{Admins: []string{}, SessionTTL: Duration(12 * time.Hour)},
		MCP:     MCP{IdleTimeout: Duration(10 * time.Minute), MaxSessions: 256},
		Memory:  Memory{Enabled: true, MaxEntries: 1000, ChannelWriters: map[string][]string{}},
		NATS:    NATS{Partitions: 32, LeaseTTL: Duration(10 * time.Second), Prefix: "talon"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load(\"\") mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate(defaults) = %v", err)
	}
	for name, pair := range map[string][2]string{
		"EffectiveBaseURL": {got.LLM.EffectiveBaseURL(), "http://127.0.0.1:11434/v1"},
		"EffectiveModel":   {got.LLM.EffectiveModel(), "llama3.2"},
		"DBPath":           {got.DBPath(), filepath.Join("talon-data", "talon.db")},
		"ToolsDir":         {got.ToolsDir(), filepath.Join("talon-data", "tools")},
		"CacheDir":         {got.CacheDir(), filepath.Join("talon-data", "cache")},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s = %q, want %q", name, pair[0], pair[1])
		}
	}
}

func TestLoadEnvironment(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want func(*Config)
	}{
		{
			name: "openai key alone targets OpenAI",
			vars: map[string]string{"OPENAI_API_KEY": "sk-1"},
			want: func(c *Config) { c.LLM.APIKey = "sk-1"; c.LLM.BaseURL = "https://api.openai.com/v1" },
		},
		{
			name: "openai base url alone",
			vars: map[string]string{"OPENAI_BASE_URL": "http://gpu:8000/v1"},
			want: func(c *Config) { c.LLM.BaseURL = "http://gpu:8000/v1" },
		},
		{
			name: "openai key and base url",
			vars: map[string]string{"OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "https://openrouter.ai/api/v1"},
			want: func(c *Config) { c.LLM.APIKey = "sk-1"; c.LLM.BaseURL = "https://openrouter.ai/api/v1" },
		},
		{
			name: "anthropic key",
			vars: map[string]string{"ANTHROPIC_API_KEY": "sk-ant"},
			want: func(c *Config) { c.LLM.Provider = "anthropic"; c.LLM.APIKey = "sk-ant" },
		},
		{
			name: "openai key wins over anthropic key",
			vars: map[string]string{"ANTHROPIC_API_KEY": "sk-ant", "OPENAI_API_KEY": "sk-1"},
			want: func(c *Config) { c.LLM.APIKey = "sk-1"; c.LLM.BaseURL = "https://api.openai.com/v1" },
		},
		{
			name: "openai base url wins over anthropic key",
			vars: map[string]string{"ANTHROPIC_API_KEY": "sk-ant", "OPENAI_BASE_URL": "http://localhost:1234/v1"},
			want: func(c *Config) { c.LLM.BaseURL = "http://localhost:1234/v1" },
		},
		{
			name: "model",
			vars: map[string]string{"TALON_MODEL": "qwen3"},
			want: func(c *Config) { c.LLM.Model = "qwen3" },
		},
		{
			name: "data dir",
			vars: map[string]string{"TALON_DATA_DIR": "/var/lib/talon"},
			want: func(c *Config) { c.DataDir = "/var/lib/talon" },
		},
		{
			name: "unrelated variables are ignored",
			vars: map[string]string{"TALON_CONFIG": "x.yaml", "HOME": "/root"},
			want: func(*Config) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load("", env(tt.vars))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadEnvironmentInvalid(t *testing.T) {
	_, err := Load("", env(map[string]string{"OPENAI_BASE_URL": "ftp://x", "TALON_DATA_DIR": " "}))
	want := []string{
		"data_dir: must not be empty ($TALON_DATA_DIR)",
		"llm.base_url: must be an absolute http or https URL ($OPENAI_BASE_URL)",
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}
}

func TestPath(t *testing.T) {
	tests := []struct {
		name, flag, envValue, want string
	}{
		{name: "flag wins", flag: "a.yaml", envValue: "b.yaml", want: "a.yaml"},
		{name: "environment", envValue: "b.yaml", want: "b.yaml"},
		{name: "neither", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Path(tt.flag, env(map[string]string{"TALON_CONFIG": tt.envValue}))
			if got != tt.want {
				t.Errorf("Path(%q) = %q, want %q", tt.flag, got, tt.want)
			}
		})
	}
}

func TestLLMEffective(t *testing.T) {
	tests := []struct {
		name               string
		llm                LLM
		wantURL, wantModel string
	}{
		{"openai default", LLM{Provider: "openai"}, "http://127.0.0.1:11434/v1", "llama3.2"},
		{"openai default url with slash", LLM{Provider: "openai", BaseURL: "http://127.0.0.1:11434/v1/"}, "http://127.0.0.1:11434/v1/", "llama3.2"},
		{"openai elsewhere", LLM{Provider: "openai", BaseURL: "https://api.openai.com/v1"}, "https://api.openai.com/v1", "gpt-4o-mini"},
		{"anthropic default", LLM{Provider: "anthropic"}, "https://api.anthropic.com", "claude-sonnet-4-5"},
		{"explicit", LLM{Provider: "anthropic", BaseURL: "https://proxy", Model: "m"}, "https://proxy", "m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.llm.EffectiveBaseURL(); got != tt.wantURL {
				t.Errorf("EffectiveBaseURL() = %q, want %q", got, tt.wantURL)
			}
			if got := tt.llm.EffectiveModel(); got != tt.wantModel {
				t.Errorf("EffectiveModel() = %q, want %q", got, tt.wantModel)
			}
		})
	}
}

func TestToolsDirOverride(t *testing.T) {
	c := Default()
	c.Sandbox.ToolsDir = "/opt/tools"
	if got := c.ToolsDir(); got != "/opt/tools" {
		t.Errorf("ToolsDir() = %q, want /opt/tools", got)
	}
}

const examplePath = "../../../config.example.yaml"

func TestExampleLoadsToDefaults(t *testing.T) {
	got, err := Load(examplePath, env(nil))
	if err != nil {
		t.Fatalf("Load(example): %v", err)
	}
	want, err := Load("", env(nil))
	if err != nil {
		t.Fatalf("Load(\"\"): %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("example differs from the defaults (-defaults +example):\n%s", diff)
	}
}

// TestExampleDocumentsEveryKey checks that every key of Config appears in
// the example file, and nothing else.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var inFile []string
	var collect func(prefix string, n *yaml.Node)
	collect = func(prefix string, n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := joinKey(prefix, n.Content[i].Value)
			inFile = append(inFile, key)
			if v := n.Content[i+1]; v.Kind == yaml.MappingNode && key != "llm.headers" {
				collect(key, v)
			}
		}
	}
	collect("", doc.Content[0])

	var inType []string
	var fields func(prefix string, t reflect.Type)
	fields = func(prefix string, t reflect.Type) {
		for name, i := range yamlFields(t) {
			key := joinKey(prefix, name)
			inType = append(inType, key)
			if f := t.Field(i).Type; f.Kind() == reflect.Struct {
				fields(key, f)
			}
		}
	}
	fields("", reflect.TypeFor[Config]())

	slices.Sort(inFile)
	slices.Sort(inType)
	if diff := cmp.Diff(inType, inFile); diff != "" {
		t.Errorf("example keys mismatch (-Config +example):\n%s", diff)
	}
	if strings.Contains(string(data), "\t") {
		t.Error("example contains a tab")
	}
}
