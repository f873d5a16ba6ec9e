package sandbox

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
)

// Caps of the host functions (ABI.md).
const (
	maxHTTPRequestJSON = 8 << 20
	maxLogMessage      = 1 << 10
	maxLogsPerCall     = 64
	maxSecretName      = 256
)

// host holds what the host functions need. The per-call state travels in
// the call's context (callState).
type host struct {
	egress   Egress
	secrets  Secrets
	approver Approver
	logger   zerolog.Logger
	redactor Redactor
	taint    *egress.Taint
}

// callState is the state of one call, reached by the host functions
// through the context of talon_call. It is used only by the goroutine that
// runs the call.
type callState struct {
	tool      *loaded
	principal agent.Principal
	key       agent.SessionKey
	turn      agent.TurnID
	callID    string
	// taint is the source of the turn's taint when the call was made
	// (agent.ToolCall.Taint), "" for an untainted turn.
	taint string
	// untrusted is the host of the first untrusted response the call
	// received: its result taints the turn.
	untrusted string
	// refused is set when the owner refused a request of the call that
	// would have sent data out of a tainted turn: the call's result is
	// then the refusal alone, whatever the tool made of it (a tool
	// quoting the URL it was refused would hand the data back).
	refused bool

	// budget is the call's deadline, paused while a person is asked to
	// approve a request.
	budget *budget

	httpRequests int
	pending      []byte
	logs         int
	// fault is set when the guest broke the ABI; the call then fails with
	// ErrGuestFault whatever the guest does next.
	fault string
}

type callKey struct{}

func stateFrom(ctx context.Context) *callState {
	st, _ := ctx.Value(callKey{}).(*callState)
	return st
}

// guestFault aborts the running call. wazero recovers the panic of a host
// function and returns it as the error of the guest's call; the reason is
// also recorded in the call state so classification never depends on how
// wazero wraps it.
func guestFault(st *callState, reason string) {
	if st != nil && st.fault == "" {
		st.fault = reason
	}
	panic(&CallError{Kind: ErrGuestFault, Reason: reason})
}

// read returns a copy of guest memory [ptr, ptr+n), or faults.
func read(st *callState, mod api.Module, fn string, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		guestFault(st, fn+": range outside guest memory")
	}
	return bytes.Clone(b)
}

func hostBuilder(r wazero.Runtime, h *host) wazero.HostModuleBuilder {
	if h == nil {
		h = &host{logger: zerolog.Nop()}
	}
	i32 := api.ValueTypeI32
	b := r.NewHostModuleBuilder(hostModule)
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.httpRequest),
		[]api.ValueType{i32, i32}, []api.ValueType{i32}).WithParameterNames("ptr", "len").Export("http_request")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.resultRead),
		[]api.ValueType{i32, i32}, []api.ValueType{i32}).WithParameterNames("ptr", "len").Export("result_read")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.log),
		[]api.ValueType{i32, i32, i32}, nil).WithParameterNames("level", "ptr", "len").Export("log")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.hasSecret),
		[]api.ValueType{i32, i32}, []api.ValueType{i32}).WithParameterNames("ptr", "len").Export("has_secret")
	return b
}

