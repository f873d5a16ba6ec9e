package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/talonhq/talon/sandbox/egress"
)

// Approval says when a call needs the user's approval.
type Approval string

// The approval modes of a manifest.
const (
	ApproveNever  Approval = "never"
	ApproveAlways Approval = "always"
	// ApproveNonGet asks before each HTTP request whose method is not GET
	// or HEAD.
	ApproveNonGet Approval = "non_get"
)

// Limits bound one tool's calls. ParseManifest fills in the defaults.
type Limits struct {
	Deadline         time.Duration
	MemoryMiB        int
	MaxOutputBytes   int
	MaxHTTPRequests  int
	PerMinute        int
	MaxResponseBytes int64
	MaxRequestBytes  int64
	// MaxFileBytes bounds the file a call may return for the user (0: the
	// tool may return none).
	MaxFileBytes int
}

// Defaults and bounds of Limits.
var defaultLimits = Limits{
	Deadline:         30 * time.Second,
	MemoryMiB:        64,
	MaxOutputBytes:   1 << 20,
	MaxHTTPRequests:  16,
	PerMinute:        60,
	MaxResponseBytes: 5 << 20,
	MaxRequestBytes:  1 << 20,
	MaxFileBytes:     8 << 20,
}

const (
	maxDeadline      = 10 * time.Minute
	maxMemoryMiB     = 4096
	maxOutputBytes   = 16 << 20
	maxHTTPRequests  = 1000
	maxPerMinute     = 100000
	maxResponseBytes = 64 << 20
	maxRequestBytes  = 8 << 20
	// maxFileBytes is what Discord takes in a bot's message by default.
	maxFileBytes = 25 << 20
)

// Manifest is the operator's grant to one tool: what it is, what it may
// reach, and its limits. See the format in ABI.md.
type Manifest struct {
	Name        string
	Description string
	Enabled     bool
	// Parameters is the JSON Schema of the arguments, as JSON.
	Parameters  json.RawMessage
	HTTP        []egress.Rule
	Credentials []string
	Approval    Approval
	Limits      Limits
}

// rawManifest is the YAML form; pointers tell absent from zero.
type rawManifest struct {
	Name        string        `yaml:"name"`
	Description string        `yaml:"description"`
	Enabled     *bool         `yaml:"enabled"`
	Parameters  any           `yaml:"parameters"`
	HTTP        []egress.Rule `yaml:"http"`
	Credentials []string      `yaml:"credentials"`
	Approval    string        `yaml:"approval"`
	Limits      rawLimits     `yaml:"limits"`
}

type rawLimits struct {
	Deadline         *time.Duration `yaml:"deadline"`
	MemoryMiB        *int           `yaml:"memory_mib"`
	MaxOutputBytes   *int           `yaml:"max_output_bytes"`
	MaxHTTPRequests  *int           `yaml:"max_http_requests"`
	PerMinute        *int           `yaml:"per_minute"`
	MaxResponseBytes *int64         `yaml:"max_response_bytes"`
	MaxRequestBytes  *int64         `yaml:"max_request_bytes"`
	MaxFileBytes     *int           `yaml:"max_file_bytes"`
}

