package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// MaxFileSize bounds the configuration file.
const MaxFileSize = 1 << 20

// KeyError is one problem with one configuration key.
type KeyError struct {
	// Key is the full path of the key, such as "llm.api_key" or
	// "sandbox.allow_private[1]".
	Key string
	// Source says where the value came from: "line 12" for the file,
	// "$OPENAI_BASE_URL" for the environment, "" for a built-in default or a
	// Config built in code.
	Source string
	// Err is the problem. It never contains the value of a Secret or of an
	// environment variable.
	Err error
}

// Error returns "key: problem (source)".
func (e *KeyError) Error() string {
	if e.Source == "" {
		return e.Key + ": " + e.Err.Error()
	}
	return e.Key + ": " + e.Err.Error() + " (" + e.Source + ")"
}

// Unwrap returns Err.
func (e *KeyError) Unwrap() error { return e.Err }

// ErrUnknownKey is the Err of a KeyError for a key that Config does not have.
var ErrUnknownKey = errors.New("unknown key")

// Load returns the configuration.
//
// With path "" it starts from Default and applies the environment:
// OPENAI_API_KEY (llm.api_key; it also sets llm.base_url to OpenAIBaseURL
// unless OPENAI_BASE_URL is set), OPENAI_BASE_URL (llm.base_url),
// ANTHROPIC_API_KEY (llm.provider anthropic and llm.api_key, unless
// OPENAI_API_KEY or OPENAI_BASE_URL is set too, in which case openai wins),
// TALON_MODEL (llm.model) and TALON_DATA_DIR (data_dir). Empty variables
// count as unset.
//
// With a path it reads that YAML file over Default; keys absent from the file
// keep their default, and an empty file gives Default. The variables above
// are then not consulted: the file references what it needs as ${NAME}.
//
// Either way the result is validated. On failure the error lists every
// problem found (each a *KeyError, joined with errors.Join) and the Config is
// nil.
func Load(path string, getenv func(string) string) (*Config, error) {
	if path == "" {
		c := Default()
		sources := applyEnv(&c, getenv)
		if errs := c.validate(nil); len(errs) > 0 {
			setSources(errs, sources)
			return nil, fmt.Errorf("config: environment:\n%w", errors.Join(errs...))
		}
		return &c, nil
	}
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	c, err := decode(data, getenv)
	if err != nil {
		return nil, fmt.Errorf("config: %s:\n%w", path, err)
	}
	return c, nil
}

// readFile reads at most MaxFileSize bytes of path.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// applyEnv applies the environment variables Load honours without a file,
// and returns which key came from which variable.
func applyEnv(c *Config, getenv func(string) string) map[string]string {
	sources := map[string]string{}
	set := func(key, name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
			sources[key] = "$" + name
		}
	}
	openaiKey, openaiURL := getenv("OPENAI_API_KEY"), getenv("OPENAI_BASE_URL")
	switch {
	case openaiKey != "" || openaiURL != "":
		c.LLM.Provider = ProviderOpenAI
		if openaiKey != "" {
			c.LLM.APIKey = Secret(openaiKey)
			sources["llm.api_key"] = "$OPENAI_API_KEY"
			if openaiURL == "" {
				c.LLM.BaseURL = OpenAIBaseURL
			}
		}
		set("llm.base_url", "OPENAI_BASE_URL", &c.LLM.BaseURL)
	case getenv("ANTHROPIC_API_KEY") != "":
		c.LLM.Provider = ProviderAnthropic
		c.LLM.APIKey = Secret(getenv("ANTHROPIC_API_KEY"))
		sources["llm.provider"] = "$ANTHROPIC_API_KEY"
		sources["llm.api_key"] = "$ANTHROPIC_API_KEY"
	}
	set("llm.model", "TALON_MODEL", &c.LLM.Model)
	set("data_dir", "TALON_DATA_DIR", &c.DataDir)
	return sources
}

// setSources fills in the Source of each *KeyError in errs from sources,
// where it has none.
func setSources(errs []error, sources map[string]string) {
	for _, err := range errs {
		var ke *KeyError
		if errors.As(err, &ke) && ke.Source == "" {
			ke.Source = sources[ke.Key]
		}
	}
}

// lineSource is the Source of a value read from the file at line.
func lineSource(line int) string {
	if line <= 0 {
		return ""
	}
	return "line " + strconv.Itoa(line)
}
