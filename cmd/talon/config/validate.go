package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
)

// Bounds enforced by Validate.
const (
	maxModelLen        = 256
	maxSystemPromptLen = 100_000
	maxHeaders         = 64
	maxAllowPrivate    = 256
	maxTrustedHosts    = 1024
	maxUserLen         = 64
	maxConsoleAdmins   = 1000
	maxPrices          = 1000
)

// Validate reports every problem with c, each as a *KeyError naming its key,
// joined with errors.Join; nil means c is usable. Load already calls it.
func (c *Config) Validate() error { return errors.Join(c.validate(nil)...) }

// validate returns every problem with c. Values of the keys in fromEnv came
// from environment variables and are never quoted in a problem.
func (c *Config) validate(fromEnv map[string]bool) []error {
	v := validator{fromEnv: fromEnv}
	if strings.TrimSpace(c.DataDir) == "" {
		v.add("data_dir", "must not be empty")
	}
	c.Store.validate(&v)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "auto", "json", "console")
	if c.HTTP.Listen != "" && !validListen(c.HTTP.Listen) {
		v.add("http.listen", `must be host:port (e.g. 127.0.0.1:8080), or "" to disable`)
	}
	if c.HTTP.PublicURL != "" {
		if u, err := url.Parse(c.HTTP.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.add("http.public_url", `must be an http or https URL (e.g. https://talon.example.com), or ""`)
		}
	}
	if len(c.HTTP.TrustedProxies) > 100 {
		v.add("http.trusted_proxies", "at most 100 addresses or ranges")
	}
	for _, p := range c.HTTP.TrustedProxies {
		if _, ok := parsePrefix(p); !ok {
			v.add("http.trusted_proxies", fmt.Sprintf("%s is not an IP address or CIDR range (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/8)", v.quote("http.trusted_proxies", p)))
		}
	}
	c.Console.validate(&v, c.HTTP.Listen, c.HTTP.PublicURL)
	for _, b := range []struct {
		key string
		n   int64
	}{
		{"budgets.user_daily_tokens", c.Budgets.UserDailyTokens},
		{"budgets.user_monthly_tokens", c.Budgets.UserMonthlyTokens},
		{"budgets.workspace_monthly_tokens", c.Budgets.WorkspaceMonthlyTokens},
	} {
		if b.n < 0 || b.n > 1e15 {
			v.add(b.key, "must be between 0 (no budget) and 1000000000000000 tokens")
		}
	}
	c.LLM.validate(&v)
	c.Agent.validate(&v)
	v.intRange("context.thread_messages", c.Context.ThreadMessages, 0, 1000)
	v.intRange("context.thread_tokens", c.Context.ThreadTokens, 100, 200_000)
	c.Files.validate(&v)
	v.intRange("routines.max_per_user", c.Routines.MaxPerUser, 1, 10_000)
	v.duration("routines.min_interval", c.Routines.MinInterval, time.Minute, 7*24*time.Hour)
	v.duration("routines.catch_up", c.Routines.CatchUp, time.Minute, 7*24*time.Hour)
	v.intRange("routines.max_failures", c.Routines.MaxFailures, 1, 100)
	if tz := c.Routines.DefaultTimezone; tz != "" {
		if _, err := time.LoadLocation(tz); err != nil || strings.EqualFold(tz, "local") {
			v.add("routines.default_timezone", "must be an IANA time zone name such as Europe/Paris, or \"\" for UTC")
		}
	}
	c.Sandbox.validate(&v)
	c.Egress.validate(&v)
	c.NATS.validate(&v)
	if !validUser(c.Terminal.User) {
		v.add("terminal.user", fmt.Sprintf("must be 1 to %d letters, digits or . _ @ -", maxUserLen))
	}
	c.Slack.validate(&v, c.HTTP.Listen)
	c.Discord.validate(&v)
	c.MCP.validate(&v)
	c.Memory.validate(&v)
	if c.MCP.UsesOAuth() {
		// The provider sends each user's browser back to
		// public_url/oauth/callback, served on http.listen.
		if c.HTTP.PublicURL == "" {
			v.add("http.public_url", "is required by mcp.servers with auth: oauth: the address people's browsers reach Talon's http.listen at (e.g. https://talon.example.com); providers redirect to <public_url>/oauth/callback")
		}
		if c.HTTP.Listen == "" {
			v.add("http.listen", "is required by mcp.servers with auth: oauth: /oauth/start and /oauth/callback are served there")
		}
	}
	return v.errs
}

