package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/talonhq/talon/sandbox/guest"
)

const (
	// maxTextChars bounds a body returned as text.
	maxTextChars = 20000
	// maxJSONBytes bounds a body returned as parsed JSON; larger ones are
	// returned as truncated text.
	maxJSONBytes = 256 << 10
)

type args struct {
	Method     string            `json:"method"`
	URL        string            `json:"url"`
	Headers    map[string]string `json:"headers"`
	JSON       json.RawMessage   `json:"json"`
	Credential string            `json:"credential"`
}

type result struct {
	Status    int               `json:"status"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      any               `json:"body"`
	Truncated bool              `json:"truncated,omitempty"`
}

var methods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true,
}

func init() { guest.Run(do) }

func main() {}

// do performs the request through the host.
func do(a args) (result, error) {
	req, err := build(a)
	if err != nil {
		return result{}, err
	}
	resp, err := guest.HTTP(req)
	if err != nil {
		return result{}, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	return shape(resp), nil
}

// build validates the arguments and turns them into a host request.
func build(a args) (guest.Request, error) {
	method := strings.ToUpper(strings.TrimSpace(a.Method))
	if method == "" {
		method = "GET"
	}
	if !methods[method] {
		return guest.Request{}, fmt.Errorf("method %q is not supported: use GET, HEAD, POST, PUT, PATCH or DELETE", a.Method)
	}
	u, err := url.Parse(a.URL)
	if err != nil {
		return guest.Request{}, fmt.Errorf("invalid url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return guest.Request{}, errors.New("url must be an absolute http or https URL")
	}
	req := guest.Request{
		Method:     method,
		URL:        a.URL,
		Headers:    map[string]string{},
		Credential: a.Credential,
	}
	for k, v := range a.Headers {
		req.Headers[k] = v
	}
	if !hasHeader(req.Headers, "Accept") {
		req.Headers["Accept"] = "application/json"
	}
	if body := bytes.TrimSpace(a.JSON); len(body) > 0 && !bytes.Equal(body, []byte("null")) {
		if method == "GET" || method == "HEAD" {
			return guest.Request{}, fmt.Errorf("a %s request cannot have a json body", method)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, body); err != nil {
			return guest.Request{}, fmt.Errorf("invalid json body: %w", err)
		}
		req.Body = compact.String()
		if !hasHeader(req.Headers, "Content-Type") {
			req.Headers["Content-Type"] = "application/json"
		}
	}
	return req, nil
}

// shape turns the response into the result: a JSON body is returned parsed,
// anything else as (truncated) text; only the content type header is kept.
func shape(resp guest.Response) result {
	r := result{Status: resp.Status, Truncated: resp.Truncated}
	ct := header(resp.Headers, "Content-Type")
	if ct != "" {
		r.Headers = map[string]string{"content-type": ct}
	}
	if !resp.Truncated && len(resp.Body) <= maxJSONBytes && isJSON(ct) && json.Valid([]byte(resp.Body)) {
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(resp.Body)); err == nil {
			r.Body = json.RawMessage(compact.Bytes())
			return r
		}
	}
	text, cut := guest.Truncate(resp.Body, maxTextChars)
	r.Body = text
	r.Truncated = r.Truncated || cut
	return r
}

// isJSON reports whether a content type is JSON (application/json or a
// +json type).
func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(ct), ";")
	mt = strings.TrimSpace(mt)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func hasHeader(h map[string]string, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func header(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}