type httpError struct {
	Error struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"error"`
}

func errorResult(kind, msg string) []byte {
	var e httpError
	e.Error.Kind, e.Error.Message = kind, msg
	b, _ := json.Marshal(e) // cannot fail: two strings
	return b
}

// httpRequest is talon.http_request(ptr, len) -> i32.
func (h *host) httpRequest(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateFrom(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if n > maxHTTPRequestJSON {
		guestFault(st, "http_request: length above 8 MiB")
	}
	in := read(st, mod, "http_request", ptr, n)
	res := h.doHTTP(ctx, st, in)
	if st != nil {
		st.pending = res
	}
	stack[0] = api.EncodeI32(int32(len(res)))
}

func (h *host) doHTTP(ctx context.Context, st *callState, in []byte) []byte {
	if st == nil {
		return errorResult("invalid", "no tool call in progress")
	}
	lim := st.tool.manifest.Limits.MaxHTTPRequests
	if st.httpRequests >= lim {
		return errorResult("limit", "too many HTTP requests in this call")
	}
	st.httpRequests++

	var req egress.Request
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return errorResult("invalid", "the request JSON could not be read")
	}
	if req.Method == "" {
		req.Method = "GET"
	}
	req.Method = strings.ToUpper(req.Method)

	approved := false
	if st.taint != "" {
		if why := h.taint.Check(st.tool.policy, req.Method, req.URL, req.Body); why != "" {
			if st.budget != nil && !st.budget.pause() {
				return errorResult("network", "the request timed out")
			}
			target, path := describeData(req.URL)
			ok := h.approve(ctx, ApprovalRequest{
				Tool: st.tool.manifest.Name, Principal: st.principal, Key: st.key, Turn: st.turn, CallID: st.callID,
				Description: "send data " + digest(req) + ": " + describeMethod(req.Method) + " " + describeURL(req.URL),
				Method:      describeMethod(req.Method), Host: target, Path: path,
				Reason:   "this conversation read untrusted content (" + st.taint + "), and " + why,
				URLBytes: len(req.URL), BodyBytes: len(req.Body),
			})
			if st.budget != nil {
				st.budget.resume()
			}
			if !ok {
				st.refused = true
				return errorResult("approval", refusedData)
			}
			approved = true
		}
	}
	if !approved && st.tool.manifest.Approval == ApproveNonGet && req.Method != "GET" && req.Method != "HEAD" {
		// The deadline does not run while the person decides.
		if st.budget != nil && !st.budget.pause() {
			return errorResult("network", "the request timed out")
		}
		target, path := describeRequest(req.URL)
		ok := h.approve(ctx, ApprovalRequest{
			Tool: st.tool.manifest.Name, Principal: st.principal, Key: st.key, Turn: st.turn, CallID: st.callID,
			Description: describeMethod(req.Method) + " " + describeURL(req.URL),
			Method:      describeMethod(req.Method), Host: target, Path: path,
		})
		if st.budget != nil {
			st.budget.resume()
		}
		if !ok {
			return errorResult("approval", "the user did not approve this request")
		}
	}
	if h.egress == nil {
		return errorResult("denied", "this Talon has no network access for tools")
	}
	resp, err := h.egress.Do(ctx, egress.Caller{
		Tool: st.tool.manifest.Name, Principal: st.principal, Policy: st.tool.policy,
		Tainted: st.taint, Approved: approved,
	}, req)
	if err != nil {
		var denied *egress.DeniedError
		switch {
		case errors.As(err, &denied):
			return errorResult("denied", denied.Error())
		case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
			return errorResult("network", "the request timed out")
		default:
			// Never the error text: it may carry the URL with an injected
			// credential.
			return errorResult("network", "the request failed")
		}
	}
	if resp == nil {
		return errorResult("network", "the request failed")
	}
	if st.untrusted == "" {
		final := cmp.Or(resp.URL, req.URL)
		if h.taint.Untrusted(st.tool.policy, req.Method, final) {
			st.untrusted, _ = describeRequest(final)
			st.untrusted = cmp.Or(st.untrusted, "an unknown host")
		}
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return errorResult("network", "the response could not be encoded")
	}
	return out
}

// refusedData is what the model is told of a request its owner refused in
// a tainted turn: that they refused it, never what it carried.
const refusedData = "the user refused this request: it would have sent data out of a conversation " +
	"that read untrusted content. Do not send it another way; tell the user what you wanted to send, and where, and why."

// digest tells apart the requests of one call in their approvals: a short
// hash of the method, URL and body (which are not shown whole).
func digest(req egress.Request) string {
	h := sha256.New()
	h.Write([]byte(req.Method + "\x00" + req.URL + "\x00" + req.Body))
	return "#" + hex.EncodeToString(h.Sum(nil)[:4])
}

// describeData is the host (with its port when the URL names one) and the
// path of a request's URL with its query, values included: what a request
// of a tainted turn would send, for its owner to see. Never the user info.
// Both are "" for a URL that does not parse.
func describeData(raw string) (host, path string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", ""
	}
	path = u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return strings.ToLower(u.Host), truncate(path, 1000)
}

func (h *host) approve(ctx context.Context, req ApprovalRequest) bool {
	if h.approver == nil {
		return false
	}
	ok, err := h.approver.Approve(ctx, req)
	return err == nil && ok
}

// describeURL is scheme://host/path, without query or user info, cut
// short. A URL that does not parse is not shown: it may carry anything.
func describeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(an invalid URL)"
	}
	return truncate(u.Scheme+"://"+u.Host+u.EscapedPath(), 200)
}

// describeMethod is an HTTP method as a person is shown it: a token of
// letters, or "(invalid)" for anything else (the broker refuses it
// anyway, after the person was asked).
func describeMethod(m string) string {
	if m == "" || len(m) > 16 || strings.TrimFunc(m, func(r rune) bool { return r >= 'A' && r <= 'Z' }) != "" {
		return "(invalid)"
	}
	return m
}

// describeRequest is the host (with its port when the URL names one) and
// the path of a request's URL, for an approval: never the user info, and
// of the query only the names, each followed by "=…", so that a value
// (which may be a token) is never shown. Both are "" for a URL that does
// not parse.
func describeRequest(raw string) (host, path string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", ""
	}
	path = u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		var names []string
		for part := range strings.SplitSeq(u.RawQuery, "&") {
			name, _, _ := strings.Cut(part, "=")
			if n, err := url.QueryUnescape(name); err == nil && n != "" {
				names = append(names, url.QueryEscape(n)+"=…")
			}
		}
		if len(names) > 0 {
			path += "?" + strings.Join(names, "&")
		}
	}
	return strings.ToLower(u.Host), truncate(path, 400)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// resultRead is talon.result_read(ptr, len) -> i32.
func (h *host) resultRead(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateFrom(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if uint64(ptr)+uint64(n) > uint64(mod.Memory().Size()) {
		guestFault(st, "result_read: range outside guest memory")
	}
	if st == nil {
		stack[0] = 0
		return
	}
	c := min(int(n), len(st.pending))
	if !mod.Memory().Write(ptr, st.pending[:c]) {
		guestFault(st, "result_read: range outside guest memory")
	}
	st.pending = nil
	stack[0] = api.EncodeI32(int32(c))
}

// log is talon.log(level, ptr, len).
func (h *host) log(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateFrom(ctx)
	level, ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	if level > 3 {
		guestFault(st, "log: level out of range")
	}
	if uint64(ptr)+uint64(n) > uint64(mod.Memory().Size()) {
		guestFault(st, "log: range outside guest memory")
	}
	if st == nil {
		return
	}
	st.logs++
	if st.logs > maxLogsPerCall {
		return
	}
	ev := h.logger.Debug()
	if !ev.Enabled() {
		return // nothing is written: not even scanned
	}
	msg := strings.ToValidUTF8(string(read(st, mod, "log", ptr, min(n, maxLogMessage))), "\uFFFD")
	// The text is the guest's, and may carry the user's secrets (a tool
	// logging the response of a request that echoed its credential):
	// debug level only, capped, valid UTF-8, and scanned first.
	if h.redactor == nil {
		ev = ev.Bool("guest_msg_withheld", true)
	} else {
		var found int
		msg, found = h.redactor.Redact(ctx, st.principal, msg)
		ev = ev.Str("guest_msg", msg)
		if found > 0 {
			ev = ev.Int("guest_msg_redacted", found)
		}
	}
	ev.Str("tool", st.tool.manifest.Name).
		Str("guest_level", [...]string{"debug", "info", "warn", "error"}[level]).
		Msg("tool log")
}

// hasSecret is talon.has_secret(ptr, len) -> i32.
func (h *host) hasSecret(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateFrom(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if n > maxSecretName {
		guestFault(st, "has_secret: name longer than 256 bytes")
	}
	name := string(read(st, mod, "has_secret", ptr, n))
	stack[0] = 0
	if st == nil || h.secrets == nil {
		return
	}
	for _, c := range st.tool.manifest.Credentials {
		if c == name {
			if h.secrets.Has(ctx, st.principal, name) {
				stack[0] = 1
			}
			return
		}
	}
}
