package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/sandbox/egress"
)

// Egress provides the only way to the network: an http.RoundTripper that
// checks each request for caller c and injects the credential named
// credential at the edge. *egress.Broker implements it.
type Egress interface {
	RoundTripper(c egress.Caller, credential string) http.RoundTripper
}

// Approver asks a session's owner before a call and waits for the answer.
// *agent.Runtime implements it.
type Approver interface {
	RequestApproval(ctx context.Context, req agent.ApprovalRequest) (bool, error)
}

// Pins records each tool's hash (of its description and schema) as first
// seen and as approved by the operator. The store implements it.
type Pins interface {
	// SeeTool records the tool as the server describes it now and returns
	// the hash the operator approved: the first hash ever seen, or the one
	// last approved with ApproveTools.
	SeeTool(ctx context.Context, server string, t ToolPin) (approved string, err error)
	// ApproveTools approves the hashes last seen of every tool of server
	// and returns how many changed.
	ApproveTools(ctx context.Context, server string) (int, error)
	// ToolPins lists the tools of server as last seen, by name.
	ToolPins(ctx context.Context, server string) ([]ToolPin, error)
}

// ToolPin is one tool of a server as last seen.
type ToolPin struct {
	// Tool is the server's own name of the tool.
	Tool string
	// Hash is of the tool as last seen; Approved the hash approved.
	Hash, Approved string
	// Description is the description as last seen, capped.
	Description string
	ReadOnly    bool
	SeenAt      time.Time
}

// Client offers the tools of the configured servers. It implements
// agent.ToolRunner for tool names with a configured server's prefix.
//
// Set the fields, then call Tools and Run from any goroutine; Close ends
// every session.
type Client struct {
	// Servers are the configured servers, validated.
	Servers []Server
	// Egress is required.
	Egress Egress
	// Approver asks before calls that need approval; nil refuses them.
	Approver Approver
	// Pins records tool hashes; nil pins nothing (every tool is enabled).
	Pins Pins
	// Status, when set, receives a call's progress notifications as a
	// short line of text ("40% — indexing").
	Status func(call agent.ToolCall, text string)
	// Logger receives connection and listing problems, never arguments or
	// results.
	Logger zerolog.Logger
	// MaxSessions bounds the open sessions (server × user): beyond it the
	// least recently used session not in use is closed. Sessions in use at
	// once (bounded by the runtime's concurrent turns) are never closed
	// under a call. 0 means DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout is how long a session may go unused before it is closed
	// (the server is told, and forgets it); the next call opens a new one.
	// 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Version is sent as the client's version.
	Version string
	// OAuth runs the authorization flow of servers with auth: oauth; nil
	// leaves those servers out.
	OAuth *OAuth

	mu       sync.Mutex
	sessions map[sessionKey]*session // guarded by mu
	closed   bool                    // guarded by mu
	// sweeping is closed to stop the goroutine that closes idle sessions,
	// and swept when it has ended; nil until the first session. Guarded
	// by mu.
	sweeping, swept chan struct{}
	progress        sync.Map // progress token (string) → agent.ToolCall
}

var _ agent.ToolRunner = (*Client)(nil)

// Defaults of the session bounds.
const (
	DefaultMaxSessions = 256
	DefaultIdleTimeout = 10 * time.Minute
)

type sessionKey struct {
	server string
	user   agent.Principal
}

// ErrUnknownServer is returned for a tool name with no configured server.
var ErrUnknownServer = errors.New("mcp: no such server")

// Owns reports whether name is the name of one of c's tools (it has a
// configured server's prefix).
func (c *Client) Owns(name string) bool {
	_, ok := c.serverOf(name)
	return ok
}

func (c *Client) serverOf(toolName string) (*Server, bool) {
	prefix, _, ok := strings.Cut(toolName, "__")
	if !ok {
		return nil, false
	}
	return c.Server(prefix)
}

// Server returns the configured server named name.
func (c *Client) Server(name string) (*Server, bool) {
	for i := range c.Servers {
		if c.Servers[i].Name == name {
			return &c.Servers[i], true
		}
	}
	return nil, false
}

