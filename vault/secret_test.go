package vault

import (
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretAndKeyRedact(t *testing.T) {
	const value = "hunter2-sup3r-s3cret"
	s := SecretString(value)
	k := mustKey(t)
	forbidden := []string{value, hex.EncodeToString([]byte(value)), fmt.Sprintf("%q", value), k.Encode(), "hunter2"}

	type wrapper struct {
		Entry Entry
		Key   Key
		Ptr   *Secret
	}
	w := wrapper{Entry: Entry{Name: "n", Value: s}, Key: k, Ptr: &s}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%T"} {
		outputs = append(outputs,
			fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s), fmt.Sprintf(verb, k),
			fmt.Sprintf(verb, w), fmt.Sprintf(verb, []Secret{s}), fmt.Sprintf(verb, map[string]Secret{"a": s}))
	}
	outputs = append(outputs, s.String(), s.GoString(), k.String(), k.GoString(), fmt.Sprint(s, k), fmt.Sprintln(w))
	for _, v := range []any{s, &s, k, w, []Secret{s}, map[string]any{"s": s, "k": k}} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		x, err := xml.Marshal(struct{ V any }{v})
		if err != nil && !strings.Contains(err.Error(), "unsupported type") {
			t.Fatalf("xml.Marshal: %v", err)
		}
		outputs = append(outputs, string(j), string(x))
	}
	var log strings.Builder
	logger := slog.New(slog.NewJSONHandler(&log, nil))
	logger.Info("m", "secret", s, "key", k, "entry", w.Entry)
	text := slog.New(slog.NewTextHandler(&log, nil))
	text.Info("m", "secret", s, "key", k)
	outputs = append(outputs, log.String())

	for _, out := range outputs {
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("output reveals the secret or key (output length %d)", len(out))
			}
		}
	}
	if !strings.Contains(fmt.Sprint(s), "REDACTED") {
		t.Errorf("fmt.Sprint(secret) = %q, want a redaction marker", fmt.Sprint(s))
	}
	if string(s.Reveal()) != value {
		t.Error("Reveal does not return the value")
	}
}
