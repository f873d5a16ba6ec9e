package config

import (
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/talonhq/talon/mcp"
)

// Providers accepted in llm.provider.
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
)

// Provider defaults used when llm.base_url or llm.model is empty.
const (
	// DefaultOpenAIBaseURL is Ollama's OpenAI-compatible endpoint.
	DefaultOpenAIBaseURL    = "http://127.0.0.1:11434/v1"
	DefaultAnthropicBaseURL = "https://api.anthropic.com"
	// OpenAIBaseURL is the base URL set when OPENAI_API_KEY is in the
	// environment without OPENAI_BASE_URL and no file is used.
	OpenAIBaseURL = "https://api.openai.com/v1"
	// DefaultOllamaModel is the model for the openai provider at
	// DefaultOpenAIBaseURL.
	DefaultOllamaModel = "llama3.2"
	// DefaultOpenAIModel is the model for the openai provider at any other
	// base URL.
	DefaultOpenAIModel    = "gpt-4o-mini"
	DefaultAnthropicModel = "claude-sonnet-4-5"
)

// Config is Talon's whole configuration. Every field is documented, with its
// default, in config.example.yaml. A Config is safe to print and to log:
// credentials are Secrets.
type Config struct {
	// DataDir holds the database, the key file, the compilation cache and the
	// tools. A relative path is relative to the working directory.
	DataDir  string   `yaml:"data_dir" json:"data_dir"`
	Store    Store    `yaml:"store" json:"store"`
	Log      Log      `yaml:"log" json:"log"`
	HTTP     HTTP     `yaml:"http" json:"http"`
	LLM      LLM      `yaml:"llm" json:"llm"`
	Agent    Agent    `yaml:"agent" json:"agent"`
	Context  Context  `yaml:"context" json:"context"`
	Files    Files    `yaml:"files" json:"files"`
	Sandbox  Sandbox  `yaml:"sandbox" json:"sandbox"`
	Egress   Egress   `yaml:"egress" json:"egress"`
	Terminal Terminal `yaml:"terminal" json:"terminal"`
	Slack    Slack    `yaml:"slack" json:"slack"`
	Discord  Discord  `yaml:"discord" json:"discord"`
	Console  Console  `yaml:"console" json:"console"`
	Budgets  Budgets  `yaml:"budgets" json:"budgets"`
	MCP      MCP      `yaml:"mcp" json:"mcp"`
	Memory   Memory   `yaml:"memory" json:"memory"`
	Routines Routines `yaml:"routines" json:"routines"`
	NATS     NATS     `yaml:"nats" json:"nats"`
}

// Memory configures what the model remembers for people (package memory):
// a memory per user and a shared memory per channel.
type Memory struct {
	// Enabled offers the memory tools to the model and /memory to users.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// MaxEntries bounds the entries of one user's memory and of one
	// channel's.
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
	// ChannelWriters maps a channel ("slack:C123", "discord:456") to the
	// principals who may change its shared memory besides the admins
	// (console.admins, slack.admins, discord.admins); "*" lets every
	// member. Every member may read it.
	ChannelWriters map[string][]string `yaml:"channel_writers" json:"channel_writers"`
}

// The store drivers.
const (
	StoreSQLite   = "sqlite"
	StorePostgres = "postgres"
)

// Store selects the database. SQLite (the default) is the file
// <data_dir>/talon.db; PostgreSQL is a server that several replicas of
// Talon can share.
type Store struct {
	// Driver is sqlite or postgres.
	Driver string `yaml:"driver" json:"driver"`
	// URL is PostgreSQL's connection URL (postgres://user@host:5432/db?…),
	// usually ${DATABASE_URL}; it may hold a password, so it is a Secret.
	// Empty for sqlite.
	URL Secret `yaml:"url" json:"url"`
}