// Tools lists the tools of every server that p may use: those the server
// lists (on p's session), allowed by the configuration and not disabled. A
// server that cannot be reached is left out and logged.
// The servers are asked in parallel; one that failed is not asked again
// for 30 seconds.
func (c *Client) Tools(ctx context.Context, p agent.Principal) ([]llm.Tool, error) {
	lists := make([][]Tool, len(c.Servers))
	var wg sync.WaitGroup
	for i := range c.Servers {
		wg.Go(func() {
			srv := &c.Servers[i]
			ts, err := c.List(ctx, srv.Name, p)
			if errors.Is(err, ErrNotConnected) {
				lists[i] = []Tool{connectTool(srv)}
				return
			}
			if errors.Is(err, ErrRefreshUnavailable) {
				// p stays connected: offer what p's session listed last,
				// so that a call tells p to try again rather than the
				// model not knowing the tools.
				lists[i] = c.lastTools(srv.Name, p)
				return
			}
			if err != nil {
				c.Logger.Warn().Err(err).Str("mcp_server", srv.Name).Str("principal", p.String()).Msg("mcp server's tools are not offered")
				return
			}
			lists[i] = ts
		})
	}
	wg.Wait()
	var out []llm.Tool
	for _, ts := range lists {
		for _, t := range ts {
			if t.Disabled == "" {
				out = append(out, t.Spec)
			}
		}
	}
	return out, nil
}

// Tool is one tool of a server as Talon offers it.
type Tool struct {
	// Spec is what the model sees: the prefixed name, the capped
	// description and the input schema.
	Spec llm.Tool
	// Remote is the server's own name of the tool.
	Remote   string
	Hash     string
	ReadOnly bool
	// Disabled says why the tool is not offered ("" when it is).
	Disabled string
	// changed: disabled because it changed since it was approved.
	changed bool
}

// List returns the tools of server as p's session sees them now, disabled
// ones included (with why).
// For a server with auth: oauth it returns ErrNotConnected when p has not
// connected their account.
func (c *Client) List(ctx context.Context, server string, p agent.Principal) ([]Tool, error) {
	var tools []Tool
	err := c.withAuth(ctx, server, p, func(s *session) error {
		var err error
		tools, err = s.list(ctx, c)
		return err
	})
	return tools, err
}

// withAuth runs fn on p's session of server. For a server with auth:
// oauth it first makes sure p is connected, with an access token that is
// not about to expire, and when the server refuses the token (401) it
// refreshes it once (one refresh at a time per user and server) and runs
// fn again. It returns ErrNotConnected when p must connect.
func (c *Client) withAuth(ctx context.Context, server string, p agent.Principal, fn func(s *session) error) error {
	s, err := c.session(server, p)
	if err != nil {
		return err
	}
	defer s.release()
	if s.srv.Auth != AuthOAuth {
		return fn(s)
	}
	if c.OAuth == nil {
		return fmt.Errorf("mcp: %s uses oauth, which needs http.public_url", server)
	}
	conn, err := c.OAuth.ensure(ctx, s.srv, p)
	if err != nil {
		return err
	}
	s.unauth.Store(false)
	err = fn(s)
	if err == nil || !s.unauth.Swap(false) {
		return err
	}
	s.reset()
	if _, err := c.OAuth.refresh(ctx, s.srv, p, conn.RefreshedAt); err != nil {
		return err
	}
	err = fn(s)
	if err != nil && s.unauth.Swap(false) {
		// Refused again with a fresh token: the grant is gone.
		s.reset()
		c.OAuth.forget(ctx, s.srv, p)
		return ErrNotConnected
	}
	return err
}

// connectToolName is the tool offered in place of an OAuth server's tools
// to a user who has not connected it.
func connectToolName(server string) string { return server + "__connect_account" }

func connectTool(srv *Server) Tool {
	return Tool{
		Spec: llm.Tool{
			Name: connectToolName(srv.Name),
			Description: fmt.Sprintf("Connect the user's own %s account so that the tools of %s can act on it. "+
				"Call this when the user asks for something in %s: they are sent a private sign-in link, and the call "+
				"returns once they signed in; then the tools of %s are offered.", srv.Name, srv.Name, srv.Name, srv.Name),
			Parameters: json.RawMessage(`{"type":"object","properties":{}}`),
		},
		Remote:   "",
		ReadOnly: true,
	}
}

