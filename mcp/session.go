package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/sandbox/egress"
)

// maxPages bounds the pages of one tools/list.
const maxPages = 64

// session is one user's session with one server: connected on first use,
// reconnected after it breaks, its tool list cached until the server says
// it changed.
type session struct {
	srv  *Server
	user agent.Principal
	used atomic.Int64 // unix nanoseconds of the last use
	busy atomic.Int32 // calls and listings using it now (set under Client.mu)

	mu     sync.Mutex // guards the fields below; held while connecting and listing
	cs     *sdk.ClientSession
	tools  []Tool
	listed bool
	// failErr is the last failure to connect or list, repeated without
	// trying again until failUntil, so that a server that is down does
	// not hold up every turn.
	failErr   error
	failUntil time.Time
	stale     atomic.Bool // the server sent tools/list_changed
	// pinsRead is when the approvals of tools disabled because they
	// changed were last read again (see recheck).
	pinsRead time.Time
	// unauth is set when the server answered 401: the user's token was
	// refused.
	unauth atomic.Bool
}

// retryAfter is how long a failure to connect or list is remembered.
const retryAfter = 30 * time.Second

// pinRecheck is how often a session with tools disabled because they
// changed reads their approvals again, so that `talon mcp approve` (another
// process) or the console reaches a running gateway.
const pinRecheck = 2 * time.Second

func (s *session) touch() { s.used.Store(time.Now().UnixNano()) }

// release ends a use begun by Client.session.
func (s *session) release() {
	s.touch()
	s.busy.Add(-1)
}

func (s *session) invalidate() { s.stale.Store(true) }

// conn returns the session's connection, connecting if needed.
func (s *session) conn(ctx context.Context, c *Client) (*sdk.ClientSession, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connLocked(ctx, c)
}

func (s *session) connLocked(ctx context.Context, c *Client) (*sdk.ClientSession, error) {
	if s.cs != nil {
		return s.cs, nil
	}
	scheme, hostPort, err := s.srv.origin()
	if err != nil {
		return nil, err
	}
	pol := &egress.Policy{
		Allow:            []egress.Rule{{Scheme: scheme, Host: hostPort, Methods: []string{"GET", "POST", "DELETE"}}},
		MaxRequestBytes:  1 << 20,
		MaxResponseBytes: maxListBytes,
		Timeout:          s.srv.timeout(),
	}
	cred := ""
	switch s.srv.Auth {
	case AuthBearer:
		cred = s.srv.Credential
	case AuthOAuth:
		cred = AccessTokenName(s.srv.Name)
	}
	if cred != "" {
		pol.Credentials = []string{cred}
	}
	caller := egress.Caller{Tool: "mcp:" + s.srv.Name, Principal: s.user, Policy: pol}
	hc := &http.Client{
		Transport: &originOnly{scheme: scheme, hostPort: hostPort, next: c.Egress.RoundTripper(caller, cred), unauth: &s.unauth},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	version := c.Version
	if version == "" {
		version = "dev"
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "talon", Version: version}, &sdk.ClientOptions{
		ToolListChangedHandler:      func(context.Context, *sdk.ToolListChangedRequest) { s.invalidate() },
		ProgressNotificationHandler: c.onProgress,
	})
	cctx, cancel := context.WithTimeout(ctx, s.srv.timeout())
	defer cancel()
	cs, err := client.Connect(cctx, &sdk.StreamableClientTransport{Endpoint: s.srv.URL, HTTPClient: hc, MaxEventSize: maxListBytes, MaxRetries: 2}, nil)
	if err != nil {
		var de *egress.DeniedError
		if errors.As(err, &de) || cctx.Err() != nil {
			return nil, fmt.Errorf("mcp: connect to %s: %w", s.srv.Name, err)
		}
		// A server that offers only the older HTTP+SSE transport refuses
		// the streamable POST; try that one before giving up.
		sse, serr := client.Connect(cctx, &sdk.SSEClientTransport{Endpoint: s.srv.URL, HTTPClient: hc, MaxEventSize: maxListBytes}, nil)
		if serr != nil {
			return nil, fmt.Errorf("mcp: connect to %s: %w", s.srv.Name, err)
		}
		cs = sse
	}
	s.cs = cs
	s.listed = false
	return cs, nil
}

// drop forgets cs, if it is still the session's connection, and closes it.
func (s *session) drop(cs *sdk.ClientSession) {
	s.mu.Lock()
	if s.cs == cs {
		s.cs = nil
		s.listed = false
	}
	s.mu.Unlock()
	_ = cs.Close()
}

// reset forgets the connection, the tool list and a remembered failure:
// the user's token changed.
func (s *session) reset() {
	s.mu.Lock()
	cs := s.cs
	s.cs, s.listed, s.failErr = nil, false, nil
	s.mu.Unlock()
	if cs != nil {
		_ = cs.Close()
	}
}

