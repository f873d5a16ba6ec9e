package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestSecretNeverPrints(t *testing.T) {
	const key, header = "sk-live-abc123", "Bearer tok-xyz789"
	c, err := loadFile(t, "llm:\n  base_url: https://api.openai.com/v1\n  api_key: ${OPENAI_API_KEY}\n  headers: {Authorization: '${AUTH}'}\n",
		map[string]string{"OPENAI_API_KEY": key, "AUTH": header})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := c.LLM.APIKey.Reveal(); got != key {
		t.Fatalf("Reveal() = %q, want %q", got, key)
	}
	renderings := map[string]func() (string, error){}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%10s"} {
		for name, v := range map[string]any{"Config": *c, "*Config": c, "LLM": c.LLM, "Secret": c.LLM.APIKey} {
			renderings[name+" "+verb] = func() (string, error) { return fmt.Sprintf(verb, v), nil }
		}
	}
	renderings["json"] = func() (string, error) { b, err := json.Marshal(c); return string(b), err }
	renderings["yaml"] = func() (string, error) { b, err := yaml.Marshal(c); return string(b), err }
	renderings["text"] = func() (string, error) { b, err := c.LLM.APIKey.MarshalText(); return string(b), err }
	renderings["String"] = func() (string, error) { return c.LLM.APIKey.String(), nil }
	renderings["GoString"] = func() (string, error) { return c.LLM.APIKey.GoString(), nil }
	for name, render := range renderings {
		got, err := render()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, secret := range []string{key, "abc123", header, "xyz789", fmt.Sprintf("%x", key)} {
			if strings.Contains(got, secret) {
				t.Errorf("%s reveals a secret: %s", name, got)
			}
		}
		if !strings.Contains(got, "[redacted]") && !strings.Contains(got, fmt.Sprintf("%x", "[redacted]")) &&
			!strings.Contains(got, fmt.Sprintf("%X", "[redacted]")) {
			t.Errorf("%s does not show the redaction: %s", name, got)
		}
	}
}

func TestSecretRendering(t *testing.T) {
	tests := []struct {
		name, format string
		secret       Secret
		want         string
	}{
		{"v", "%v", "k", "[redacted]"},
		{"s", "%s", "k", "[redacted]"},
		{"q", "%q", "k", `"[redacted]"`},
		{"go syntax", "%#v", "k", `"[redacted]"`},
		{"empty shows as empty", "%v", "", ""},
		{"empty go syntax", "%#v", "", `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprintf(tt.format, tt.secret); got != tt.want {
				t.Errorf("Sprintf(%q) = %q, want %q", tt.format, got, tt.want)
			}
		})
	}
	b, err := json.Marshal(struct{ K Secret }{"k"})
	if got, want := string(b), `{"K":"[redacted]"}`; err != nil || got != want {
		t.Errorf("json.Marshal = %s, %v; want %s", got, err, want)
	}
}