// connect sends p a private link to connect server and waits until they
// did, ctx ends or the link expires. ok is false (and res says why, for
// the model) when p is not connected.
func (c *Client) connect(ctx context.Context, call agent.ToolCall, srv *Server) (res agent.ToolResult, ok bool) {
	p := call.Key.Principal
	fail := func(format string, args ...any) (agent.ToolResult, bool) {
		return agent.ToolResult{IsError: true, Content: fmt.Sprintf(format, args...)}, false
	}
	if c.OAuth == nil {
		return fail("the MCP server %s needs each user to connect their account, and this gateway has no http.public_url for the sign-in", srv.Name)
	}
	if c.OAuth.Notifier == nil {
		return fail("the user has not connected their %s account; they can connect it with /talon connect %s, then ask again", srv.Name, srv.Name)
	}
	link, err := c.OAuth.Link(ctx, srv, p)
	if err != nil {
		c.Logger.Warn().Err(err).Str("mcp_server", srv.Name).Str("principal", p.String()).Msg("mcp: prepare a connect link")
		return fail("the user must connect their %s account, and Talon could not prepare the sign-in: %s", srv.Name, reason(err))
	}
	text := fmt.Sprintf("To let me use %s on your own account, connect it here (this link is for you only, works once and lasts %d minutes): %s",
		srv.Name, int(StateTTL/time.Minute), link)
	sent, err := c.OAuth.Notifier.NotifyPrivately(ctx, call.Key, call.Turn,
		agent.Notice{Text: text, Public: fmt.Sprintf("I've sent you a private link to connect %s.", srv.Name)})
	if err != nil || !sent {
		if err != nil {
			c.Logger.Warn().Err(err).Str("mcp_server", srv.Name).Str("principal", p.String()).Msg("mcp: send a connect link")
		}
		return fail("the user has not connected their %s account, and a private link cannot be shown to them here; they can connect with /talon connect %s (answered privately), then ask again", srv.Name, srv.Name)
	}
	wctx, cancel := context.WithTimeout(ctx, StateTTL)
	defer cancel()
	if err := c.OAuth.Wait(wctx, srv.Name, p); err != nil {
		return fail("the user was sent a private link to connect their %s account and has not used it yet; tell them to open it (it lasts %d minutes) and then ask again", srv.Name, int(StateTTL/time.Minute))
	}
	return agent.ToolResult{}, true
}