func (s *session) close() {
	s.mu.Lock()
	cs := s.cs
	s.cs = nil
	s.mu.Unlock()
	if cs != nil {
		_ = cs.Close()
	}
}

// list returns the server's tools, listing them again when the server
// said they changed or nothing was listed yet.
func (s *session) list(ctx context.Context, c *Client) ([]Tool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listed && !s.stale.Load() {
		s.recheck(ctx, c)
		return s.tools, nil
	}
	if s.failErr != nil && time.Now().Before(s.failUntil) {
		return nil, s.failErr
	}
	tools, err := s.relist(ctx, c)
	if err != nil {
		if ctx.Err() == nil {
			s.failErr, s.failUntil = err, time.Now().Add(retryAfter)
		}
		return nil, err
	}
	s.failErr = nil
	return tools, nil
}

func (s *session) relist(ctx context.Context, c *Client) ([]Tool, error) {
	for attempt := 0; ; attempt++ {
		cs, err := s.connLocked(ctx, c)
		if err != nil {
			return nil, err
		}
		s.stale.Store(false)
		tools, err := s.fetch(ctx, c, cs)
		if err == nil {
			s.tools, s.listed = tools, true
			return tools, nil
		}
		var de *egress.DeniedError
		if attempt > 0 || ctx.Err() != nil || errors.As(err, &de) {
			return nil, err
		}
		// A server that forgot the session (a restart) answers 404:
		// reconnect once.
		s.cs, s.listed = nil, false
		_ = cs.Close()
	}
}

// recheck reads again, at most every pinRecheck, the approvals of the
// tools disabled because they changed, and enables those approved since.
// s.mu is held.
func (s *session) recheck(ctx context.Context, c *Client) {
	if c.Pins == nil || time.Since(s.pinsRead) < pinRecheck || !slices.ContainsFunc(s.tools, func(t Tool) bool { return t.changed }) {
		return
	}
	s.pinsRead = time.Now()
	pins, err := c.Pins.ToolPins(ctx, s.srv.Name)
	if err != nil {
		c.Logger.Warn().Err(err).Str("mcp_server", s.srv.Name).Msg("mcp: read tool approvals")
		return
	}
	approved := make(map[string]string, len(pins))
	for _, p := range pins {
		approved[p.Tool] = p.Approved
	}
	var tools []Tool
	for i, t := range s.tools {
		if t.changed && approved[t.Remote] == t.Hash {
			if tools == nil {
				tools = slices.Clone(s.tools) // the old slice may be read by a caller
			}
			tools[i].changed, tools[i].Disabled = false, ""
		}
	}
	if tools != nil {
		s.tools = tools
	}
}

// fetch lists the tools over every page, bounded, and checks each one.
func (s *session) fetch(ctx context.Context, c *Client, cs *sdk.ClientSession) ([]Tool, error) {
	lctx, cancel := context.WithTimeout(ctx, s.srv.timeout())
	defer cancel()
	var (
		out    []Tool
		seen   = map[string]bool{}
		params = &sdk.ListToolsParams{}
		more   int
	)
	for page := 0; ; page++ {
		if page == maxPages {
			c.Logger.Warn().Str("mcp_server", s.srv.Name).Int("pages", page).Msg("mcp server lists too many pages of tools; the rest are left out")
			break
		}
		res, err := cs.ListTools(lctx, params)
		if err != nil {
			return nil, fmt.Errorf("mcp: list tools of %s: %w", s.srv.Name, err)
		}
		for _, t := range res.Tools {
			if t == nil || !s.srv.allows(t.Name) {
				continue
			}
			if len(out) == MaxTools {
				more++
				continue
			}
			tool := s.check(ctx, c, t)
			if seen[tool.Spec.Name] {
				tool.Disabled = "its name is the same as another tool's after sanitising"
			}
			seen[tool.Spec.Name] = true
			out = append(out, tool)
		}
		if res.NextCursor == "" || more > 0 {
			break
		}
		params = &sdk.ListToolsParams{Cursor: res.NextCursor}
	}
	if more > 0 {
		c.Logger.Warn().Str("mcp_server", s.srv.Name).Int("max", MaxTools).Msg("mcp server offers more tools than Talon offers a model; the rest are left out (narrow them with tools.allow)")
	}
	return out, nil
}

