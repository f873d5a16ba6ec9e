package sandbox

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/talonhq/talon/agent"
)

// decodeOutput reads {"ok": …}, {"ok": …, "file": {…}} or {"error": "…"}
// within lim: the "ok" value at most MaxOutputBytes, the file's bytes at
// most MaxFileBytes, its name a plain file name.
func decodeOutput(name string, out []byte, lim Limits) (agent.ToolResult, error) {
	tooLarge := &CallError{Tool: name, Kind: ErrOutputTooLarge,
		Reason: fmt.Sprintf("the tool's output is larger than its limit of %d bytes", lim.MaxOutputBytes)}
	bad := &CallError{Tool: name, Kind: ErrBadOutput, Reason: `the tool's output is not {"ok": …}, {"ok": …, "file": …} or {"error": "…"}`}
	if len(out) > lim.MaxOutputBytes {
		// Only a file may take it past max_output_bytes.
		bad = tooLarge
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(out, &fields); err != nil || len(fields) == 0 || len(fields) > 2 {
		return agent.ToolResult{}, bad
	}
	if v, ok := fields["ok"]; ok {
		if len(v) > lim.MaxOutputBytes {
			return agent.ToolResult{}, tooLarge
		}
		res := agent.ToolResult{Content: string(v)}
		raw, hasFile := fields["file"]
		if len(fields) == 2 && !hasFile {
			return agent.ToolResult{}, bad
		}
		if hasFile {
			f, err := decodeFile(name, raw, lim.MaxFileBytes)
			if err != nil {
				return agent.ToolResult{}, err
			}
			res.File = f
		}
		return res, nil
	}
	var msg string
	if err := json.Unmarshal(fields["error"], &msg); err != nil || len(fields) != 1 {
		return agent.ToolResult{}, bad
	}
	if len(fields["error"]) > lim.MaxOutputBytes {
		return agent.ToolResult{}, tooLarge
	}
	return agent.ToolResult{Content: msg, IsError: true}, nil
}

// fileAllowance is how much longer than max_output_bytes an output may be
// to carry a file of max bytes: its base64 and room for its name and type.
func fileAllowance(max int) uint64 {
	if max <= 0 {
		return 0
	}
	return uint64(base64.StdEncoding.EncodedLen(max)) + 1024
}

// maxFileName bounds a returned file's name, in bytes.
const maxFileName = 100

// fileName is what a returned file's name may be: a plain name of letters,
// digits, ".", "_", "-" and spaces, not starting with "." or a space.
var fileName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._ -]*$`)

// mediaType is what a returned file's type may be.
var mediaType = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$`)

// decodeFile reads {"name": "report.csv", "type": "text/csv", "data":
// "<base64>"}: a file the tool returns for the user.
func decodeFile(tool string, raw json.RawMessage, max int) (*agent.OutFile, error) {
	fail := func(reason string) error { return &CallError{Tool: tool, Kind: ErrBadOutput, Reason: reason} }
	if max <= 0 {
		return nil, fail("the tool returned a file, and its manifest allows none (limits.max_file_bytes is 0)")
	}
	var f struct {
		Name string `json:"name"`
		Type string `json:"type"`
		Data []byte `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fail(`the tool's file is not {"name": …, "type": …, "data": "<base64>"}`)
	}
	if len(f.Data) > max {
		return nil, &CallError{Tool: tool, Kind: ErrOutputTooLarge,
			Reason: fmt.Sprintf("the tool's file is larger than its limit of %d bytes", max)}
	}
	if len(f.Name) > maxFileName || !fileName.MatchString(f.Name) {
		return nil, fail(fmt.Sprintf("the tool's file name is not a plain name of at most %d letters, digits, '.', '_', '-' and spaces", maxFileName))
	}
	if len(f.Data) == 0 {
		return nil, fail("the tool's file is empty")
	}
	if f.Type != "" && !mediaType.MatchString(f.Type) {
		f.Type = ""
	}
	return &agent.OutFile{Name: f.Name, MediaType: f.Type, Data: f.Data}, nil
}