var toolName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// ParseManifest decodes and validates the manifest in data. file is the
// manifest's file name (e.g. "http_fetch.yaml"); the tool's name must equal
// it without the extension. Unknown keys are errors; every problem is
// reported at once, each naming the file and the key.
func ParseManifest(file string, data []byte) (*Manifest, error) {
	var raw rawManifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty manifest", file)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", file, key, fmt.Sprintf(format, args...)))
	}

	m := &Manifest{
		Name:        raw.Name,
		Description: strings.TrimSpace(raw.Description),
		Enabled:     raw.Enabled == nil || *raw.Enabled,
		HTTP:        raw.HTTP,
		Credentials: raw.Credentials,
		Approval:    Approval(raw.Approval),
		Limits:      defaultLimits,
	}
	want := strings.TrimSuffix(baseName(file), ".yaml")
	switch {
	case !toolName.MatchString(raw.Name):
		bad("name", "%q must match [a-z][a-z0-9_]{0,63}", raw.Name)
	case raw.Name != want:
		bad("name", "%q must equal the file name %q", raw.Name, want)
	}
	if m.Description == "" {
		bad("description", "required")
	}
	if m.Approval == "" {
		m.Approval = ApproveNever
	}
	switch m.Approval {
	case ApproveNever, ApproveAlways, ApproveNonGet:
	default:
		bad("approval", "%q must be never, always or non_get", raw.Approval)
	}

	params := raw.Parameters
	if params == nil {
		params = map[string]any{"type": "object", "properties": map[string]any{}}
	}
	if obj, ok := params.(map[string]any); !ok || obj["type"] != "object" {
		bad("parameters", "must be a JSON Schema with type: object")
	} else if js, err := json.Marshal(params); err != nil {
		bad("parameters", "cannot be written as JSON (keys must be strings)")
	} else {
		m.Parameters = js
	}

	for i, r := range raw.HTTP {
		key := fmt.Sprintf("http[%d]", i)
		if strings.TrimSpace(r.Host) == "" {
			bad(key+".host", "required")
		}
		if r.Trusted && strings.TrimSpace(r.Host) == "*" {
			bad(key+".trusted", `a rule for host "*" may not be trusted: name the hosts you trust`)
		}
		switch r.Scheme {
		case "", "https", "http":
		default:
			bad(key+".scheme", "%q must be https or http", r.Scheme)
		}
		for j, meth := range r.Methods {
			if meth == "" || strings.ToUpper(meth) != meth || strings.ContainsAny(meth, " \t\r\n") {
				bad(fmt.Sprintf("%s.methods[%d]", key, j), "%q must be an upper-case HTTP method", meth)
			}
		}
		for j, p := range r.PathPrefixes {
			if !strings.HasPrefix(p, "/") {
				bad(fmt.Sprintf("%s.path_prefixes[%d]", key, j), "%q must start with /", p)
			}
		}
	}
	for i, c := range raw.Credentials {
		if strings.TrimSpace(c) == "" {
			bad(fmt.Sprintf("credentials[%d]", i), "empty name")
		}
	}

	l := raw.Limits
	if l.Deadline != nil {
		m.Limits.Deadline = *l.Deadline
		if *l.Deadline <= 0 || *l.Deadline > maxDeadline {
			bad("limits.deadline", "%s out of range (0, %s]", *l.Deadline, maxDeadline)
		}
	}
	intLimit := func(key string, p *int, dst *int, lo, hi int) {
		if p == nil {
			return
		}
		*dst = *p
		if *p < lo || *p > hi {
			bad(key, "%d out of range %d..%d", *p, lo, hi)
		}
	}
	int64Limit := func(key string, p *int64, dst *int64, lo, hi int64) {
		if p == nil {
			return
		}
		*dst = *p
		if *p < lo || *p > hi {
			bad(key, "%d out of range %d..%d", *p, lo, hi)
		}
	}
	intLimit("limits.memory_mib", l.MemoryMiB, &m.Limits.MemoryMiB, 1, maxMemoryMiB)
	intLimit("limits.max_output_bytes", l.MaxOutputBytes, &m.Limits.MaxOutputBytes, 1, maxOutputBytes)
	intLimit("limits.max_http_requests", l.MaxHTTPRequests, &m.Limits.MaxHTTPRequests, 0, maxHTTPRequests)
	intLimit("limits.per_minute", l.PerMinute, &m.Limits.PerMinute, 1, maxPerMinute)
	int64Limit("limits.max_response_bytes", l.MaxResponseBytes, &m.Limits.MaxResponseBytes, 0, maxResponseBytes)
	int64Limit("limits.max_request_bytes", l.MaxRequestBytes, &m.Limits.MaxRequestBytes, 0, maxRequestBytes)
	intLimit("limits.max_file_bytes", l.MaxFileBytes, &m.Limits.MaxFileBytes, 0, maxFileBytes)

	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func baseName(file string) string {
	if i := strings.LastIndexAny(file, `/\`); i >= 0 {
		return file[i+1:]
	}
	return file
}

// policy is the egress policy the manifest grants.
func (m *Manifest) policy() *egress.Policy {
	return &egress.Policy{
		Allow:            m.HTTP,
		Credentials:      m.Credentials,
		MaxRequestBytes:  m.Limits.MaxRequestBytes,
		MaxResponseBytes: m.Limits.MaxResponseBytes,
		Timeout:          m.Limits.Deadline,
	}
}
