package llm

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// errEventTooLarge is returned by sseReader for a line or an event's data
// longer than its bound.
var errEventTooLarge = errors.New("an event of the stream exceeds the size limit")

// sseEvent is one server-sent event. Its data is valid until the next call
// to sseReader.next.
type sseEvent struct {
	typ  string // the event field, "" when absent
	data []byte // the data fields joined by '\n'
}

// sseReader reads server-sent events (text/event-stream, as the WHATWG
// HTML standard defines them) from an untrusted body, holding at most max
// bytes of a line or of an event's data.
//
// Lines end with LF, CRLF or a lone CR; a leading byte-order mark is
// skipped; lines starting with ':' are comments; data fields are joined by
// '\n'; the id and retry fields and unknown fields are ignored; an event
// with no data field is not dispatched. A body that ends cleanly ends its
// last line and its last event, so a server that omits the final blank
// line loses nothing.
type sseReader struct {
	r   *bufio.Reader
	max int

	line    []byte // the current line, reused
	data    []byte // the current event's data, reused
	afterCR bool   // the last line ended with CR: a LF that follows belongs to it
	started bool   // the byte-order mark has been looked for
	eof     bool   // the body ended; next returns io.EOF
}

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next event, io.EOF once the body has ended cleanly,
// errEventTooLarge past the bound, or the body's read error.
func (s *sseReader) next() (sseEvent, error) {
	if !s.started {
		s.started = true
		if b, _ := s.r.Peek(3); bytes.Equal(b, []byte("\xef\xbb\xbf")) {
			_, _ = s.r.Discard(3)
		}
	}
	var typ string
	s.data = s.data[:0]
	for !s.eof {
		line, err := s.readLine()
		if err != nil {
			if err != io.EOF {
				return sseEvent{}, err
			}
			s.eof = true
			if len(line) == 0 {
				break
			}
		}
		if len(line) == 0 { // a blank line dispatches the event
			if len(s.data) == 0 {
				typ = ""
				continue
			}
			return sseEvent{typ: typ, data: s.data[:len(s.data)-1]}, nil
		}
		if line[0] == ':' {
			continue // a comment, such as ": keep-alive"
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value, _ = bytes.CutPrefix(value, []byte(" "))
		switch string(name) {
		case "data":
			if len(s.data)+len(value)+1 > s.max {
				return sseEvent{}, errEventTooLarge
			}
			s.data = append(s.data, value...)
			s.data = append(s.data, '\n')
		case "event":
			typ = string(value)
		}
	}
	if len(s.data) > 0 {
		return sseEvent{typ: typ, data: s.data[:len(s.data)-1]}, nil
	}
	return sseEvent{}, io.EOF
}

// readLine returns the next line without its end. At the end of the body it
// returns the unterminated last line, possibly empty, with io.EOF.
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	if s.afterCR {
		s.afterCR = false
		b, err := s.r.Peek(1)
		if err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			_, _ = s.r.Discard(1)
		}
	}
	for {
		if s.r.Buffered() == 0 {
			if _, err := s.r.Peek(1); err != nil {
				return s.line, err
			}
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		if i := bytes.IndexAny(buf, "\r\n"); i >= 0 {
			if len(s.line)+i > s.max {
				return nil, errEventTooLarge
			}
			s.line = append(s.line, buf[:i]...)
			s.afterCR = buf[i] == '\r'
			_, _ = s.r.Discard(i + 1)
			return s.line, nil
		}
		if len(s.line)+len(buf) > s.max {
			return nil, errEventTooLarge
		}
		s.line = append(s.line, buf...)
		_, _ = s.r.Discard(len(buf))
	}
}