// Run calls one tool. It returns an error only for a name that is not one
// of c's; a call that fails, is refused or is not approved is a result
// with IsError and a message for the model.
func (c *Client) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	srv, ok := c.serverOf(call.Name)
	if !ok {
		return agent.ToolResult{}, fmt.Errorf("%w: tool %q", ErrUnknownServer, call.Name)
	}
	fail := func(format string, args ...any) (agent.ToolResult, error) {
		return agent.ToolResult{IsError: true, Content: fmt.Sprintf(format, args...)}, nil
	}
	p := call.Key.Principal
	if srv.Auth == AuthOAuth && call.Name == connectToolName(srv.Name) {
		if c.OAuth != nil {
			if _, ok, err := c.OAuth.Connection(ctx, srv.Name, p); err == nil && ok {
				return agent.ToolResult{Content: fmt.Sprintf("The user's %s account is connected; the tools of %s are offered.", srv.Name, srv.Name), ToolsChanged: true}, nil
			}
		}
		if res, ok := c.connect(ctx, call, srv); !ok {
			return res, nil
		}
		return agent.ToolResult{Content: fmt.Sprintf("The user connected their %s account; the tools of %s are offered now.", srv.Name, srv.Name), ToolsChanged: true}, nil
	}
	tools, err := c.List(ctx, srv.Name, p)
	if errors.Is(err, ErrNotConnected) {
		if res, ok := c.connect(ctx, call, srv); !ok {
			return res, nil
		}
		tools, err = c.List(ctx, srv.Name, p)
	}
	if errors.Is(err, ErrNotConnected) {
		return fail("the user's %s account is not connected; they can connect it with /talon connect %s", srv.Name, srv.Name)
	}
	if errors.Is(err, ErrRefreshUnavailable) {
		return refreshUnavailable(srv, err), nil
	}
	if err != nil {
		return fail("the MCP server %s cannot be reached: %s", srv.Name, reason(err))
	}
	var tool *Tool
	for i := range tools {
		if tools[i].Spec.Name == call.Name {
			tool = &tools[i]
		}
	}
	switch {
	case tool == nil:
		return fail("the MCP server %s no longer offers the tool %s", srv.Name, call.Name)
	case tool.Disabled != "":
		return fail("the tool %s is disabled: %s", call.Name, tool.Disabled)
	}

	var why string
	switch {
	case call.Taint != "":
		why = "the conversation read untrusted content (" + call.Taint + ")"
	case srv.approval() == ApproveAlways:
		why = "the server's tools always ask"
	case srv.approval() == ApproveWrites && !tool.ReadOnly:
		why = "the tool is not marked read-only"
	}
	if why != "" {
		if c.Approver == nil {
			return fail("the tool %s needs the user's approval and none can be asked", call.Name)
		}
		req := agent.ApprovalRequest{Key: call.Key, Turn: call.Turn, CallID: call.ID, Tool: call.Name,
			Description: "run MCP tool " + call.Name, Args: call.Args}
		if call.Taint != "" {
			req.Reason = why
		}
		ok, err := c.Approver.RequestApproval(ctx, req)
		if err != nil {
			return agent.ToolResult{}, fmt.Errorf("mcp: approve %s: %w", call.Name, err)
		}
		if !ok {
			return fail("the user did not approve this call of %s", call.Name)
		}
	}

	cctx, cancel := context.WithTimeout(ctx, srv.timeout())
	defer cancel()
	params := &sdk.CallToolParams{Name: tool.Remote, Arguments: call.Args}
	if c.Status != nil && call.ID != "" {
		token := srv.Name + "/" + call.ID
		params.SetProgressToken(token)
		c.progress.Store(token, call)
		defer c.progress.Delete(token)
	}
	var (
		res     *sdk.CallToolResult
		connErr error
	)
	err = c.withAuth(cctx, srv.Name, p, func(s *session) error {
		cs, err := s.conn(cctx, c)
		if err != nil {
			connErr = err
			return err
		}
		connErr = nil
		res, err = cs.CallTool(cctx, params)
		if err != nil && cctx.Err() == nil {
			var de *egress.DeniedError
			if !errors.As(err, &de) {
				// The session may be broken; the next call opens a new one.
				s.drop(cs)
			}
		}
		return err
	})
	if errors.Is(err, ErrNotConnected) {
		// The provider refused the refresh token: the user connects again,
		// through a private link, and the call runs once more.
		if res, ok := c.connect(ctx, call, srv); !ok {
			return res, nil
		}
		connErr = nil
		err = c.withAuth(cctx, srv.Name, p, func(s *session) error {
			cs, err := s.conn(cctx, c)
			if err != nil {
				connErr = err
				return err
			}
			res, err = cs.CallTool(cctx, params)
			return err
		})
		if errors.Is(err, ErrNotConnected) {
			return fail("the user's %s account is no longer connected (the provider refused its token); they can connect it again with /talon connect %s", srv.Name, srv.Name)
		}
	}
	if errors.Is(err, ErrRefreshUnavailable) {
		return refreshUnavailable(srv, err), nil
	}
	if connErr != nil {
		return fail("the MCP server %s cannot be reached: %s", srv.Name, reason(connErr))
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fail("the call of %s was cancelled: the turn ran out of time", call.Name)
		case cctx.Err() != nil:
			return fail("the MCP server %s did not answer within %s; the call was cancelled", srv.Name, srv.timeout())
		}
		return fail("the call of %s failed: %s", call.Name, reason(err))
	}
	return agent.ToolResult{
		Content: resultText(res, srv.maxResult()),
		IsError: res.IsError,
		Taint:   "MCP server " + srv.Name,
	}, nil
}

// Approve approves the current description and schema of every tool of
// server, re-enabling those disabled because they changed.
func (c *Client) Approve(ctx context.Context, server string) (int, error) {
	if _, ok := c.Server(server); !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownServer, server)
	}
	if c.Pins == nil {
		return 0, errors.New("mcp: no store for tool pins")
	}
	n, err := c.Pins.ApproveTools(ctx, server)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	for k, s := range c.sessions {
		if k.server == server {
			s.invalidate()
		}
	}
	c.mu.Unlock()
	return n, nil
}

// Disconnect revokes and deletes p's connection to server (auth: oauth)
// and closes p's session of it. It reports whether there was a connection
// and whether the provider accepted the revocation.
func (c *Client) Disconnect(ctx context.Context, server string, p agent.Principal) (had, revoked bool, err error) {
	srv, ok := c.Server(server)
	if !ok || srv.Auth != AuthOAuth || c.OAuth == nil {
		return false, false, fmt.Errorf("%w: %q uses no oauth", ErrUnknownServer, server)
	}
	had, revoked, err = c.OAuth.Disconnect(ctx, srv, p)
	c.mu.Lock()
	s := c.sessions[sessionKey{server: server, user: p}]
	c.mu.Unlock()
	if s != nil {
		s.reset()
	}
	return had, revoked, err
}

