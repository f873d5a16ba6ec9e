package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Backoff bounds for retries without a Retry-After.
const (
	backoffBase = 500 * time.Millisecond
	backoffCap  = 15 * time.Second
)

// SleepFunc waits for d or until ctx is done, whichever comes first, and
// returns ctx's error in the second case. Providers use it between retries;
// tests replace it so they never wait.
type SleepFunc func(ctx context.Context, d time.Duration) error

// sleepTimer is the SleepFunc used when none is injected.
func sleepTimer(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// failure is one failed attempt, classified, before it becomes an *Error.
// Its err is written by this package and safe to show: it never holds the
// API key, the prompt, the reply or the provider's free-text message.
type failure struct {
	kind       ErrorKind
	status     int
	retryAfter time.Duration
	retryable  bool
	err        error
}

// caller runs attempts with retries and turns the last failure into an
// *Error. It holds no mutable state.
type caller struct {
	provider string // "openai", "anthropic"
	keyHint  string // where the operator sets the key
	cfg      Config
}

// do calls attempt until it succeeds, fails for good, or retries run out.
// Each attempt gets its own deadline of cfg.Timeout.
func (c caller) do(ctx context.Context, sleep SleepFunc, attempt func(ctx context.Context) (*Response, *failure)) (*Response, error) {
	if sleep == nil {
		sleep = sleepTimer
	}
	for n := 0; ; n++ {
		actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		resp, f := attempt(actx)
		cancel()
		if f == nil {
			return resp, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, c.finalError(contextFailure(err))
		}
		if !f.retryable || n >= c.cfg.MaxRetries {
			return nil, c.finalError(f)
		}
		if err := sleep(ctx, retryDelay(n, f.retryAfter)); err != nil {
			return nil, c.finalError(contextFailure(err))
		}
	}
}

// retryDelay is how long to wait before retry n+1: the provider's
// Retry-After when it gave one (capped at MaxRetryAfter), otherwise capped
// exponential backoff with jitter.
func retryDelay(n int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, MaxRetryAfter)
	}
	d := backoffCap
	if n < 16 {
		d = min(backoffBase<<n, backoffCap)
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// parseRetryAfter reads retry-after-ms, then Retry-After (seconds or an
// HTTP date relative to now). It returns 0 when neither says anything
// usable. The result is capped at MaxRetryAfter.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if h == nil {
		return 0
	}
	seconds := func(v string, unit time.Duration) (time.Duration, bool) {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || f <= 0 {
			return 0, false
		}
		if f*float64(unit) >= float64(MaxRetryAfter) {
			return MaxRetryAfter, true
		}
		return time.Duration(f * float64(unit)), true
	}
	if d, ok := seconds(h.Get("Retry-After-Ms"), time.Millisecond); ok {
		return d
	}
	v := h.Get("Retry-After")
	if d, ok := seconds(v, time.Second); ok {
		return d
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, MaxRetryAfter)
		}
	}
	return 0
}

// finalError turns the last failure into the *Error the caller gets, with
// the operator's hint.
func (c caller) finalError(f *failure) *Error {
	err := f.err
	if err != nil {
		// Defence in depth: nothing we build should hold the key or a
		// header's value, but a transport error could echo a URL or a
		// server its request. Short values only as whole tokens: a key
		// "x" must not turn every "x" of the message into "[redacted]".
		if msg := err.Error(); redactSecrets(msg, c.secrets()...) != msg {
			err = errors.New(redactSecrets(msg, c.secrets()...))
		}
	}
	return &Error{
		Kind:       f.kind,
		Provider:   c.provider,
		Status:     f.status,
		RetryAfter: f.retryAfter,
		// The hint names the base URL, which could hold a key in its path.
		Hint: redactSecrets(c.hint(f.kind), c.secrets()...),
		Err:  err,
	}
}

// secrets are the configured values redacted from errors: the API key and
// the headers' values.
func (c caller) secrets() []string {
	secrets := make([]string, 0, 1+len(c.cfg.Headers))
	secrets = append(secrets, c.cfg.APIKey)
	for _, v := range c.cfg.Headers {
		secrets = append(secrets, v)
	}
	return secrets
}

func (c caller) hint(k ErrorKind) string {
	base := c.cfg.baseURLForErrors()
	switch k {
	case ErrAuth:
		return fmt.Sprintf("check the API key (%s)", c.keyHint)
	case ErrModel:
		return fmt.Sprintf("check llm.model; the endpoint does not serve %q (or llm.base_url is wrong)", c.cfg.Model)
	case ErrUnreachable:
		return fmt.Sprintf("is the endpoint running at %s?", base)
	case ErrTimeout:
		return fmt.Sprintf("the model did not answer in time (llm.timeout is %s per attempt); raise it, shorten the turn's work or use a faster model", c.cfg.Timeout)
	case ErrRateLimit:
		return "the provider is still rate limiting after retries; lower the load or raise the account's quota"
	case ErrServer:
		return "the provider is failing; try again later or check its status page"
	case ErrBadResponse:
		return fmt.Sprintf("the endpoint at %s did not answer like the %s API; check llm.base_url and llm.provider", base, c.provider)
	case ErrBadRequest:
		return "the provider refused the request; check llm.model, llm.max_tokens and the tools' schemas"
	}
	return ""
}