func (l *LLM) validate(v *validator) {
	validPrices(v, l.Prices)
	v.oneOf("llm.provider", l.Provider, ProviderOpenAI, ProviderAnthropic)
	if l.BaseURL != "" {
		// The value is never shown: it could carry credentials.
		u, err := url.Parse(l.BaseURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			v.add("llm.base_url", "must be an absolute http or https URL")
		case u.User != nil:
			v.add("llm.base_url", "must not contain credentials; use llm.api_key or llm.headers")
		}
	}
	if len(l.Model) > maxModelLen {
		v.add("llm.model", fmt.Sprintf("must be at most %d bytes", maxModelLen))
	}
	if len(l.Headers) > maxHeaders {
		v.add("llm.headers", fmt.Sprintf("at most %d headers", maxHeaders))
	}
	for _, name := range sortedKeys(l.Headers) {
		key := "llm.headers." + name
		if !validHeaderName(name) {
			v.add(key, "invalid header name")
		}
		if strings.ContainsAny(l.Headers[name].Reveal(), "\r\n\x00") {
			v.add(key, "value must not contain line breaks or NUL")
		}
	}
	v.duration("llm.timeout", l.Timeout, time.Second, 30*time.Minute)
	v.intRange("llm.max_retries", l.MaxRetries, 0, 10)
	v.intRange("llm.max_tokens", l.MaxTokens, 1, 1_000_000)
	v.oneOf("llm.vision", l.Vision, "auto", "true", "false")

	if l.APIKey != "" {
		return
	}
	switch host := hostOf(l.EffectiveBaseURL()); {
	case l.Provider == ProviderAnthropic:
		v.add("llm.api_key", "the anthropic provider needs an API key (set ANTHROPIC_API_KEY or llm.api_key)")
	case l.Provider == ProviderOpenAI && (host == "api.openai.com" || host == "openrouter.ai"):
		v.add("llm.api_key", host+" needs an API key (set OPENAI_API_KEY or llm.api_key)")
	}
}

func (a *Agent) validate(v *validator) {
	if len(a.SystemPrompt) > maxSystemPromptLen {
		v.add("agent.system_prompt", fmt.Sprintf("must be at most %d bytes", maxSystemPromptLen))
	}
	v.intRange("agent.max_steps", a.MaxSteps, 1, 100)
	v.duration("agent.turn_timeout", a.TurnTimeout, time.Second, time.Hour)
	v.intRange("agent.history_messages", a.HistoryMessages, 1, 1000)
	v.intRange("agent.history_token_budget", a.HistoryTokenBudget, 1000, 1_000_000)
	v.intRange("agent.max_concurrent_turns", a.MaxConcurrentTurns, 1, 100_000)
	if v.intRange("agent.max_turns_per_user", a.MaxTurnsPerUser, 1, 1000) &&
		a.MaxConcurrentTurns >= 1 && a.MaxTurnsPerUser > a.MaxConcurrentTurns {
		v.add("agent.max_turns_per_user", fmt.Sprintf("must not exceed agent.max_concurrent_turns (%d)", a.MaxConcurrentTurns))
	}
	v.intRange("agent.rate_per_minute", a.RatePerMinute, 0, 10_000)
	v.intRange("agent.tool_parallelism", a.ToolParallelism, 1, 64)
	v.intRange("agent.delivery_attempts", a.DeliveryAttempts, 1, 100)
	v.duration("agent.shutdown_grace", a.ShutdownGrace, time.Second, 30*time.Minute)
}

func (f *Files) validate(v *validator) {
	if f.MaxBytes < 1024 || f.MaxBytes > 512<<20 {
		v.add("files.max_bytes", fmt.Sprintf("must be between 1024 and %d (512 MiB), got %d", 512<<20, f.MaxBytes))
	}
	v.intRange("files.max_files", f.MaxFiles, 1, 100)
	v.intRange("files.text_tokens", f.TextTokens, 100, 1_000_000)
	v.duration("files.timeout", f.Timeout, time.Second, 30*time.Minute)
	v.duration("files.retention", f.Retention, time.Hour, 10*365*24*time.Hour)
}