// Routines bound the scheduled requests and reminders people make.
type Routines struct {
	// Enabled offers the routine tools and commands and runs the
	// scheduler.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// MaxPerUser bounds the routines (not yet done) of one person.
	MaxPerUser int `yaml:"max_per_user" json:"max_per_user"`
	// MinInterval is the least time between two runs of a routine.
	MinInterval Duration `yaml:"min_interval" json:"min_interval"`
	// CatchUp: a run missed while the gateway was down runs at start-up
	// if it is younger, else it is recorded missed.
	CatchUp Duration `yaml:"catch_up" json:"catch_up"`
	// MaxFailures is how many runs may fail in a row before the routine
	// pauses and its owner is told.
	MaxFailures int `yaml:"max_failures" json:"max_failures"`
	// DefaultTimezone is the IANA zone of people who set none and whose
	// platform has none ("" means UTC).
	DefaultTimezone string `yaml:"default_timezone" json:"default_timezone"`
}

// Budgets bound the tokens (input and output, as the providers report them)
// that turns may use; 0 means no bound. Days and months are UTC; the
// principals in console.admins are exempt.
type Budgets struct {
	UserDailyTokens        int64 `yaml:"user_daily_tokens" json:"user_daily_tokens"`
	UserMonthlyTokens      int64 `yaml:"user_monthly_tokens" json:"user_monthly_tokens"`
	WorkspaceMonthlyTokens int64 `yaml:"workspace_monthly_tokens" json:"workspace_monthly_tokens"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level" json:"level"`
	// Format is auto (console on a terminal, JSON otherwise), json or console.
	Format string `yaml:"format" json:"format"`
}

// HTTP configures the operational HTTP server (health, readiness, metrics).
type HTTP struct {
	// Listen is a host:port; "" disables the server.
	Listen string `yaml:"listen" json:"listen"`
	// PublicURL is the address people reach the listener at behind a proxy
	// ("" = not published); the console's cookies are Secure when it is
	// https.
	PublicURL string `yaml:"public_url" json:"public_url"`
	// TrustedProxies are the addresses (IP or CIDR) of the reverse proxies
	// in front of the listener, whose X-Forwarded-For names the client for
	// the console's sign-in limit and audit log.
	TrustedProxies []string `yaml:"trusted_proxies" json:"trusted_proxies"`
}

// TrustedPrefixes returns TrustedProxies as prefixes (an IP is a /32 or
// /128); Load has checked them.
func (h HTTP) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(h.TrustedProxies))
	for _, s := range h.TrustedProxies {
		if p, ok := parsePrefix(s); ok {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), true
	}
	return netip.Prefix{}, false
}

// Console configures the operator's web console (package console).
type Console struct {
	// Enabled serves the console under /console/ on http.listen. The admin
	// token is read from TALON_CONSOLE_TOKEN, never from the file.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Admins are principals (platform:workspace:user) exempt from budgets.
	Admins []string `yaml:"admins" json:"admins"`
	// SessionTTL is how long a console sign-in lasts.
	SessionTTL Duration `yaml:"session_ttl" json:"session_ttl"`
	// SlackOIDC, when its client_id is set, offers "Sign in with Slack" to
	// the Slack principals in Admins.
	SlackOIDC SlackOIDC `yaml:"slack_oidc" json:"slack_oidc"`
}

// SlackOIDC is a Slack app's credentials for "Sign in with Slack" (OpenID
// Connect); the app's redirect URL is http.public_url + /console/oidc/callback.
type SlackOIDC struct {
	ClientID     string `yaml:"client_id" json:"client_id"`
	ClientSecret Secret `yaml:"client_secret" json:"client_secret"`
}

// Price is what a model costs, in US dollars per million tokens.
type Price struct {
	Input  float64 `yaml:"input" json:"input"`
	Output float64 `yaml:"output" json:"output"`
}

