package mcp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/mcp"
	"github.com/talonhq/talon/sandbox/egress"
)

// The token the fake vault injects for user A; it must reach the server and
// nothing the model reads.
const tokenA = "mcp-token-of-user-a-7f3c9e1d"

var (
	userA = agent.Principal{Platform: "terminal", Workspace: "local", User: "a"}
	userB = agent.Principal{Platform: "terminal", Workspace: "local", User: "b"}
)

// fakeServer is an MCP server built with the SDK's server side, on
// loopback TLS.
type fakeServer struct {
	*httptest.Server
	mcp      *sdk.Server
	sessions atomic.Int32 // distinct session ids seen
	deletes  atomic.Int32 // DELETE requests (a client ending its session)
	cancels  chan struct{}
	mu       sync.Mutex
	auth     []string        // Authorization headers seen, guarded by mu
	ids      map[string]bool // session ids seen, guarded by mu
}

type searchIn struct {
	Query string `json:"query"`
}

func newFakeServer(t testing.TB, opts *sdk.ServerOptions) *fakeServer {
	t.Helper()
	f := &fakeServer{cancels: make(chan struct{}, 4), ids: map[string]bool{}}
	f.mcp = sdk.NewServer(&sdk.Implementation{Name: "fake", Version: "1"}, opts)
	sdk.AddTool(f.mcp, &sdk.Tool{Name: "search", Description: "Search issues.", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *sdk.CallToolRequest, in searchIn) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "found: " + in.Query}}}, nil, nil
		})
	type issue struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	sdk.AddTool(f.mcp, &sdk.Tool{Name: "create_issue", Description: "Create an issue."},
		func(ctx context.Context, req *sdk.CallToolRequest, in struct {
			Title string `json:"title"`
		}) (*sdk.CallToolResult, issue, error) {
			return nil, issue{ID: "ISS-1", Title: in.Title}, nil
		})
	sdk.AddTool(f.mcp, &sdk.Tool{Name: "echo.headers", Description: "Echo the request's headers.", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, any, error) {
			var lines []string
			for k, v := range req.Extra.Header {
				lines = append(lines, k+": "+strings.Join(v, ","))
			}
			sort.Strings(lines)
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strings.Join(lines, "\n")}}}, nil, nil
		})
	sdk.AddTool(f.mcp, &sdk.Tool{Name: "slow", Description: "Take a long time.", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, any, error) {
			if tok := req.Params.GetProgressToken(); tok != nil {
				_ = req.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2, Message: "halfway\nthere"})
			}
			<-ctx.Done()
			f.cancels <- struct{}{}
			return nil, nil, ctx.Err()
		})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return f.mcp }, nil)
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		if r.Method == http.MethodDelete {
			f.deletes.Add(1)
		}
		if id := r.Header.Get("Mcp-Session-Id"); id != "" && !f.ids[id] {
			f.ids[id] = true
			f.sessions.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) authSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auth...)
}

// vault is a fake egress.CredentialSource: user A has an entry "linear"
// bound to one host:port, user B has none.
type vault struct {
	hostPort string
}

type bearer string

func (b bearer) Apply(h http.Header, _ *url.URL) { h.Set("Authorization", "Bearer "+string(b)) }
func (b bearer) Secrets() [][]byte               { return [][]byte{[]byte(b)} }

func (v vault) Credential(_ context.Context, c egress.Caller, name, hostPort string) (egress.Credential, error) {
	if c.Principal == userA && name == "linear" && hostPort == v.hostPort {
		return bearer(tokenA), nil
	}
	return nil, fmt.Errorf("fake vault: %w", egress.ErrNoCredential)
}

// approver records what it was asked and answers yes or no.
type approver struct {
	mu    sync.Mutex
	yes   bool
	asked []agent.ApprovalRequest // guarded by mu
}

func (a *approver) RequestApproval(_ context.Context, req agent.ApprovalRequest) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, req)
	return a.yes, nil
}

func (a *approver) requests() []agent.ApprovalRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]agent.ApprovalRequest(nil), a.asked...)
}