// Close ends every session.
func (c *Client) Close() error {
	c.mu.Lock()
	ss := c.sessions
	c.sessions, c.closed = nil, true
	sweeping, swept := c.sweeping, c.swept
	c.sweeping = nil
	c.mu.Unlock()
	if sweeping != nil {
		close(sweeping)
		<-swept
	}
	for _, s := range ss {
		s.close()
	}
	return nil
}

func (c *Client) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return DefaultIdleTimeout
}

// sweep closes the sessions idle longer than IdleTimeout, every quarter
// of it (at most every minute), until stop is closed.
func (c *Client) sweep(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := min(max(c.idleTimeout()/4, 10*time.Millisecond), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for _, s := range c.idle(time.Now().Add(-c.idleTimeout())) {
			s.close() // may wait on the network: never under c.mu
		}
	}
}

// idle removes and returns the sessions not in use and last used before
// cutoff.
func (c *Client) idle(cutoff time.Time) []*session {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*session
	for k, s := range c.sessions {
		if s.busy.Load() == 0 && s.used.Load() < cutoff.UnixNano() {
			delete(c.sessions, k)
			out = append(out, s)
		}
	}
	return out
}

// session returns p's session of server, creating it (not yet connected)
// if needed, marked in use until its release. Beyond MaxSessions the least
// recently used one not in use is closed.
func (c *Client) session(server string, p agent.Principal) (*session, error) {
	srv, ok := c.Server(server)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownServer, server)
	}
	s, evicted, err := c.sessionLocked(srv, p)
	if evicted != nil {
		evicted.close() // may wait on the network: never under c.mu
	}
	return s, err
}

func (c *Client) sessionLocked(srv *Server, p agent.Principal) (s, evicted *session, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, errors.New("mcp: client closed")
	}
	if c.sessions == nil {
		c.sessions = map[sessionKey]*session{}
	}
	if c.sweeping == nil {
		c.sweeping, c.swept = make(chan struct{}), make(chan struct{})
		go c.sweep(c.sweeping, c.swept)
	}
	k := sessionKey{server: srv.Name, user: p}
	s = c.sessions[k]
	if s == nil {
		limit := c.MaxSessions
		if limit <= 0 {
			limit = DefaultMaxSessions
		}
		if len(c.sessions) >= limit {
			var oldest *session
			var oldestKey sessionKey
			for k, s := range c.sessions {
				if s.busy.Load() == 0 && (oldest == nil || s.used.Load() < oldest.used.Load()) {
					oldest, oldestKey = s, k
				}
			}
			if oldest != nil {
				evicted = oldest
				delete(c.sessions, oldestKey)
			}
		}
		s = &session{srv: srv, user: p}
		c.sessions[k] = s
	}
	s.busy.Add(1)
	s.touch()
	return s, evicted, nil
}

func (c *Client) onProgress(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
	if c.Status == nil || req == nil || req.Params == nil {
		return
	}
	tok, _ := req.Params.ProgressToken.(string)
	v, ok := c.progress.Load(tok)
	if !ok {
		return
	}
	text := ""
	if req.Params.Total > 0 {
		text = fmt.Sprintf("%.0f%%", 100*req.Params.Progress/req.Params.Total)
	}
	if m := clip(oneLine(req.Params.Message), 120); m != "" {
		if text != "" {
			text += " — "
		}
		text += m
	}
	if text != "" {
		c.Status(v.(agent.ToolCall), text)
	}
}

// refreshUnavailable tells the model that p's access could not be renewed
// now, and that p should try again, not reconnect.
func refreshUnavailable(srv *Server, err error) agent.ToolResult {
	detail := "no answer"
	var re *RefreshError
	if errors.As(err, &re) {
		detail = re.Detail
	}
	return agent.ToolResult{IsError: true, Content: fmt.Sprintf("the sign-in provider of %s could not renew the user's access just now (%s). "+
		"Their account is still connected: tell them to try again in a minute; they do not need to connect it again.", srv.Name, detail)}
}

// lastTools is what p's session of server listed last, without the
// disabled tools; nil when it listed nothing.
func (c *Client) lastTools(server string, p agent.Principal) []Tool {
	c.mu.Lock()
	s := c.sessions[sessionKey{server: server, user: p}]
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tools
}

// reason is err's message for the model: an egress refusal as the broker
// says it, anything else as the SDK says it, one line and bounded.
func reason(err error) string {
	var de *egress.DeniedError
	if errors.As(err, &de) {
		return clip(de.Error(), 500)
	}
	return clip(oneLine(err.Error()), 500)
}
