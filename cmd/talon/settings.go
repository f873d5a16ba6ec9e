package main

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/talonhq/talon/cmd/talon/config"
)

// ownSettings are the settings of talon.yaml that are each replica's own
// (cluster.Config.Settings holds every other one): a name is a setting, or
// a section whose every setting is. A setting not listed is shared, so
// that a new one is checked unless it is added here.
var ownSettings = []string{
	"data_dir", // its disk
	"store",    // its connection to the shared store (the vault key and the runtime lock check the rest)
	"log",
	"http", // its listener and the address people reach it at
	"terminal",
	// Its resources. The tools themselves are checked by their digest
	// (cluster.Config.Tools).
	"sandbox.tools_dir", "sandbox.pool_size", "sandbox.max_memory_mib", "sandbox.pool_idle", "sandbox.warm",
	"files.retention", // the attached files kept on its disk
	// Whether it serves the console on its listener (a deployment may serve
	// it from some replicas only). Who may sign in and for how long is
	// shared: the sign-ins are in the store.
	"console.enabled",
	"mcp.idle_timeout", "mcp.max_sessions", // its sessions with the MCP servers
	// nats.partitions, nats.lease_ttl and nats.prefix have checks of their
	// own, with clearer messages; nats.url and nats.replica are its own.
	"nats",
}

// hashedSettings are always shown by their digest (hashedValue), however
// short: the operator's text, which has no place in NATS or an error.
var hashedSettings = []string{"agent.system_prompt"}

// maxSettingValue bounds a value shown as it is; a longer one is shown by
// its digest, so that the record in NATS stays small.
const maxSettingValue = 80

// sharedSettings returns the settings of cfg that every replica of a
// deployment must share (cluster.Config.Settings): every setting but
// ownSettings, by dotted name ("agent.rate_per_minute"), each value as
// its compact JSON text ("20", "\"gpt-4o\"", "[\"C1\",\"C2\"]").
//
// A section of the file (a struct of package config) is flattened into
// its settings; any other value is one setting, lists and maps whose keys
// are data (llm.prices, llm.headers, memory.channel_writers) included, so
// that an entry only one replica has is a difference, not a name the other
// lacks (cluster compares only the names both have). An empty list or map
// is the same as none. A value longer than maxSettingValue, and the system
// prompt, is replaced by "sha256:<12 hex digits> (<n> bytes)".
//
// A credential (config.Secret) marshals to "[redacted]", or "" when it is
// empty (Secret.MarshalJSON in cmd/talon/config/secret.go), never to its
// value: credentials are compared only as set or unset, and never reach
// NATS, a log or an error.
func sharedSettings(cfg *config.Config) (map[string]string, error) {
	all, err := flattenSettings(cfg)
	if err != nil {
		return nil, err
	}
	for name := range all {
		if isOwnSetting(name) {
			delete(all, name)
		}
	}
	for name, v := range all {
		if len(v) > maxSettingValue || (slices.Contains(hashedSettings, name) && v != `""`) {
			all[name] = hashedValue(v)
		}
	}
	return all, nil
}

// flattenSettings returns every setting of cfg, by dotted name, as its
// compact JSON text.
func flattenSettings(cfg *config.Config) (map[string]string, error) {
	out := map[string]string{}
	if err := flattenSection("", reflect.ValueOf(cfg).Elem(), out); err != nil {
		return nil, err
	}
	return out, nil
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// flattenSection adds the settings of section v (a struct) to out, each
// named prefix + its JSON name.
func flattenSection(prefix string, v reflect.Value, out map[string]string) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		name = prefix + name
		fv := v.Field(i)
		ft := fv.Type()
		if ft.Kind() == reflect.Struct && !ft.Implements(jsonMarshaler) && !ft.Implements(textMarshaler) &&
			!reflect.PointerTo(ft).Implements(jsonMarshaler) && !reflect.PointerTo(ft).Implements(textMarshaler) {
			if err := flattenSection(name+".", fv, out); err != nil {
				return err
			}
			continue
		}
		switch {
		case ft.Kind() == reflect.Slice && fv.Len() == 0:
			out[name] = "[]"
		case ft.Kind() == reflect.Map && fv.Len() == 0:
			out[name] = "{}"
		default:
			b, err := json.Marshal(fv.Interface())
			if err != nil {
				return fmt.Errorf("settings: %s: %w", name, err)
			}
			out[name] = string(b)
		}
	}
	return nil
}

func isOwnSetting(name string) bool {
	for _, own := range ownSettings {
		if name == own || strings.HasPrefix(name, own+".") {
			return true
		}
	}
	return false
}

// hashedValue shows a value by the start of its SHA-256 and its length.
func hashedValue(v string) string {
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:6]) + " (" + strconv.Itoa(len(v)) + " bytes)"
}