// check turns a listed tool into what the model sees, and disables it
// when its schema is unusable or it changed since it was approved.
func (s *session) check(ctx context.Context, c *Client, t *sdk.Tool) Tool {
	schema, schemaErr := inputSchema(t.InputSchema)
	hash := toolHash(t.Name, t.Description, schema)
	desc := clip(strings.TrimSpace(t.Description), MaxDescriptionBytes)
	tool := Tool{
		Spec:     llm.Tool{Name: modelName(s.srv.Name, t.Name), Description: desc, Parameters: schema},
		Remote:   t.Name,
		Hash:     hash,
		ReadOnly: t.Annotations != nil && t.Annotations.ReadOnlyHint,
	}
	if schemaErr != nil {
		tool.Disabled = "its input schema is unusable: " + schemaErr.Error()
		tool.Spec.Parameters = json.RawMessage(`{"type":"object"}`)
		return tool
	}
	if c.Pins == nil {
		return tool
	}
	approved, err := c.Pins.SeeTool(ctx, s.srv.Name, ToolPin{Tool: t.Name, Hash: hash, Description: desc, ReadOnly: tool.ReadOnly, SeenAt: time.Now()})
	switch {
	case err != nil:
		tool.Disabled = "its approval could not be checked"
		c.Logger.Error().Err(err).Str("mcp_server", s.srv.Name).Msg("mcp: record tool hash")
	case approved != hash:
		tool.changed = true
		tool.Disabled = fmt.Sprintf("its description or schema changed since the operator approved it; the operator can review it with `talon mcp list` and enable it with `talon mcp approve %s`", s.srv.Name)
	}
	return tool
}

// inputSchema checks a tool's input schema: a JSON object schema within
// MaxSchemaBytes.
func inputSchema(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, errors.New("missing")
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, errors.New("not JSON")
	}
	if len(data) > MaxSchemaBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxSchemaBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, errors.New("not a JSON object")
	}
	var typ string
	if err := json.Unmarshal(obj["type"], &typ); err != nil || typ != "object" {
		return nil, errors.New(`its type is not "object"`)
	}
	if p, ok := obj["properties"]; ok {
		var props map[string]json.RawMessage
		if err := json.Unmarshal(p, &props); err != nil {
			return nil, errors.New("its properties are not an object")
		}
	}
	return data, nil
}

// toolHash identifies what the model is told about a tool: its name,
// description and input schema (as re-encoded, keys sorted).
func toolHash(name, description string, schema json.RawMessage) string {
	h := sha256.New()
	for _, part := range []string{name, description, string(schema)} {
		fmt.Fprintf(h, "%d:%s;", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// modelName is <server>__<tool> with every byte outside [A-Za-z0-9_-]
// replaced by _, bounded to MaxNameBytes by a hash of the tool's name.
func modelName(server, tool string) string {
	var b strings.Builder
	b.WriteString(server)
	b.WriteString("__")
	for i := 0; i < len(tool); i++ {
		ch := tool[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '_', ch == '-':
			b.WriteByte(ch)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > MaxNameBytes || len(tool) == 0 {
		sum := sha256.Sum256([]byte(tool))
		suffix := "_" + hex.EncodeToString(sum[:4])
		name = name[:min(len(name), MaxNameBytes-len(suffix))] + suffix
	}
	return name
}

// resultText is what the model reads of a result: its text content, its
// structured content when it has no text, a note for other content,
// bounded to limit bytes.
func resultText(res *sdk.CallToolResult, limit int) string {
	var parts []string
	hasText := false
	for _, c := range res.Content {
		switch c := c.(type) {
		case *sdk.TextContent:
			parts = append(parts, c.Text)
			hasText = true
		case *sdk.ImageContent:
			parts = append(parts, "[an image ("+clip(oneLine(c.MIMEType), 40)+") is left out]")
		case *sdk.AudioContent:
			parts = append(parts, "[audio is left out]")
		case *sdk.EmbeddedResource:
			if c.Resource != nil && c.Resource.Text != "" {
				parts = append(parts, c.Resource.Text)
				hasText = true
			} else {
				parts = append(parts, "[an embedded resource is left out]")
			}
		case *sdk.ResourceLink:
			parts = append(parts, "[resource "+clip(oneLine(c.URI), 200)+"]")
		}
	}
	if !hasText && res.StructuredContent != nil {
		if data, err := json.Marshal(res.StructuredContent); err == nil {
			parts = append(parts, string(data))
		}
	}
	text := strings.Join(parts, "\n")
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	if len(text) > limit {
		note := fmt.Sprintf("\n[the result was cut at %d bytes]", limit)
		text = clip(text, limit-len(note)) + note
	}
	return text
}

// clip cuts s to at most n bytes at a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// oneLine replaces control characters (newlines included) with spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// originOnly refuses any request not to the server's own origin: the SSE
// transport posts to the URL the server's endpoint event names.
type originOnly struct {
	scheme, hostPort string
	next             http.RoundTripper
	// unauth, when set, is set on a 401 answer.
	unauth *atomic.Bool
}

func (o *originOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	port := r.URL.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[r.URL.Scheme]
	}
	host := strings.ToLower(strings.TrimSuffix(r.URL.Hostname(), "."))
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if r.URL.Scheme != o.scheme || host+":"+port != o.hostPort {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, &egress.DeniedError{Host: r.URL.Hostname(), Reason: "an MCP server may only be reached at its configured origin " + o.scheme + "://" + o.hostPort}
	}
	resp, err := o.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && o.unauth != nil {
		o.unauth.Store(true)
	}
	return resp, err
}
