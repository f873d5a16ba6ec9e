package guest

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNotInSandbox is returned by HTTP when the code is not running inside
// the Talon sandbox (any GOOS other than wasip1).
var ErrNotInSandbox = errors.New("guest: only runs inside the Talon sandbox")

// Request is an HTTP request the tool asks the host to make.
type Request struct {
	// Method defaults to GET when empty.
	Method string `json:"method"`
	// URL is absolute, http or https. The operator's manifest decides which
	// hosts, schemes, methods and paths are allowed.
	URL string `json:"url"`
	// Headers to send. Host, Authorization, Cookie, Proxy-*, hop-by-hop and
	// forwarding headers are refused by the host.
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the request body.
	Body string `json:"body,omitempty"`
	// Credential names a vault entry of the calling user that the host
	// injects if the manifest grants it; the tool never sees the value.
	Credential string `json:"credential,omitempty"`
}

// Response is the host's answer to a Request that was performed.
type Response struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body"`
	// Truncated is set when the host cut the body at the size limit.
	Truncated bool `json:"truncated,omitempty"`
	// URL is the final URL after redirects.
	URL string `json:"url"`
}

// HTTPError is returned by HTTP when the host refused or failed a request.
type HTTPError struct {
	// Kind is one of denied, limit, network, approval or invalid (see
	// ABI.md).
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("http %s: %s", e.Kind, e.Message)
}

// Kinds of HTTPError.
const (
	KindDenied   = "denied"
	KindLimit    = "limit"
	KindNetwork  = "network"
	KindApproval = "approval"
	KindInvalid  = "invalid"
)

// HTTP asks the host to perform req and returns its response. A refusal or
// failure reported by the host is a *HTTPError; a status of 4xx or 5xx is
// not an error.
func HTTP(req Request) (Response, error) {
	if req.Method == "" {
		req.Method = "GET"
	}
	in, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("guest: encode http request: %w", err)
	}
	out, err := hostHTTP(in)
	if err != nil {
		return Response{}, err
	}
	return decodeHTTPResult(out)
}

// httpResult is the result JSON of talon.http_request.
type httpResult struct {
	Response
	Error *HTTPError `json:"error"`
}

// decodeHTTPResult turns the host's result JSON into a Response or error.
func decodeHTTPResult(b []byte) (Response, error) {
	var r httpResult
	if err := json.Unmarshal(b, &r); err != nil {
		return Response{}, fmt.Errorf("guest: decode http result: %w", err)
	}
	if r.Error != nil {
		return Response{}, r.Error
	}
	return r.Response, nil
}

// Log levels of the host's log function.
const (
	LevelDebug = 0
	LevelInfo  = 1
	LevelWarn  = 2
	LevelError = 3
)

// Log sends msg to the host's log at level (LevelDebug to LevelError). The
// host caps messages at 1 KiB and 64 per call and drops the rest. Never log
// secrets or user content.
func Log(level int, msg string) {
	if level < LevelDebug {
		level = LevelDebug
	}
	if level > LevelError {
		level = LevelError
	}
	if len(msg) > maxLogBytes {
		msg = msg[:maxLogBytes]
	}
	hostLog(int32(level), msg)
}

// maxLogBytes is the host's cap on one message; longer ones are cut here so
// the host does not have to read them.
const maxLogBytes = 1024

// Debug logs msg at LevelDebug.
func Debug(msg string) { Log(LevelDebug, msg) }

// Info logs msg at LevelInfo.
func Info(msg string) { Log(LevelInfo, msg) }

// Warn logs msg at LevelWarn.
func Warn(msg string) { Log(LevelWarn, msg) }

// Error logs msg at LevelError.
func Error(msg string) { Log(LevelError, msg) }

// HasSecret reports whether the calling user has a vault entry named name
// that this tool is granted. It never reveals the value.
func HasSecret(name string) bool {
	if name == "" {
		return false
	}
	return hostHasSecret(name)
}
