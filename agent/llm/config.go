package llm

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults applied by NewOpenAI and NewAnthropic to the zero fields of a Config.
const (
	DefaultOpenAIBaseURL    = "http://127.0.0.1:11434/v1" // Ollama's OpenAI-compatible endpoint
	DefaultAnthropicBaseURL = "https://api.anthropic.com"
	DefaultTimeout          = 120 * time.Second
	DefaultMaxRetries       = 3
	// DefaultAnthropicMaxTokens is the reply cap sent to Anthropic when
	// neither Request.MaxTokens nor Config.MaxTokens is set (the API requires one).
	DefaultAnthropicMaxTokens = 4096
	// MaxRetryAfter caps how long a provider's Retry-After can make us wait.
	MaxRetryAfter = 60 * time.Second
)

// Config configures a Provider. The zero value of each optional field means
// its default.
type Config struct {
	// BaseURL is the endpoint. For OpenAI-compatible servers it includes the
	// /v1 prefix; it defaults to DefaultOpenAIBaseURL (Ollama) or
	// DefaultAnthropicBaseURL.
	BaseURL string
	// APIKey authenticates requests. It may be empty for local
	// OpenAI-compatible servers; Anthropic requires it. It never appears in
	// errors or logs.
	APIKey string
	// Model is the model name every request uses. Required.
	Model string
	// Headers are extra headers sent on every request.
	Headers map[string]string
	// Timeout bounds each attempt, including reading a streamed answer;
	// default DefaultTimeout.
	Timeout time.Duration
	// MaxRetries is how many times a call is retried on 429, 5xx and
	// connection errors; default DefaultMaxRetries. A negative value disables
	// retries.
	MaxRetries int
	// MaxTokens caps replies when Request.MaxTokens is zero. Zero leaves the
	// cap to the server (OpenAI) or uses DefaultAnthropicMaxTokens.
	MaxTokens int
	// HTTPClient sends the requests; nil means a new client with no overall
	// timeout (Timeout applies per attempt).
	HTTPClient *http.Client
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults(defaultBaseURL string) (Config, error) {
	var errs []error
	if strings.TrimSpace(c.Model) == "" {
		errs = append(errs, errors.New("model is required"))
	}
	if c.BaseURL == "" {
		c.BaseURL = defaultBaseURL
	}
	if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, errors.New("base url must be an absolute http(s) URL"))
	}
	if c.Timeout < 0 || c.MaxTokens < 0 {
		errs = append(errs, errors.New("timeout and max tokens must not be negative"))
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMaxRetries
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	return c, errors.Join(errs...)
}

// baseURLForErrors is the base URL without user info or query, safe to show
// in an error.
func (c Config) baseURLForErrors() string {
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return "the configured base url"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}