func (s *Sandbox) validate(v *validator) {
	v.intRange("sandbox.pool_size", s.PoolSize, 0, 64)
	v.intRange("sandbox.max_memory_mib", s.MaxMemoryMiB, 16, 65536)
	v.duration("sandbox.pool_idle", s.PoolIdle, time.Second, 24*time.Hour)
	if len(s.AllowPrivate) > maxAllowPrivate {
		v.add("sandbox.allow_private", fmt.Sprintf("at most %d prefixes", maxAllowPrivate))
	}
	for i, raw := range s.AllowPrivate {
		key := "sandbox.allow_private[" + strconv.Itoa(i) + "]"
		p, err := netip.ParsePrefix(raw)
		switch {
		case err != nil:
			v.add(key, fmt.Sprintf("invalid CIDR prefix %s (want e.g. 10.0.0.0/8)", v.quote(key, raw)))
		case p != p.Masked():
			v.add(key, fmt.Sprintf("%s has host bits set; did you mean %s?", v.quote(key, raw), p.Masked()))
		}
	}
	v.duration("sandbox.approval_timeout", s.ApprovalTimeout, 10*time.Second, 24*time.Hour)
}

func (e *Egress) validate(v *validator) {
	if len(e.TrustedHosts) > maxTrustedHosts {
		v.add("egress.trusted_hosts", fmt.Sprintf("at most %d hosts", maxTrustedHosts))
	}
	for i, h := range e.TrustedHosts {
		key := "egress.trusted_hosts[" + strconv.Itoa(i) + "]"
		if _, err := agent.ParseTrustedHosts([]string{h}); err != nil || strings.TrimSpace(h) == "*" {
			v.add(key, fmt.Sprintf("%s is not a host name or *.suffix (ASCII, the xn-- form for other scripts, no port or scheme)", v.quote(key, h)))
		}
	}
	v.intRange("egress.tainted_url_bytes", e.TaintedURLBytes, 0, 8192)
}

// validator collects problems.
type validator struct {
	fromEnv map[string]bool
	errs    []error
}

// quote returns value quoted for a problem message, unless it came from the
// environment, where it could be a credential put in the wrong place.
func (v *validator) quote(key, value string) string {
	if v.fromEnv[key] {
		return "a value from the environment"
	}
	return strconv.Quote(value)
}

func (v *validator) add(key, problem string) {
	v.errs = append(v.errs, &KeyError{Key: key, Err: errors.New(problem)})
}

func (v *validator) oneOf(key, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		v.add(key, fmt.Sprintf("must be one of %s, got %s", strings.Join(allowed, ", "), v.quote(key, got)))
	}
}

// intRange reports whether got is within [lo, hi], adding a problem if not.
func (v *validator) intRange(key string, got, lo, hi int) bool {
	if got < lo || got > hi {
		v.add(key, fmt.Sprintf("must be between %d and %d, got %d", lo, hi, got))
		return false
	}
	return true
}

func (v *validator) duration(key string, got Duration, lo, hi time.Duration) {
	if got.Std() < lo || got.Std() > hi {
		v.add(key, fmt.Sprintf("must be between %s and %s, got %s", Duration(lo), Duration(hi), got))
	}
}

func validListen(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func validUser(s string) bool {
	if s == "" || len(s) > maxUserLen {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) && !strings.ContainsRune("._@-", r) {
			return false
		}
	}
	return true
}

