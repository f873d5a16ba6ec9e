package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzDecode checks that no file makes decoding panic, and that whatever it
// accepts is valid.
func FuzzDecode(f *testing.F) {
	if example, err := os.ReadFile(examplePath); err == nil {
		f.Add(string(example))
	}
	for _, seed := range []string{
		"", "llm:\n  api_key: ${K}\n", "agent: {max_steps: 3}\n", "log: &a {level: info}\nhttp: *a\n",
		"sandbox:\n  allow_private: [10.0.0.0/8]\n", "llm:\n  headers: {X: y}\n", "- a\n- b\n", "<<: {a: 1}\n",
		"store: {driver: postgres, url: ${K}}\n", "sandbox: {allow_private: [${K}, $${K}]}\n",
	} {
		f.Add(seed)
	}
	getenv := env(map[string]string{"K": "secret-value"})
	f.Fuzz(func(t *testing.T, data string) {
		c, err := decode([]byte(data), getenv)
		if err != nil {
			if strings.Contains(err.Error(), "secret-value") {
				t.Fatalf("error reveals a variable's value: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decode accepted an invalid config: %v", err)
		}
	})
}

// FuzzExpand checks that expansion never panics and never substitutes a
// value into an error.
func FuzzExpand(f *testing.F) {
	for _, seed := range []string{"", "$", "$$", "${", "${A}", "${A", "a${A}b$$c", "${1}", "$${A}"} {
		f.Add(seed)
	}
	getenv := env(map[string]string{"A": "value-of-a"})
	f.Fuzz(func(t *testing.T, s string) {
		_, _, errs := expand(s, getenv)
		for _, err := range errs {
			if strings.Contains(err.Error(), "value-of-a") {
				t.Fatalf("error reveals a value: %v", err)
			}
		}
	})
}
