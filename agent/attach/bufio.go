package attach

import (
	stdbufio "bufio"
	"io"
)

// bufio wraps r in a buffered reader that can be peeked at, reusing r if
// it is one.
func bufio(r io.Reader) *stdbufio.Reader {
	if b, ok := r.(*stdbufio.Reader); ok {
		return b
	}
	return stdbufio.NewReaderSize(r, 64<<10)
}