// validHeaderName reports whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) && !strings.ContainsRune("!#$%&'*+-.^_`|~", r) {
			return false
		}
	}
	return true
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (c *Console) validate(v *validator, listen, publicURL string) {
	if o := c.SlackOIDC; o.ClientID != "" || o.ClientSecret != "" {
		if o.ClientID == "" {
			v.add("console.slack_oidc.client_id", "is required with client_secret: the Slack app's Client ID (Basic Information → App Credentials)")
		}
		if o.ClientSecret == "" {
			v.add("console.slack_oidc.client_secret", "is required with client_id: the Slack app's Client Secret, e.g. ${SLACK_CLIENT_SECRET}")
		}
		if publicURL == "" {
			v.add("console.slack_oidc", "needs http.public_url: Slack sends the browser back to <public_url>/console/oidc/callback")
		}
	}
	if c.Enabled && listen == "" {
		v.add("console.enabled", "needs http.listen: the console is served on it under /console/")
	}
	if len(c.Admins) > maxConsoleAdmins {
		v.add("console.admins", fmt.Sprintf("at most %d principals", maxConsoleAdmins))
	}
	for _, a := range c.Admins {
		if parts := strings.Split(a, ":"); len(parts) != 3 || parts[0] == "" || parts[2] == "" {
			v.add("console.admins", fmt.Sprintf("%s is not a principal: want platform:workspace:user (e.g. slack:T012:U034, discord::123)", v.quote("console.admins", a)))
		}
	}
	v.duration("console.session_ttl", c.SessionTTL, 5*time.Minute, 30*24*time.Hour)
}

func validPrices(v *validator, prices map[string]Price) {
	if len(prices) > maxPrices {
		v.add("llm.prices", fmt.Sprintf("at most %d models", maxPrices))
	}
	for model, p := range prices {
		if model == "" || len(model) > maxModelLen {
			v.add("llm.prices", fmt.Sprintf("model names must be 1 to %d bytes", maxModelLen))
		}
		if !(p.Input >= 0 && p.Input <= 10_000) || !(p.Output >= 0 && p.Output <= 10_000) {
			v.add("llm.prices."+model, "input and output must be US dollars per million tokens, 0 to 10000")
		}
	}
}

// maxMemoryChannels bounds memory.channel_writers.
const maxMemoryChannels = 10_000

func (m *Memory) validate(v *validator) {
	v.intRange("memory.max_entries", m.MaxEntries, 1, 100_000)
	if len(m.ChannelWriters) > maxMemoryChannels {
		v.add("memory.channel_writers", fmt.Sprintf("at most %d channels", maxMemoryChannels))
		return
	}
	for _, ch := range sortedKeys(m.ChannelWriters) {
		platform, id, ok := strings.Cut(ch, ":")
		if !ok || (platform != "slack" && platform != "discord") || id == "" || strings.ContainsAny(id, ": ") || len(ch) > 100 {
			v.add("memory.channel_writers", fmt.Sprintf("%s is not a channel: want slack:CHANNEL_ID or discord:CHANNEL_ID (e.g. slack:C0123, discord:123456)", v.quote("memory.channel_writers", ch)))
			continue
		}
		key := "memory.channel_writers." + ch
		if len(m.ChannelWriters[ch]) > maxConsoleAdmins {
			v.add(key, fmt.Sprintf("at most %d writers", maxConsoleAdmins))
		}
		for _, w := range m.ChannelWriters[ch] {
			if w == "*" {
				continue
			}
			if parts := strings.Split(w, ":"); len(parts) != 3 || parts[0] == "" || parts[2] == "" {
				v.add(key, fmt.Sprintf("%s is not a principal: want platform:workspace:user (e.g. slack:T012:U034, discord::123), or * for every member", v.quote(key, w)))
			}
		}
	}
}

func (s Store) validate(v *validator) {
	v.oneOf("store.driver", s.Driver, StoreSQLite, StorePostgres)
	switch s.Driver {
	case StoreSQLite:
		if s.URL != "" {
			v.add("store.url", "is for driver postgres; the sqlite database is the file <data_dir>/talon.db (remove store.url, or set store.driver: postgres)")
		}
	case StorePostgres:
		u := s.URL.Reveal()
		if u == "" {
			v.add("store.url", "is required with driver postgres: the connection URL, e.g. ${DATABASE_URL} with DATABASE_URL=postgres://talon@db.example.com:5432/talon?sslmode=verify-full")
		} else if !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
			// Never quoted: the value may hold a password.
			v.add("store.url", "must be a postgres:// or postgresql:// URL, e.g. postgres://talon@db.example.com:5432/talon?sslmode=verify-full")
		}
	}
}