// memPins keeps pins in memory, as the store does on disk.
type memPins struct {
	mu   sync.Mutex
	pins map[string]mcp.ToolPin // server/tool → pin, guarded by mu
}

func (m *memPins) SeeTool(_ context.Context, server string, t mcp.ToolPin) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pins == nil {
		m.pins = map[string]mcp.ToolPin{}
	}
	old, ok := m.pins[server+"/"+t.Tool]
	t.Approved = t.Hash
	if ok {
		t.Approved = old.Approved
	}
	m.pins[server+"/"+t.Tool] = t
	return t.Approved, nil
}

func (m *memPins) ApproveTools(_ context.Context, server string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, p := range m.pins {
		if strings.HasPrefix(k, server+"/") && p.Approved != p.Hash {
			p.Approved = p.Hash
			m.pins[k] = p
			n++
		}
	}
	return n, nil
}

func (m *memPins) ToolPins(_ context.Context, server string) ([]mcp.ToolPin, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []mcp.ToolPin
	for k, p := range m.pins {
		if strings.HasPrefix(k, server+"/") {
			out = append(out, p)
		}
	}
	return out, nil
}

// logBuf collects log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newClient returns a client for the servers, through a real egress broker
// that trusts the test CA and may reach 127.0.0.1 only.
func newClient(t testing.TB, srv *httptest.Server, servers ...mcp.Server) (*mcp.Client, *approver, *logBuf) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	u, _ := url.Parse(srv.URL)
	b := &egress.Broker{
		AllowPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		TLSConfig:    &tls.Config{RootCAs: pool},
		Credentials:  vault{hostPort: u.Host},
	}
	t.Cleanup(b.CloseIdleConnections)
	for i := range servers {
		if servers[i].URL == "" {
			servers[i].URL = srv.URL + "/mcp"
		}
		if err := servers[i].Validate(); err != nil {
			t.Fatalf("server %s: %v", servers[i].Name, err)
		}
	}
	ap := &approver{yes: true}
	logs := &logBuf{}
	c := &mcp.Client{Servers: servers, Egress: b, Approver: ap, Pins: &memPins{}, Logger: zerolog.New(logs)}
	t.Cleanup(func() { _ = c.Close() })
	return c, ap, logs
}

func call(name, args string) agent.ToolCall {
	return agent.ToolCall{ID: "call-1", Name: name, Args: json.RawMessage(args), Key: agent.SessionKey{Principal: userA}, Turn: 7}
}

func callAs(p agent.Principal, name, args string) agent.ToolCall {
	c := call(name, args)
	c.Key.Principal = p
	return c
}

// eventually waits for cond, failing after a generous bound; for
// notifications that arrive asynchronously.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// hostile is a hand-written MCP server (streamable HTTP, JSON responses)
// that misbehaves as told: it answers initialize normally, then tools/list
// with tools and tools/call with call.
type hostile struct {
	tools func(cursor string) (tools []map[string]any, next string)
	call  func(w http.ResponseWriter, r *http.Request, id json.RawMessage)
}

func (h *hostile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "no stream", http.StatusMethodNotAllowed)
		return
	}
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Cursor string `json:"cursor"`
		} `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	if req.ID == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	reply := func(result any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Mcp-Session-Id", "hostile-1")
		_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}
	switch req.Method {
	case "initialize":
		reply(map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{"tools": map[string]any{}},
			"serverInfo": map[string]any{"name": "hostile", "version": "1"}})
	case "tools/list":
		tools, next := h.tools(req.Params.Cursor)
		res := map[string]any{"tools": tools}
		if next != "" {
			res["nextCursor"] = next
		}
		reply(res)
	case "tools/call":
		h.call(w, r, req.ID)
	default:
		reply(map[string]any{})
	}
}

func objectSchema() map[string]any {
	return map[string]any{"type": "object", "properties": map[string]any{}}
}

func portOf(srv *httptest.Server) int {
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	n, _ := strconv.Atoi(p)
	return n
}