// invalidRequest is a request we refuse to send.
func invalidRequest(format string, args ...any) *failure {
	return &failure{kind: ErrBadRequest, err: fmt.Errorf(format, args...)}
}

// contextFailure classifies the end of the caller's context.
func contextFailure(err error) *failure {
	if errors.Is(err, context.DeadlineExceeded) {
		return &failure{kind: ErrTimeout, err: context.DeadlineExceeded}
	}
	return &failure{kind: ErrUnknown, err: err}
}

// classify turns what an HTTP or SDK call returned into a failure. res is
// the HTTP response of the attempt if there was one (its body is the
// buffered error body when the status is an error).
func classify(err error, res *http.Response, now time.Time) *failure {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return contextFailure(err)
	}
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return &failure{kind: ErrTimeout, err: context.DeadlineExceeded}
	}
	if res != nil && res.StatusCode >= 400 {
		var body []byte
		if res.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(res.Body, 64<<10))
		}
		return statusFailure(res.StatusCode, res.Header, body, now)
	}
	if res == nil {
		return &failure{kind: ErrUnreachable, retryable: true, err: transportCause(err)}
	}
	if brokenConnection(err) {
		return &failure{kind: ErrServer, status: res.StatusCode, retryable: true,
			err: fmt.Errorf("connection closed while reading the answer: %w", transportCause(err))}
	}
	return badBody(res)
}

// badBody reports a success status with a body we cannot read.
func badBody(res *http.Response) *failure {
	if res == nil {
		return &failure{kind: ErrBadResponse, err: errors.New("no response")}
	}
	ct := res.Header.Get("Content-Type")
	if len(ct) > 64 {
		ct = ct[:64]
	}
	return &failure{kind: ErrBadResponse, status: res.StatusCode,
		err: fmt.Errorf("unreadable response body (content-type %q)", ct)}
}

// brokenConnection reports whether err says the connection failed rather
// than the body being malformed.
func brokenConnection(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, &ne)
}

// transportCause strips the *url.Error wrapper (whose URL we do not want in
// errors) and keeps the network cause.
func transportCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	return errors.New("connection failed")
}

// apiErrorInfo is what we read from an error body of either API shape:
// OpenAI {"error":{"message","type","code"}}, Anthropic
// {"type":"error","error":{"type","message"}}, Ollama {"error":"text"}.
type apiErrorInfo struct {
	typ, code, message string
}

func parseErrorBody(body []byte) apiErrorInfo {
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || len(env.Error) == 0 {
		return apiErrorInfo{message: string(body)}
	}
	var s string
	if json.Unmarshal(env.Error, &s) == nil {
		return apiErrorInfo{message: s}
	}
	var obj struct {
		Type    string `json:"type"`
		Code    any    `json:"code"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(env.Error, &obj)
	info := apiErrorInfo{typ: obj.Type, message: obj.Message}
	if code, ok := obj.Code.(string); ok {
		info.code = code
	}
	return info
}

// identifier keeps s only if it looks like an error code (letters, digits,
// '_', '-', '.'), so provider text never reaches our errors.
func identifier(s string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return ""
		}
	}
	return s
}

// modelMissing recognises the "model not found" answers of OpenAI, Ollama,
// vLLM, llama.cpp, OpenRouter and Anthropic when they do not use 404.
func modelMissing(info apiErrorInfo) bool {
	if info.code == "model_not_found" || info.typ == "model_not_found" {
		return true
	}
	m := strings.ToLower(info.message)
	return strings.Contains(m, "model") &&
		(strings.Contains(m, "not found") || strings.Contains(m, "does not exist") || strings.Contains(m, "not available") || strings.Contains(m, "invalid model"))
}

// statusFailure classifies an HTTP error status.
func statusFailure(status int, h http.Header, body []byte, now time.Time) *failure {
	info := parseErrorBody(body)
	msg := strings.ToLower(http.StatusText(status))
	if msg == "" {
		msg = "status " + strconv.Itoa(status)
	}
	for _, id := range []string{identifier(info.code), identifier(info.typ)} {
		if id != "" {
			msg += " (" + id + ")"
			break
		}
	}
	f := &failure{status: status, err: errors.New(msg)}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		f.kind = ErrAuth
	case status == http.StatusNotFound:
		f.kind = ErrModel
	case status == http.StatusRequestTimeout:
		f.kind, f.retryable = ErrTimeout, true
	case status == http.StatusTooManyRequests:
		f.kind, f.retryable = ErrRateLimit, info.code != "insufficient_quota"
		f.retryAfter = parseRetryAfter(h, now)
	case status >= 500:
		f.kind, f.retryable = ErrServer, true
		f.retryAfter = parseRetryAfter(h, now)
	case status >= 400 && modelMissing(info):
		f.kind = ErrModel
	case status >= 400:
		f.kind = ErrBadRequest
	default:
		f.kind = ErrBadResponse
	}
	return f
}

// schemaObject decodes a tool's JSON Schema; empty means "no arguments".
func schemaObject(raw json.RawMessage) (map[string]any, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return map[string]any{"type": "object", "properties": map[string]any{}}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("parameters are not a JSON object")
	}
	return m, nil
}
