package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// OutFile is a file for the user: one a tool returned, attached to the
// reply of its turn.
type OutFile struct {
	// Name is the file's name as the user sees it (the sandbox checks it:
	// a base name of safe characters).
	Name string
	// MediaType is its type ("text/csv"), "" for unknown.
	MediaType string
	// Data is its content, loaded for delivery only.
	Data []byte
}

// TurnFile is a tool's file as the store keeps it for its turn: the bytes
// are in the FileStore under Hash.
type TurnFile struct {
	CallID    string
	Name      string
	MediaType string
	Hash      string
	Size      int64
}

// TurnFileStore is a Store that keeps the files a turn's tools returned,
// so that the turn's reply carries them after a restart too.
type TurnFileStore interface {
	// RecordTurnFile records f for turn t; recording the file of the same
	// call again replaces it.
	RecordTurnFile(ctx context.Context, t TurnID, f TurnFile) error
	// TurnFiles lists turn t's files in the order their calls started.
	TurnFiles(ctx context.Context, t TurnID) ([]TurnFile, error)
}

// MaxTurnFiles bounds the files one turn sends the user.
const MaxTurnFiles = 10

// keepFile deals with the file a tool returned (res.File): it passes the
// leak checks (a text file is redacted like any tool output; a binary one
// with a finding is withheld, since it cannot be redacted safely), is
// stored by content hash, recorded for the turn and replaced in the result
// by a note for the model naming it. It returns res without File.
func (r *Runtime) keepFile(ctx context.Context, q QueuedInbound, tid TurnID, callID string, res ToolResult) ToolResult {
	f := res.File
	res.File = nil
	note := func(s string) ToolResult {
		res.Content += "\n[" + s + "]"
		return res
	}
	name := oneLine(f.Name, 100)
	ts, ok := r.Store.(TurnFileStore)
	if !ok || r.Files == nil {
		return note(fmt.Sprintf("The tool returned the file %s, but files cannot be sent here: tell the user it was not sent.", name))
	}
	have, err := ts.TurnFiles(ctx, tid)
	if err != nil {
		r.Log.Error().Err(err).Int64("turn", int64(tid)).Msg("list the turn's files")
		return note(fmt.Sprintf("The tool returned the file %s, but it could not be kept: tell the user it was not sent.", name))
	}
	n := 0
	for _, h := range have {
		if h.CallID != callID {
			n++
		}
	}
	if n >= MaxTurnFiles {
		return note(fmt.Sprintf("The tool returned the file %s, but a reply carries at most %d files: tell the user it was not sent.", name, MaxTurnFiles))
	}
	data := f.Data
	if r.Redactor != nil {
		text := string(data)
		out, found := r.Redactor.Redact(ctx, q.Key.Principal, text)
		if found > 0 {
			r.Metrics.Redacted("tool_file", found)
			r.Log.Warn().Str("principal", q.Key.Principal.String()).Str("where", "tool_file").Int("findings", found).Msg("secrets redacted")
			if !utf8.Valid(data) {
				return note(fmt.Sprintf("The tool returned the file %s, but it was withheld: it holds what looks like a secret. Tell the user it was not sent.", name))
			}
			data = []byte(out)
		}
	}
	hash, size, err := r.Files.PutFile(ctx, bytes.NewReader(data))
	if err == nil {
		err = ts.RecordTurnFile(ctx, tid, TurnFile{CallID: callID, Name: f.Name, MediaType: f.MediaType, Hash: hash, Size: size})
	}
	if err != nil {
		r.Log.Error().Err(err).Int64("turn", int64(tid)).Msg("keep a tool's file")
		return note(fmt.Sprintf("The tool returned the file %s, but it could not be kept: tell the user it was not sent.", name))
	}
	what := byteSize(size)
	if f.MediaType != "" {
		what += ", " + oneLine(f.MediaType, 100)
	}
	return note(fmt.Sprintf("The tool returned the file %s (%s); it will be attached to your reply for the user. You cannot read it: do not repeat its content.", name, what))
}

// replyFiles loads the files of rep's turn for its delivery. A file that
// can no longer be read is left out, and logged.
func (r *Runtime) replyFiles(ctx context.Context, rep Reply) []OutFile {
	ts, ok := r.Store.(TurnFileStore)
	if !ok || r.Files == nil || rep.Turn == 0 {
		return nil
	}
	files, err := ts.TurnFiles(ctx, rep.Turn)
	if err != nil && ctx.Err() != nil {
		return nil // stopping: the delivery ends with its context too
	}
	if err != nil {
		r.Log.Error().Err(err).Int64("reply", int64(rep.ID)).Msg("list the files of the reply's turn; the reply is sent without them")
		return nil
	}
	var out []OutFile
	for _, f := range files {
		sf, err := r.Files.OpenFile(ctx, f.Hash)
		if err != nil {
			r.Log.Error().Err(err).Int64("reply", int64(rep.ID)).Msg("a file of the reply cannot be read; it is not sent")
			continue
		}
		data := make([]byte, sf.Size())
		n, err := sf.ReadAt(data, 0)
		_ = sf.Close()
		if err != nil && !(errors.Is(err, io.EOF) && n == len(data)) {
			r.Log.Error().Err(err).Int64("reply", int64(rep.ID)).Msg("a file of the reply cannot be read; it is not sent")
			continue
		}
		out = append(out, OutFile{Name: f.Name, MediaType: f.MediaType, Data: data})
	}
	return out
}