// LLM configures the model provider.
type LLM struct {
	// Provider is openai (any OpenAI-compatible endpoint) or anthropic.
	Provider string `yaml:"provider" json:"provider"`
	// BaseURL is the endpoint; "" means the provider's default, see
	// EffectiveBaseURL.
	BaseURL string `yaml:"base_url" json:"base_url"`
	// APIKey authenticates to the provider; it may be empty for local
	// endpoints.
	APIKey Secret `yaml:"api_key" json:"api_key"`
	// Model is the model name; "" means the provider's default, see
	// EffectiveModel.
	Model string `yaml:"model" json:"model"`
	// Headers are extra HTTP headers sent on every request. Their values are
	// Secrets because they may carry credentials.
	Headers map[string]Secret `yaml:"headers" json:"headers"`
	// Timeout bounds each attempt.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// MaxRetries is how many times a failed call (429, 5xx, connection
	// error) is retried; 0 disables retries.
	MaxRetries int `yaml:"max_retries" json:"max_retries"`
	// MaxTokens caps each reply.
	MaxTokens int `yaml:"max_tokens" json:"max_tokens"`
	// Vision says whether the model is shown images: auto (until the
	// provider refuses one), true or false.
	Vision string `yaml:"vision" json:"vision"`
	// Prices per model name estimate the cost of usage in the console.
	Prices map[string]Price `yaml:"prices" json:"prices"`
}

// Files configures the files people attach to messages.
type Files struct {
	// MaxBytes bounds one file, and all the files of one message, in
	// bytes; checked before download and while downloading.
	MaxBytes int64 `yaml:"max_bytes" json:"max_bytes"`
	// MaxFiles is how many files of one message are read.
	MaxFiles int `yaml:"max_files" json:"max_files"`
	// TextTokens is the estimated tokens of file text one message adds.
	TextTokens int `yaml:"text_tokens" json:"text_tokens"`
	// Timeout bounds the download of one file.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// Retention is how long a file no turn uses is kept under
	// <data_dir>/files.
	Retention Duration `yaml:"retention" json:"retention"`
}

// Agent configures turns.
type Agent struct {
	// SystemPrompt replaces the built-in prompt when not empty.
	SystemPrompt string `yaml:"system_prompt" json:"system_prompt"`
	// MaxSteps bounds the model calls of one turn (tool rounds plus the
	// final answer).
	MaxSteps int `yaml:"max_steps" json:"max_steps"`
	// TurnTimeout bounds a whole turn.
	TurnTimeout Duration `yaml:"turn_timeout" json:"turn_timeout"`
	// HistoryMessages is how many messages each model call carries,
	// besides the summaries of what does not fit.
	HistoryMessages int `yaml:"history_messages" json:"history_messages"`
	// HistoryTokenBudget is the estimated history size above which older
	// messages are summarised.
	HistoryTokenBudget int `yaml:"history_token_budget" json:"history_token_budget"`
	// MaxConcurrentTurns bounds the turns running at once across all sessions.
	MaxConcurrentTurns int `yaml:"max_concurrent_turns" json:"max_concurrent_turns"`
	// MaxTurnsPerUser bounds the concurrent turns of one user.
	MaxTurnsPerUser int `yaml:"max_turns_per_user" json:"max_turns_per_user"`
	// RatePerMinute is how many turns a user may start per minute; 0 means
	// unlimited.
	RatePerMinute int `yaml:"rate_per_minute" json:"rate_per_minute"`
	// ToolParallelism bounds the tool calls of one step that run at once.
	ToolParallelism int `yaml:"tool_parallelism" json:"tool_parallelism"`
	// DeliveryAttempts is how often a reply's delivery is tried before it
	// is given up.
	DeliveryAttempts int `yaml:"delivery_attempts" json:"delivery_attempts"`
	// ShutdownGrace is how long a stopping gateway lets running turns
	// finish before it interrupts them (they resume at the next start).
	ShutdownGrace Duration `yaml:"shutdown_grace" json:"shutdown_grace"`
}

