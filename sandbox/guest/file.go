package guest

import (
	"encoding/json"
	"fmt"
)

// attached is the file the running call returns, set by Attach.
var attached *fileOut

// fileOut is the "file" of the output: {"name", "type", "data"}, data
// base64 (encoding/json encodes a []byte so).
type fileOut struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
	Data []byte `json:"data"`
}

// Attach makes the running call return a file for the user along with
// its result: Talon attaches it to the turn's reply (after its leak
// checks), and the model gets a note naming it, never its bytes. name is
// a plain file name ("report.csv": letters, digits, '.', '_', '-' and
// spaces, at most 100 bytes, not starting with '.'), mediaType an
// optional media type ("text/csv"). The operator's manifest bounds its
// size (limits.max_file_bytes, 8 MiB by default; 0 allows none). A later
// Attach in the same call replaces the file; a call that returns an error
// returns no file. See sandbox/ABI.md.
func Attach(name, mediaType string, data []byte) {
	attached = &fileOut{Name: name, Type: mediaType, Data: data}
}

// withFile adds the attached file to an {"ok": …} output.
func withFile(ok []byte) []byte {
	f := attached
	attached = nil
	if f == nil {
		return ok
	}
	b, err := json.Marshal(f)
	if err != nil {
		return errorOutput(fmt.Sprintf("encode file: %v", err))
	}
	out := make([]byte, 0, len(ok)+len(`,"file":`)+len(b))
	out = append(out, ok[:len(ok)-1]...)
	out = append(out, `,"file":`...)
	out = append(out, b...)
	return append(out, '}')
}