// Context configures what a turn reads besides the user's message.
type Context struct {
	// ThreadMessages bounds the messages of the thread (Slack thread,
	// Discord thread, forum post or reply) read before a turn in it is
	// answered; the newest are kept. 0 reads none.
	ThreadMessages int `yaml:"thread_messages" json:"thread_messages"`
	// ThreadTokens bounds their estimated tokens; the newest are kept.
	ThreadTokens int `yaml:"thread_tokens" json:"thread_tokens"`
}

// Sandbox configures the WASM tool runtime.
type Sandbox struct {
	// ToolsDir is where tools are installed; "" means <data_dir>/tools.
	ToolsDir string `yaml:"tools_dir" json:"tools_dir"`
	// PoolSize is the number of pre-initialised instances kept per tool;
	// zero means none (every call instantiates its own).
	PoolSize int `yaml:"pool_size" json:"pool_size"`
	// MaxMemoryMiB bounds the memory of all tool instances together
	// (running and pooled); calls beyond it wait, in turn per user, within
	// their deadline.
	MaxMemoryMiB int `yaml:"max_memory_mib" json:"max_memory_mib"`
	// PoolIdle is how long a tool's pooled instances outlive its last
	// call.
	PoolIdle Duration `yaml:"pool_idle" json:"pool_idle"`
	// Warm loads every enabled tool in the background once the gateway
	// is ready (from the compilation cache after a restart), and makes one
	// pooled instance of each, so that their first calls wait for
	// neither; false leaves every tool unloaded until its first call (less
	// memory while idle, a slower first call).
	Warm bool `yaml:"warm" json:"warm"`
	// AllowPrivate lists CIDR prefixes tools may reach despite the SSRF
	// rules, such as 10.0.0.0/8. Validate checks that each one parses with
	// netip.ParsePrefix.
	AllowPrivate []string `yaml:"allow_private" json:"allow_private"`
	// ApprovalTimeout is how long an approval request waits for an answer
	// before it is denied.
	ApprovalTimeout Duration `yaml:"approval_timeout" json:"approval_timeout"`
}

// Egress configures what a turn that read untrusted content (a fetched
// page, another person's message, a file) may send out unasked, and which
// links in replies the platforms may unfurl.
type Egress struct {
	// TrustedHosts are hosts ("api.github.com") or "*.suffix" patterns
	// that such a turn may send a little data to without asking, whose
	// content does not taint a turn, and whose links in replies unfurl.
	TrustedHosts []string `yaml:"trusted_hosts" json:"trusted_hosts"`
	// TaintedURLBytes bounds the bytes of path and query such a turn may
	// send to a trusted host unasked; a request with a body always asks.
	TaintedURLBytes int `yaml:"tainted_url_bytes" json:"tainted_url_bytes"`
}

// Terminal configures the local terminal adapter.
type Terminal struct {
	// User is the terminal user's id; its principal is terminal::<user>.
	User string `yaml:"user" json:"user"`
}

// Default returns the built-in configuration, the one config.example.yaml
// spells out.
func Default() Config {
	return Config{
		DataDir: "./talon-data",
		Store:   Store{Driver: StoreSQLite},
		Log:     Log{Level: "info", Format: "auto"},
		Console: Console{Admins: []string{}, SessionTTL: Duration(12 * time.Hour)},
		MCP:     MCP{IdleTimeout: Duration(mcp.DefaultIdleTimeout), MaxSessions: mcp.DefaultMaxSessions},
		Memory:  Memory{Enabled: true, MaxEntries: 1000, ChannelWriters: map[string][]string{}},
		HTTP:    HTTP{Listen: "127.0.0.1:8080", TrustedProxies: []string{}},
		LLM: LLM{
			Provider:   ProviderOpenAI,
			Timeout:    Duration(120 * time.Second),
			MaxRetries: 3,
			MaxTokens:  4096,
			Vision:     "auto",
			Prices:     map[string]Price{},
		},
		Files: Files{
			MaxBytes:   20 << 20,
			MaxFiles:   10,
			TextTokens: 6000,
			Timeout:    Duration(60 * time.Second),
			Retention:  Duration(30 * 24 * time.Hour),
		},
		Agent: Agent{
			MaxSteps:           8,
			TurnTimeout:        Duration(5 * time.Minute),
			HistoryMessages:    40,
			HistoryTokenBudget: 12000,
			MaxConcurrentTurns: 64,
			MaxTurnsPerUser:    2,
			RatePerMinute:      20,
			ToolParallelism:    4,
			DeliveryAttempts:   5,
			ShutdownGrace:      Duration(10 * time.Second),
		},
		Context:  Context{ThreadMessages: 100, ThreadTokens: 8000},
		Routines: Routines{Enabled: true, MaxPerUser: 20, MinInterval: Duration(5 * time.Minute), CatchUp: Duration(time.Hour), MaxFailures: 3},
		Sandbox: Sandbox{
			PoolSize:        2,
			MaxMemoryMiB:    256,
			PoolIdle:        Duration(5 * time.Minute),
			Warm:            true,
			ApprovalTimeout: Duration(10 * time.Minute),
		},
		Egress:   Egress{TaintedURLBytes: 256},
		Terminal: Terminal{User: "local"},
		Slack:    defaultSlack(),
		Discord:  defaultDiscord(),
		NATS:     defaultNATS(),
	}
}

// Path returns the configuration file to load: flag (the --config value)
// when it is set, otherwise $TALON_CONFIG. "" means no file.
func Path(flag string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	return getenv("TALON_CONFIG")
}

// DBPath is the SQLite database: <data_dir>/talon.db.
func (c *Config) DBPath() string { return filepath.Join(c.DataDir, "talon.db") }

// ToolsDir is sandbox.tools_dir, or <data_dir>/tools when that is empty.
func (c *Config) ToolsDir() string {
	if c.Sandbox.ToolsDir != "" {
		return c.Sandbox.ToolsDir
	}
	return filepath.Join(c.DataDir, "tools")
}

// FilesDir is where attached files are kept: <data_dir>/files.
func (c *Config) FilesDir() string { return filepath.Join(c.DataDir, "files") }

// CacheDir is the compilation cache: <data_dir>/cache.
func (c *Config) CacheDir() string { return filepath.Join(c.DataDir, "cache") }

// EffectiveBaseURL is BaseURL, or the provider's default when it is empty:
// DefaultOpenAIBaseURL (Ollama) for openai, DefaultAnthropicBaseURL for
// anthropic.
func (l *LLM) EffectiveBaseURL() string {
	switch {
	case l.BaseURL != "":
		return l.BaseURL
	case l.Provider == ProviderAnthropic:
		return DefaultAnthropicBaseURL
	default:
		return DefaultOpenAIBaseURL
	}
}

// EffectiveModel is Model, or when it is empty: DefaultAnthropicModel for
// anthropic, DefaultOllamaModel for openai at DefaultOpenAIBaseURL, and
// DefaultOpenAIModel for openai at any other base URL.
func (l *LLM) EffectiveModel() string {
	switch {
	case l.Model != "":
		return l.Model
	case l.Provider == ProviderAnthropic:
		return DefaultAnthropicModel
	case strings.TrimSuffix(l.EffectiveBaseURL(), "/") == DefaultOpenAIBaseURL:
		return DefaultOllamaModel
	default:
		return DefaultOpenAIModel
	}
}

// RevealHeaders returns Headers with their values revealed, for the HTTP
// client that sends them. It returns nil when there are none.
func (l *LLM) RevealHeaders() map[string]string {
	if len(l.Headers) == 0 {
		return nil
	}
	h := make(map[string]string, len(l.Headers))
	for k, v := range l.Headers {
		h[k] = v.Reveal()
	}
	return h
}

// hostOf returns the lower-cased host name of a URL, or "".
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}
